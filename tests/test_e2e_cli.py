"""The command line of `pipe build` as the contract's build promises need it: -C and -f, targets,
aliases and defaults, -n, -B, --force, -q, -v, exit statuses, and plain output off a terminal."""

from __future__ import annotations

import os
import pty
import subprocess

import pytest
from conftest import ANSI, CHAIN, PIPE, Project
from hypothesis import given, settings
from hypothesis import strategies as st

# `chain` (two leaves and a consumer of both) and `built` come from conftest.py.


# -- -C and -f --------------------------------------------------------------------------------------------


def test_given_C_dir_when_built_from_elsewhere_then_the_project_in_dir_is_built(chain):
    r = chain.run("-C", str(chain.root), "build", cwd=chain.scratch)
    assert sorted(r.ran) == ["out/a.txt", "out/ab.txt", "out/b.txt"]
    assert chain.read("out/ab.txt") == "HELLO\nWORLD\n"
    assert not (chain.scratch / "out").exists()


def test_given_a_relative_C_dir_when_built_then_it_is_relative_to_the_current_directory(chain):
    r = chain.run("-C", "proj", "build", cwd=chain.root.parent)
    assert len(r.ran) == 3


def test_given_f_file_in_a_subdirectory_then_paths_are_relative_to_that_pipefiles_directory(project):
    project.pipefile('rule("out/x.txt", ["src/x.txt"], upper)\n', name="sub/Build.py")
    project.write("sub/src/x.txt", "x")
    r = project.run("-f", "sub/Build.py", "build")
    assert r.rc == 0
    assert project.read("sub/out/x.txt") == "X"
    assert project.take_log(project.root / "sub") == ["out/x.txt"]
    assert not project.exists("out")
    r = project.run("-f", "sub/Build.py", "build")
    assert project.take_log(project.root / "sub") == []


def test_given_C_and_f_when_built_then_f_is_resolved_after_C(project):
    project.pipefile('rule("out/x.txt", ["src/x.txt"], upper)\n', name="sub/other.py")
    project.write("sub/src/x.txt", "x")
    # Run from the project root: "other.py" exists only inside sub/.
    project.run("-C", "sub", "-f", "other.py", "build")
    assert project.read("sub/out/x.txt") == "X"


def test_given_C_a_missing_directory_then_exit_2(project):
    r = project.run("-C", "no/such/dir", "build", rc=2)
    assert "no/such/dir" in r.err


def test_given_f_a_missing_file_then_exit_2(chain):
    r = chain.run("-f", "Nope.py", "build", rc=2)
    assert "Nope.py" in r.err


# -- targets, aliases, defaults ------------------------------------------------------------------------


def test_given_a_target_when_built_then_only_it_and_what_it_needs_run(chain):
    assert chain.build("out/a.txt").ran == ["out/a.txt"]
    assert not chain.exists("out/b.txt")


def test_given_a_final_target_when_built_then_its_dependencies_run_first(chain):
    r = chain.build("out/ab.txt")
    assert sorted(r.ran) == ["out/a.txt", "out/ab.txt", "out/b.txt"]
    assert r.ran[-1] == "out/ab.txt"


def test_given_a_target_spelt_as_a_path_when_built_then_it_is_found(chain):
    assert chain.build("./out/a.txt").ran == ["out/a.txt"]
    assert chain.build(str(chain.root / "out" / "b.txt")).ran == ["out/b.txt"]


def test_given_a_decorated_rule_when_built_by_its_function_name_then_it_runs(project):
    project.pipefile(
        """
        @rule("out/w.txt", ["src/a.txt"], params={"width": 3})
        def wrap(output, inputs, params):
            log(output)
            output.write_text(inputs[0].read_text()[: params["width"]])

        rule("out/other.txt", ["src/a.txt"], cat)
        """
    )
    project.write("src/a.txt", "abcdef")
    assert project.build("wrap").ran == ["out/w.txt"]
    assert project.read("out/w.txt") == "abc"


def test_given_an_alias_and_a_default_when_built_without_target_then_the_default_is_built(project):
    project.pipefile(
        """
        rule("out/a.txt", ["src/a.txt"], cat)
        rule("out/b.txt", ["src/a.txt"], cat)
        rule("out/c.txt", ["src/a.txt"], cat)
        alias("some", ["out/a.txt", "out/b.txt"])
        default("some")
        """
    )
    project.write("src/a.txt", "a")
    assert sorted(project.build().ran) == ["out/a.txt", "out/b.txt"]
    assert project.build("out/c.txt").ran == ["out/c.txt"]


def test_given_no_default_when_built_without_target_then_every_rule_is_built(chain):
    assert len(chain.build().ran) == 3


def test_given_no_command_when_pipe_runs_then_it_builds(chain):
    r = chain.run()
    assert len(r.ran) == 3


# -- -n ----------------------------------------------------------------------------------------------------


def test_given_a_fresh_project_when_dry_run_then_it_says_what_would_run_and_runs_nothing(chain):
    r = chain.build("-n")
    assert r.ran == []
    assert not chain.exists("out")
    for name in ["out/a.txt", "out/b.txt", "out/ab.txt"]:
        assert f"would run {name}" in r.out
    assert "never built" in r.out
    assert len(chain.build().ran) == 3  # the dry run recorded nothing


def test_given_an_edited_source_when_dry_run_then_it_says_why_and_changes_nothing(built):
    built.write("src/a.txt", "bonjour\n")
    before_bytes, before_stats = built.snapshot(), built.stats()
    r = built.build("-n")
    assert r.ran == []
    assert "would run out/a.txt" in r.out and "src/a.txt" in r.out
    assert "would run out/b.txt" not in r.out
    assert built.snapshot() == before_bytes and built.stats() == before_stats
    assert built.build().ran == ["out/a.txt", "out/ab.txt"]


@pytest.mark.parametrize(
    "change,reason",
    [
        (lambda p: p.remove("out/a.txt"), "missing"),
        (lambda p: p.write("out/a.txt", "by hand"), "modified"),
        (
            lambda p: p.write(
                "Pipefile.py", p.read("Pipefile.py").replace('["src/a.txt"], upper', '["src/a.txt"], cat')
            ),
            "action",
        ),
    ],
    ids=["output-missing", "output-edited", "action-changed"],
)
def test_given_a_stale_rule_when_dry_run_then_the_reason_is_given(built, change, reason):
    change(built)
    r = built.build("-n")
    line = next(x for x in r.out.splitlines() if x.startswith("would run out/a.txt"))
    assert reason in line
    assert r.ran == []


def test_given_nothing_stale_when_dry_run_then_it_says_nothing_to_do(built):
    r = built.build("-n")
    assert "would run" not in r.out
    assert "nothing to do" in r.out.lower()


def test_given_a_dry_run_when_followed_by_a_build_then_the_build_runs_the_same_rules(built):
    built.write("src/b.txt", "there\n")
    built.build("-n")
    built.build("-n")
    assert built.build().ran == ["out/b.txt", "out/ab.txt"]


# -- -B and --force ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["-B", "--always-make"])
def test_given_an_up_to_date_project_when_built_with_B_then_every_rule_runs(built, flag):
    r = built.build(flag)
    assert sorted(r.ran) == ["out/a.txt", "out/ab.txt", "out/b.txt"]
    assert built.build().ran == []


def test_given_B_and_a_target_when_built_then_only_what_the_target_needs_runs(built):
    assert built.build("-B", "out/a.txt").ran == ["out/a.txt"]


def test_given_force_of_one_target_when_built_then_only_it_runs_and_consumers_are_cut_off(built):
    r = built.build("--force", "out/a.txt")
    assert r.ran == ["out/a.txt"]  # same bytes again: out/ab.txt need not run


def test_given_force_of_a_rule_with_a_changing_output_then_its_consumers_run(project):
    project.pipefile(
        """
        def counter(output, inputs):
            log(output)
            count = Path("count")  # not tracked: each run writes a new number
            n = int(count.read_text()) + 1 if count.exists() else 1
            count.write_text(str(n))
            output.write_text(str(n))

        rule("out/n.txt", [], counter)
        rule("out/m.txt", ["out/n.txt"], cat)
        """
    )
    project.build()
    r = project.build("--force", "out/n.txt")
    assert r.ran == ["out/n.txt", "out/m.txt"]
    assert project.read("out/m.txt") == "2"


def test_given_force_of_an_alias_and_twice_when_built_then_all_those_rules_run(project):
    project.pipefile(
        """
        rule("out/a.txt", ["src/a.txt"], cat)
        rule("out/b.txt", ["src/a.txt"], cat)
        rule("out/c.txt", ["src/a.txt"], cat)
        alias("ab", ["out/a.txt", "out/b.txt"])
        """
    )
    project.write("src/a.txt", "a")
    project.build()
    assert sorted(project.build("--force", "ab").ran) == ["out/a.txt", "out/b.txt"]
    r = project.build("--force", "out/a.txt", "--force", "out/c.txt")
    assert sorted(r.ran) == ["out/a.txt", "out/c.txt"]


def test_given_force_of_an_unknown_target_then_exit_2(built):
    r = built.build("--force", "out/nope.txt", rc=2)
    assert "out/nope.txt" in r.err
    assert r.ran == []


# -- -q and -v ----------------------------------------------------------------------------------------------


def test_given_q_when_a_build_succeeds_then_nothing_is_printed(chain):
    r = chain.build("-q")
    assert len(r.ran) == 3
    assert r.out == "" and r.err == ""
    r = chain.build("-q")
    assert r.out == "" and r.err == ""


def test_given_q_when_a_rule_fails_then_the_failure_is_still_shown(project):
    project.pipefile(
        """
        def bad(output, inputs):
            raise RuntimeError("quiet but not silent")

        rule("out/bad.txt", [], bad)
        """
    )
    r = project.build("-q", rc=1)
    assert "quiet but not silent" in r.err
    assert "out/bad.txt" in r.err


def test_given_v_when_built_then_each_rule_says_why_it_runs_and_shows_its_output(project):
    project.pipefile(
        """
        def chatty(output, inputs):
            log(output)
            print("chatty action says hi")
            output.write_text(inputs[0].read_text())

        rule("out/c.txt", ["src/a.txt"], chatty)
        """
    )
    project.write("src/a.txt", "a")
    r = project.build("-v")
    assert "out/c.txt" in r.out and "never built" in r.out
    assert "chatty action says hi" in r.out
    project.write("src/a.txt", "b")
    r = project.build("-v")
    assert "src/a.txt" in r.out and "changed" in r.out


def test_given_no_v_when_an_action_prints_then_its_output_is_not_shown(project):
    project.pipefile(
        """
        def chatty(output, inputs):
            print("chatty action says hi")
            output.write_text("x")

        rule("out/c.txt", [], chatty)
        """
    )
    r = project.build()
    assert "chatty action says hi" not in r.text


# -- exit statuses and jobs --------------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", ["0", "-1", "many"])
def test_given_an_invalid_job_count_then_exit_2(chain, jobs):
    r = chain.build(f"-j{jobs}" if jobs != "many" else "-jmany", rc=2)
    assert r.ran == []


def test_given_an_unknown_option_then_exit_2(chain):
    chain.build("--no-such-option", rc=2)


@pytest.mark.parametrize("jobs", ["1", "2", "8"])
def test_given_any_job_count_when_built_then_the_outputs_are_the_same(project, jobs):
    body = "\n".join(
        f'rule("out/{i}.txt", ["src/{i % 3}.txt"], upper)\n'
        f'rule("out/{i}.c.txt", ["out/{i}.txt", "out/{(i + 1) % 8}.txt"], cat)'
        for i in range(8)
    )
    project.pipefile(body)
    for i in range(3):
        project.write(f"src/{i}.txt", f"s{i}\n")
    r = project.build("-j", jobs)
    assert len(r.ran) == 16
    for i in range(8):
        assert project.read(f"out/{i}.c.txt") == f"S{i % 3}\nS{(i + 1) % 8 % 3}\n"
    for i in range(8):  # every consumer ran after its producers
        assert r.ran.index(f"out/{i}.c.txt") > r.ran.index(f"out/{i}.txt")
        assert r.ran.index(f"out/{i}.c.txt") > r.ran.index(f"out/{(i + 1) % 8}.txt")


# -- plain output ------------------------------------------------------------------------------------------


FAILS_TOO = (
    CHAIN
    + """
def bad(output, inputs):
    raise RuntimeError("red?")

rule("out/bad.txt", [], bad)
"""
)


def test_given_output_not_on_a_terminal_when_built_then_it_is_plain_lines_without_escapes(project):
    project.pipefile(FAILS_TOO)
    project.write("src/a.txt", "a")
    project.write("src/b.txt", "b")
    env = project.env(NO_COLOR=None, CI=None, TERM="xterm-256color", FORCE_COLOR=None)
    r = project.run("build", "-k", rc=1, env=env)
    assert r.out.strip() and r.err.strip()
    assert not ANSI.search(r.out) and not ANSI.search(r.err), repr(r.text)
    assert "\r" not in r.text
    for line in r.out.splitlines():  # progress as lines, not a redrawn bar
        assert line.strip()
    r = project.run("build", "-k", "-v", rc=1, env=env)
    assert not ANSI.search(r.text)


def _run_on_pty(project: Project, env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run pipe with stdout and stderr on a pseudo-terminal; returns (exit status, what it showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*PIPE, *args],
        cwd=project.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(30), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("var", ["NO_COLOR", "CI"])
def test_given_a_terminal_with_no_color_or_ci_when_built_then_the_output_is_plain(project, var):
    project.pipefile(FAILS_TOO)
    project.write("src/a.txt", "a")
    project.write("src/b.txt", "b")
    env = project.env(NO_COLOR=None, CI=None, TERM="xterm-256color")
    env[var] = "1"
    rc, shown = _run_on_pty(project, env, "build", "-k")
    assert rc == 1, shown
    assert "out/bad.txt" in shown and "red?" in shown
    assert not ANSI.search(shown), repr(shown)


# -- the common command line, parsed without argparse ---------------------------------------------------

_USUAL = ["-q", "--quiet", "-v", "-k", "--keep-going", "-n", "-B", "--always-make", "-j", "--jobs",
          "-j3", "--jobs=4", "2", "a", "b.txt"]
_ODD = ["status", "-j=2", "-jx", "0", "-1", "", "-C", "d", "-f", "--force", "--shuffle", "-qv", "--",
        "-", "--verb", "-h", "--version", "\u0661"]
_LINES = st.tuples(
    st.lists(st.sampled_from([("-C", "d"), ("-f", "P.py"), ("-C",)]), max_size=2),
    st.sampled_from([["build"], ["build"], []]),
    st.lists(st.sampled_from(_USUAL * 3 + _ODD), max_size=7),
).map(lambda t: [w for g in t[0] for w in g] + t[1] + t[2])


@settings(max_examples=500, deadline=None)
@given(argv=_LINES)
def test_the_quick_parse_of_a_command_line_agrees_with_argparse(argv):
    """Whatever line the quick parser accepts, argparse accepts too, with the same values."""
    import contextlib
    import io

    from buildpipe import cli

    quick = cli._quick(argv)
    if quick is None:
        return
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            full = cli._parser(cli._command_in(argv)).parse_args(argv)
            if full.command is None:
                full = cli._parser("build").parse_args([*argv, "build"])
        except SystemExit:
            pytest.fail(f"argparse refuses {argv}, the quick parse took it: {vars(quick)}")
    assert vars(quick) == vars(full), argv
