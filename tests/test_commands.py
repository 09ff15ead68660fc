"""Contract §4 beyond `build`: status, list, graph, clean, watch and settings files, through `pipe`."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import PIPE, Project, assert_no_internal_traceback, wait_until

CHAIN = """
a = rule("out/a.txt", ["src/a.txt"], upper)
rule("out/b.txt", [a, "src/b.txt"], cat)
rule("out/side.txt", ["src/b.txt"], cat)
alias("all", ["out/b.txt", "out/side.txt"])
"""


@pytest.fixture
def chain(project: Project) -> Project:
    project.pipefile(CHAIN)
    project.write("src/a.txt", "a\n")
    project.write("src/b.txt", "b\n")
    return project


@pytest.fixture
def built(chain: Project) -> Project:
    assert sorted(chain.build().ran) == ["out/a.txt", "out/b.txt", "out/side.txt"]
    return chain


# -- status ---------------------------------------------------------------------------------------


def test_given_an_up_to_date_project_when_status_then_exit_0_and_nothing_runs(built):
    r = built.run("status")
    assert r.ran == []
    assert "up to date" in r.out
    assert "stale" not in r.out


def test_given_an_edited_source_when_status_then_exit_1_naming_the_stale_rules_and_why(built):
    built.write("src/a.txt", "A changed\n")
    before = built.stats()
    r = built.run("status", rc=1)
    assert r.ran == []
    assert built.stats() == before
    lines = [line for line in r.out.splitlines() if line.startswith("stale ")]
    assert lines[0].startswith(f"stale out/a.txt ({built.where('out/a.txt')}): input src/a.txt changed")
    assert lines[1].startswith("stale out/b.txt") and "input out/a.txt would be rebuilt" in lines[1]
    assert len(lines) == 2
    # status is a question, not a build: asking again gives the same answer.
    assert built.run("status", rc=1).out == r.out


def test_given_a_target_when_status_then_only_what_it_needs_is_considered(built):
    built.write("src/a.txt", "A changed\n")
    assert built.run("status", "out/side.txt").rc == 0
    assert built.run("status", "out/b.txt", rc=1).rc == 1


def test_given_a_never_built_project_when_status_then_every_rule_is_stale(chain):
    r = chain.run("status", rc=1)
    assert r.out.count("never built") == 3
    assert not chain.exists("out/a.txt")


# -- list and graph -------------------------------------------------------------------------------


def test_given_rules_and_aliases_when_listed_then_each_shows_where_it_was_declared(chain):
    r = chain.run("list")
    rows = {line.split()[0]: line.split()[1:] for line in r.out.splitlines() if line.startswith("  out/")}
    assert rows["out/a.txt"] == [chain.where("out/a.txt"), "upper"]
    assert rows["out/b.txt"] == [chain.where('"out/b.txt", [a'), "cat"]
    assert f"all -> out/b.txt out/side.txt  {chain.where('alias(')}" in r.out
    assert "default: every rule" in r.out


def test_given_a_target_when_graphed_then_a_tree_of_what_it_is_built_from(chain):
    r = chain.run("graph", "out/b.txt")
    assert r.out.splitlines() == [
        "out/b.txt",
        "├── out/a.txt",
        "│   └── src/a.txt  (source)",
        "└── src/b.txt  (source)",
    ]


def test_given_the_dot_format_when_graphed_then_graphviz_edges_from_inputs_to_outputs(chain):
    r = chain.run("graph", "--format", "dot")
    assert r.out.startswith("digraph buildpipe {")
    assert '"out/a.txt" -> "out/b.txt";' in r.out
    assert '"src/b.txt" -> "out/side.txt";' in r.out
    assert r.out.rstrip().endswith("}")


# -- clean ----------------------------------------------------------------------------------------


def test_given_a_built_project_when_cleaned_then_outputs_go_sources_stay_and_all_rerun(built):
    r = built.run("clean")
    assert "removed 3 files" in r.out
    assert not built.exists("out/a.txt") and not built.exists("out/b.txt")
    assert built.read("src/a.txt") == "a\n" and built.read("src/b.txt") == "b\n"
    assert sorted(built.build().ran) == ["out/a.txt", "out/b.txt", "out/side.txt"]


def test_given_a_target_when_cleaned_then_only_it_and_what_it_depends_on_go(built):
    built.run("clean", "out/b.txt")
    assert not built.exists("out/a.txt") and not built.exists("out/b.txt")
    assert built.exists("out/side.txt")
    assert sorted(built.build().ran) == ["out/a.txt", "out/b.txt"]


def test_given_an_output_dir_that_links_outside_when_cleaned_then_nothing_outside_is_deleted(project):
    outside = project.scratch / "elsewhere"
    outside.mkdir()
    (outside / "x.txt").write_text("precious\n")
    os.symlink(outside, project.root / "out")
    project.pipefile('rule("out/x.txt", ["src/a.txt"], cat)')
    project.write("src/a.txt", "a\n")
    r = project.run("clean")
    assert (outside / "x.txt").read_text() == "precious\n"
    assert "refused to delete out/x.txt" in r.err


# -- settings -------------------------------------------------------------------------------------


def test_given_pipe_toml_default_when_built_without_target_then_it_replaces_the_pipefiles(chain):
    chain.write("pipe.toml", 'default = ["out/side.txt"]\n')
    assert chain.build().ran == ["out/side.txt"]


def test_given_pyproject_and_pipe_toml_then_pipe_toml_wins(chain):
    chain.write("pyproject.toml", '[tool.buildpipe]\ndefault = ["out/a.txt"]\n')
    assert chain.build().ran == ["out/a.txt"]
    chain.write("pipe.toml", 'default = ["out/side.txt"]\n')
    assert chain.build().ran == ["out/side.txt"]


def test_given_a_state_dir_setting_then_the_state_lives_there(chain):
    chain.write("pipe.toml", 'state-dir = "var/state"\n')
    chain.build()
    assert (chain.root / "var/state/state.db").exists()
    assert not (chain.root / ".buildpipe").exists()
    assert chain.build().ran == []


def test_given_a_pipefile_setting_then_that_file_is_used(project):
    project.write(
        "build/rules.py", 'from buildpipe import rule, sh\nrule("o.txt", [], sh("echo hi > {output}"))\n'
    )
    project.write("pipe.toml", 'pipefile = "build/rules.py"\n')
    project.build()
    assert project.read("build/o.txt") == "hi\n"


def test_given_jobs_on_the_command_line_then_it_wins_over_the_settings(chain):
    chain.write("pipe.toml", "jobs = 1\n")
    assert chain.build("-j", "3").rc == 0


@pytest.mark.parametrize(
    "name, text, phrase",
    [
        ("pipe.toml", "colour = true\n", "unknown setting 'colour'"),
        ("pipe.toml", 'jobs = "many"\n', "setting 'jobs' must be an integer >= 1"),
        ("pipe.toml", "jobs = 0\n", "setting 'jobs' must be an integer >= 1"),
        ("pipe.toml", "default = [1]\n", "setting 'default' must be a list of strings"),
        ("pipe.toml", "jobs = [\n", "invalid TOML"),
        ("pyproject.toml", "[tool.buildpipe]\nstate_dir = 'x'\n", "unknown setting 'state_dir'"),
    ],
)
def test_given_a_bad_setting_then_exit_2_naming_the_file_and_key(chain, name, text, phrase):
    chain.write(name, text)
    r = chain.build(rc=2)
    assert name in r.err and phrase in r.err
    assert_no_internal_traceback(r.err, chain.root)
    assert r.ran == []


# -- watch ----------------------------------------------------------------------------------------


def _watch(project: Project) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PIPE, "watch"],
        cwd=project.root,
        env=project.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _ran(project: Project) -> list[str]:
    p = project.root / "ran.log"
    return p.read_text().splitlines() if p.exists() else []


def test_given_watch_when_a_source_or_the_pipefile_changes_then_only_what_is_affected_rebuilds(chain):
    proc = _watch(chain)
    try:
        wait_until(lambda: len(_ran(chain)) == 3, what="the first build")
        time.sleep(0.5)  # the observer is running
        chain.write("src/b.txt", "b2\n")
        wait_until(lambda: len(_ran(chain)) == 5, what="a rebuild after an edit")
        assert sorted(_ran(chain)[3:]) == ["out/b.txt", "out/side.txt"]
        assert chain.read("out/side.txt") == "b2\n"
        time.sleep(0.5)
        chain.pipefile(CHAIN + '\nrule("out/new.txt", ["src/a.txt"], cat)\n')
        wait_until(lambda: "out/new.txt" in _ran(chain), what="a rebuild after a Pipefile edit")
        time.sleep(0.6)
        assert _ran(chain)[5:] == ["out/new.txt"]  # nothing else reran
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out


def test_given_watch_when_the_pipefile_breaks_then_it_says_so_and_recovers(chain):
    proc = _watch(chain)
    try:
        wait_until(lambda: len(_ran(chain)) == 3, what="the first build")
        time.sleep(0.5)
        chain.write("Pipefile.py", chain.read("Pipefile.py") + "\ndef broken(:\n")
        time.sleep(1.0)
        assert proc.poll() is None, "watch must keep running on an invalid Pipefile"
        chain.pipefile(CHAIN)
        chain.write("src/a.txt", "fixed\n")
        wait_until(lambda: "out/a.txt" in _ran(chain)[3:], what="a rebuild after the fix")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "SyntaxError" in out
    assert_no_internal_traceback(out, chain.root)


def test_given_the_state_kept_in_the_project_directory_then_rules_build_and_clean_but_spare_it(chain):
    chain.write("pipe.toml", 'state-dir = "."\n')
    assert sorted(chain.build().ran) == ["out/a.txt", "out/b.txt", "out/side.txt"]
    assert chain.exists("state.db") and chain.exists("lock")
    assert chain.build().ran == []
    chain.run("clean")
    assert not chain.exists("out/a.txt") and chain.exists("state.db") and chain.exists("src/a.txt")
    chain.write("Pipefile.py", chain.read("Pipefile.py") + '\nrule("state.db", ["src/a.txt"], cat)\n')
    r = chain.run("build", rc=2)
    assert "output state.db is a state file" in r.err
