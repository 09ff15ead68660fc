"""The up-to-date proof (buildpipe.proof): a build that rests on the proof the last one left must
decide exactly what a build deciding every rule would. Each test here builds through the real
`pipe`; the differential walk compares every build with one run on a copy whose proofs were
deleted, so that copy decides everything itself."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import PIPE, Project

from buildpipe import proof
from buildpipe.build import FEW_TOUCHES
from buildpipe.filesystem import STAT_END, pack_stat, stat_path
from buildpipe.store import DB_NAME, Store

PROOF_LINE = "against the last build's proof"


both = pytest.mark.both  # run the test both ways (see `checked`)


def pytest_generate_tests(metafunc):
    modes = ["helper", "inline"] if metafunc.definition.get_closest_marker("both") else ["helper"]
    metafunc.parametrize("checked", modes, indirect=True)


@pytest.fixture(autouse=True)
def checked(request, monkeypatch):
    """The proof checked by a forked helper while the Pipefile runs (as for large projects); for the
    tests marked `both`, also by the build itself once the Pipefile has run (small projects). What
    the build decides from a proof does not depend on who checked it: the rest run once."""
    monkeypatch.setenv("BUILDPIPE_PROOF_INLINE", "0" if request.param == "helper" else "100000")
    return request.param


def proofs(project: Project) -> int:
    """How many stored proofs hold for the state as it is."""
    state = project.path(".buildpipe")
    con = sqlite3.connect(state / "state.db")
    try:
        generation = con.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0]
    finally:
        con.close()
    found = [proof.read(str(state), p.name[len("proof-") :]) for p in state.glob("proof-*")]
    return sum(1 for pf in found if pf is not None and pf.generation == generation)


def drop_proofs(root: Path) -> None:
    for p in (root / ".buildpipe").glob("proof-*"):
        p.unlink()


PIPEFILE = """
def shout(output, inputs, params):
    log(output)
    output.write_text(params["mark"].join(p.read_text().upper() for p in inputs))


for name in ("a", "b", "c"):
    rule(f"out/{name}.txt", [f"src/{name}.txt"], upper)
rule("out/ab.txt", ["out/a.txt", "out/b.txt"], cat)
rule("out/all.txt", ["out/ab.txt", "out/c.txt"], shout, params={"mark": MARK})
alias("all", ["out/all.txt"])
"""


@pytest.fixture
def built(project: Project) -> Project:
    for name in "abc":
        project.write(f"src/{name}.txt", f"{name}\n")
    project.pipefile('MARK = "-"\n' + PIPEFILE)
    first = project.build("all")
    assert len(first.ran) == 5
    return project


@both
def test_given_a_successful_build_then_it_leaves_a_proof_and_a_no_op_rests_on_it(built):
    assert proofs(built) == 1
    r = built.build("all", "-v")
    assert r.ran == [] and "nothing to do: 5 rules up to date" in r.out
    assert "checked 8 files against the last build's proof: 0 changed" in r.out


def test_given_a_proof_when_a_source_is_touched_then_nothing_runs_and_the_proof_stays(built):
    t = time.time_ns() + 10**9
    os.utime(built.path("src/a.txt"), ns=(t, t))
    r = built.build("all", "-v")
    assert r.ran == [] and "checked 8 files against the last build's proof: 0 changed" in r.out
    assert proofs(built) == 1


@both
def test_given_a_proof_when_a_source_changes_then_only_what_depends_on_it_runs(built):
    built.write("src/b.txt", "bee\n")
    r = built.build("all", "-v")
    assert r.ran == ["out/b.txt", "out/ab.txt", "out/all.txt"]
    assert "checked 8 files against the last build's proof: 1 changed" in r.out
    assert built.read("out/all.txt") == "A\nBEE\n-C\n"
    assert proofs(built) == 1  # earned again by the build that ran them
    assert built.build("all").ran == []


def test_given_a_touch_and_an_edit_elsewhere_then_the_proof_is_renewed_for_both(built):
    t = time.time_ns() + 10**9
    os.utime(built.path("src/a.txt"), ns=(t, t))  # no rule that runs reads it
    built.write("src/c.txt", "sea\n")
    assert built.build("all").ran == ["out/c.txt", "out/all.txt"]
    assert proofs(built) == 1
    r = built.build("all", "-v")
    assert r.ran == [] and "checked 8 files against the last build's proof: 0 changed" in r.out


def test_given_a_touch_only_no_op_then_a_later_rebuild_still_sees_the_file_unchanged(built):
    t = time.time_ns() + 10**9
    os.utime(built.path("src/a.txt"), ns=(t, t))
    assert built.build("all").ran == []  # the new stat is known from here on
    built.write("src/b.txt", "bee\n")  # out/ab.txt reads a.txt and b.txt
    assert built.build("all").ran == ["out/b.txt", "out/ab.txt", "out/all.txt"]
    built.pipefile('MARK = "-"\n' + PIPEFILE + "\n# a comment: no proof for this build\n")
    assert built.build("all").ran == []


def test_given_many_files_touched_then_the_store_learns_their_new_stats_too(project):
    """A checkout touches many files: a later build that decides every rule (no proof for its
    request) must not have to hash them all again."""
    n = FEW_TOUCHES + 1
    for k in range(n):
        project.write(f"src/{k}.txt", f"{k}\n")
    project.pipefile(f"for k in range({n}):\n    rule(f'out/{{k}}.txt', [f'src/{{k}}.txt'], upper)\n")
    project.build()
    project.build()  # the first no-op: its records written after their files are trusted
    t = time.time_ns() + 10**9
    for k in range(n):
        os.utime(project.path(f"src/{k}.txt"), ns=(t, t))
    r = project.build("-v")
    assert r.ran == [] and f"checked {2 * n} files against the last build's proof: 0 changed" in r.out
    store = Store(str(project.path(".buildpipe") / DB_NAME), readonly=True)
    try:
        for k in range(n):
            path = f"src/{k}.txt"
            assert store.files[path][:STAT_END] == pack_stat(*stat_path(str(project.path(path))))
    finally:
        store.db.close()


@both
def test_given_a_pipefile_that_runs_pipe_itself_then_nothing_waits_forever(project):
    project.write("src/a.txt", "a\n")
    project.pipefile("""
import subprocess
if not os.environ.get("NESTED"):
    env = dict(os.environ, NESTED="1")
    subprocess.run([sys.executable, "-m", "buildpipe", "build", "-q", "out/first.txt"], env=env, check=True)
rule("out/first.txt", ["src/a.txt"], upper)
rule("out/second.txt", ["out/first.txt"], upper)
""")
    for _ in range(3):  # the second and third rest on a proof, checked while the Pipefile runs
        project.run("build")
    assert project.read("out/second.txt") == "A\n"
    project.write("src/a.txt", "b\n")
    project.run("build")
    assert project.read("out/second.txt") == "B\n"


def test_given_an_unrelated_rule_whose_action_cannot_be_fingerprinted_then_a_target_still_builds(project):
    project.write("src/a.txt", "a\n")
    project.pipefile("""
rule("out/a.txt", ["src/a.txt"], upper)
TREE = {"name": "root"}
TREE["self"] = TREE
def report(output, inputs):
    output.write_text(repr(TREE["name"]))
rule("out/report.txt", [], report)
""")
    assert project.build("out/a.txt").ran == ["out/a.txt"]
    assert project.build("out/a.txt").ran == []


@both
def test_given_a_proof_when_a_change_is_cut_off_then_consumers_do_not_run(built):
    built.write("src/a.txt", "A\n")  # upper-cases to the same bytes
    r = built.build("all", "-v")
    assert r.ran == ["out/a.txt"]
    assert "checked 8 files against the last build's proof: 1 changed" in r.out
    assert proofs(built) == 1
    assert built.build("all").ran == []
    built.write("src/a.txt", "ay\n")  # a change that does reach its consumers runs them
    assert built.build("all").ran == ["out/a.txt", "out/ab.txt", "out/all.txt"]
    assert built.read("out/all.txt") == "AY\nB\n-C\n"


def test_given_a_proof_when_an_output_is_edited_or_deleted_then_its_rule_runs(built):
    built.write("out/c.txt", "hand edit\n")
    assert built.build("all").ran == ["out/c.txt"]
    built.remove("out/ab.txt")
    assert built.build("all").ran == ["out/ab.txt"]
    assert built.read("out/all.txt") == "A\nB\n-C\n"


def test_given_a_proof_when_a_source_is_deleted_then_the_error_names_the_rule(built):
    built.remove("src/c.txt")
    r = built.build("all", rc=2)
    assert "source src/c.txt does not exist; needed by rule out/c.txt" in r.err


def test_given_a_proof_when_the_pipefile_declares_something_else_then_the_rules_concerned_run(built):
    built.pipefile('MARK = "+"\n' + PIPEFILE)  # params of the last rule
    assert built.build("all").ran == ["out/all.txt"]
    built.pipefile('MARK = "+"\n' + PIPEFILE.replace("upper)", "cat)"))  # an action
    assert len(built.build("all").ran) == 5  # new bytes all the way down
    assert built.build("all").ran == []


def test_given_a_proof_for_one_target_when_another_is_built_then_each_is_decided_apart(built):
    built.write("src/a.txt", "aa\n")
    assert built.build("out/a.txt").ran == ["out/a.txt"]  # records changed: every proof is void
    assert proofs(built) == 1  # this request's own
    assert built.build("all").ran == ["out/ab.txt", "out/all.txt"]
    assert built.build("out/a.txt").ran == [] and built.build("all").ran == []
    assert proofs(built) == 2


def test_given_a_proof_when_status_reads_an_edit_then_the_build_still_runs_the_rule(built):
    built.write("src/a.txt", "edited\n")
    built.run("status", "all", rc=1)  # reads the new digest into the state
    assert built.build("all").ran == ["out/a.txt", "out/ab.txt", "out/all.txt"]
    built.write("src/a.txt", "a\n")  # back to the content the proof knew
    built.run("status", "all", rc=1)
    assert built.build("all").ran == ["out/a.txt", "out/ab.txt", "out/all.txt"]


def test_given_a_proof_when_a_rule_fails_then_it_runs_until_it_succeeds(built):
    built.pipefile('MARK = "-"\n' + PIPEFILE + """
def fails(output, inputs):
    log(output)
    if Path("src/a.txt").read_text() == "boom\\n":
        raise RuntimeError("boom")
    output.write_text("fine")
rule("out/f.txt", ["src/a.txt"], fails)
alias("more", ["out/all.txt", "out/f.txt"])
""")
    assert built.build("more").ran == ["out/f.txt"]
    built.write("src/a.txt", "boom\n")
    assert "out/f.txt" in built.build("more", "-k", rc=1).ran
    assert proofs(built) == 0
    assert "out/f.txt" in built.build("more", rc=1).ran
    built.write("src/a.txt", "a\n")
    assert "out/f.txt" in built.build("more").ran
    assert built.build("more").ran == []


@both
def test_given_a_pipefile_that_writes_a_source_as_it_runs_then_every_build_sees_the_new_content(project):
    project.pipefile("""
n = int(Path("count").read_text()) if Path("count").exists() else 0
Path("count").write_text(str(n + 1))
Path("src").mkdir(exist_ok=True)
Path("src/gen.txt").write_text(f"generation {n}\\n")
rule("out/gen.txt", ["src/gen.txt"], upper)
""")
    for n in range(4):
        assert project.build().ran == ["out/gen.txt"]
        assert project.read("out/gen.txt") == f"GENERATION {n}\n"


@both
def test_given_a_pipefile_whose_database_writes_python_does_not_report_then_every_build_sees_them(project):
    project.pipefile("""
import sqlite3
db = sqlite3.connect("data.db")
db.execute("CREATE TABLE IF NOT EXISTS t(x)")
db.execute("INSERT INTO t VALUES (1)")
db.commit()
db.close()
def count(output, inputs):
    log(output)
    output.write_text(str(sqlite3.connect(inputs[0]).execute("SELECT count(*) FROM t").fetchone()[0]))
rule("out/count.txt", ["data.db"], count)
""")
    for n in range(1, 5):
        assert project.build().ran == ["out/count.txt"]
        assert project.read("out/count.txt") == str(n)


@both
def test_given_a_source_changed_by_another_process_while_the_pipefile_runs_then_it_is_seen(built):
    built.pipefile('MARK = "-"\n' + PIPEFILE + """
import subprocess
if Path("edit-me").exists():  # a background process edits a source while this file runs
    subprocess.run(["sh", "-c", "sleep 0.3; echo late > src/c.txt"])
    time.sleep(0.1)
""")
    assert built.build("all").ran == []
    built.write("edit-me", "")
    assert built.build("all").ran == ["out/c.txt", "out/all.txt"]
    assert built.read("out/all.txt") == "A\nB\n-LATE\n"


@both
def test_given_a_proof_when_the_pipefile_breaks_or_is_interrupted_then_nothing_is_lost(built):
    good = built.path("Pipefile.py").read_text()
    built.path("Pipefile.py").write_text(good + "\nraise ValueError('broken')\n")
    r = built.build("all", rc=2)
    assert "ValueError: broken" in r.err
    built.path("Pipefile.py").write_text(good + "\ntime.sleep(30)\n")
    slow = built.spawn("build", "all")
    time.sleep(1.0)  # the Pipefile is sleeping; its proof is being checked beside it
    slow.signal(signal.SIGINT)
    assert slow.wait().rc == 130
    built.path("Pipefile.py").write_text(good)
    r = built.build("all", "-v")  # the lock is free, the proof still holds
    assert r.ran == [] and "against the last build's proof: 0 changed" in r.out


def test_given_a_cleaned_target_then_its_rules_run_again(built):
    built.run("clean", "out/ab.txt")  # and what it needs
    assert sorted(built.build("all").ran) == ["out/a.txt", "out/ab.txt", "out/b.txt"]  # cut off


@both
def test_given_a_proof_then_a_no_op_never_opens_the_database(built):
    """The store's generation is read from `state.db.stat` while the database keeps its stat."""
    import subprocess
    import sys

    script = (
        "import sqlite3, sys\n"
        "def refuse(*args, **kwargs):\n"
        "    raise SystemExit('the database was opened')\n"
        "sqlite3.connect = refuse\n"
        "from buildpipe.cli import main\n"
        "sys.exit(main(['build', '-q', 'all']))\n"
    )
    env = {**os.environ, "NO_COLOR": "1"}
    built.build("all")  # records written just after their files are trusted by the next build
    done = subprocess.run([sys.executable, "-c", script], cwd=built.root, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0 and not done.stderr, done
    t = time.time_ns() + 10**9
    os.utime(built.path("src/a.txt"), ns=(t, t))  # a touch: the new stat goes to the proof alone
    done = subprocess.run([sys.executable, "-c", script], cwd=built.root, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0 and not done.stderr, done
    built.write("src/c.txt", "changed\n")  # a change: the database is read, and written
    done = subprocess.run([sys.executable, "-c", script], cwd=built.root, env=env, capture_output=True,
                          text=True)
    assert done.returncode != 0 and "the database was opened" in done.stderr


def test_given_a_database_written_by_someone_else_since_then_its_own_generation_decides(built):
    """Say an older buildpipe, which leaves no `state.db.stat`, built in between and recorded
    something new: the proof must not hold, though the stat file still names its generation."""
    con = sqlite3.connect(built.path(".buildpipe/state.db"))
    with con:
        con.execute("UPDATE meta SET value='someone else' WHERE key='generation'")
    con.close()
    r = built.build("all", "-v")
    assert r.ran == [] and PROOF_LINE not in r.out
    assert PROOF_LINE in built.build("all", "-v").out  # and the next build has a proof again


@both
def test_given_the_same_declarations_then_a_no_op_never_builds_the_graph(built):
    """The declarations digest equal to the proof's vouches for the graph: it is not built."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from buildpipe import graph\n"
        "def refuse(*args, **kwargs):\n"
        "    raise SystemExit('the graph was built')\n"
        "graph.Graph.__init__ = refuse\n"
        "from buildpipe.cli import main\n"
        "sys.exit(main(['build', '-q', 'all']))\n"
    )
    env = {**os.environ, "NO_COLOR": "1"}
    built.build("all")
    done = subprocess.run([sys.executable, "-c", script], cwd=built.root, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0 and not done.stderr, done
    built.write("src/c.txt", "changed\n")  # rules to decide: the graph is built
    done = subprocess.run([sys.executable, "-c", script], cwd=built.root, env=env, capture_output=True,
                          text=True)
    assert done.returncode != 0 and "the graph was built" in done.stderr


def test_given_targets_that_name_files_by_their_existence_then_a_deleted_one_is_still_an_error(project):
    """A target or alias target that names a source file is known only while the file exists: the
    graph must be checked again each time, proof or not."""
    project.write("src/a.txt", "a\n")
    project.write("src/b.txt", "b\n")
    project.pipefile('rule("out/a.txt", ["src/a.txt"], upper)\nalias("both", ["out/a.txt", "src/b.txt"])\n')
    for _ in range(2):
        assert project.build("src/a.txt").rc == 0
        assert project.build("both").rc == 0
    project.path("src/a.txt").unlink()
    assert "unknown target 'src/a.txt'" in project.build("src/a.txt", rc=2).err
    project.write("src/a.txt", "a\n")
    project.path("src/b.txt").unlink()
    assert "names an unknown target 'src/b.txt'" in project.build("both", rc=2).err


@pytest.mark.parametrize("where", ["pipefile", "settings"])
def test_given_a_default_that_names_a_file_by_its_existence_then_deleting_it_is_an_error(project, where):
    """Checked whatever target is built (contract §1), proof or not."""
    project.write("src/a.txt", "a\n")
    project.write("README.md", "r\n")
    body = 'rule("out/a.txt", ["src/a.txt"], upper)\n'
    if where == "pipefile":
        project.pipefile(body + 'default("README.md")\n')
    else:
        project.pipefile(body)
        project.write("pipe.toml", 'default = ["README.md"]\n')
    for _ in range(2):
        assert project.build("out/a.txt").rc == 0
    project.path("README.md").unlink()
    assert "unknown target 'README.md'" in project.build("out/a.txt", rc=2).err


def test_given_a_directory_reached_by_two_names_then_a_change_through_either_is_seen(project):
    """Both names share one inotify watch: an event must name the file under each of them."""
    project.write("real/a.txt", "a\n")
    project.write("real/b.txt", "b\n")
    os.symlink("real", project.path("link"))
    project.pipefile(
        'if os.path.exists("edit-me"):\n'
        '    os.remove("edit-me")\n'
        '    time.sleep(0.5)  # the helper has looked by now\n'
        '    with open("link/b.txt", "w") as f:\n'
        '        f.write("new\\n")\n'
        'rule("out/a.txt", ["real/a.txt"], upper)\n'
        'rule("out/b.txt", ["link/b.txt"], upper)\n'
    )
    project.build()
    assert project.build().ran == []
    project.write("edit-me", "")
    assert project.build().ran == ["out/b.txt"]
    assert project.read("out/b.txt") == "NEW\n"


def test_given_a_build_killed_while_a_process_it_forked_lives_on_then_its_helper_ends(project):
    """The helper waits for the build to ask; a child the Pipefile forked holds the build's end of
    that pipe too, so the helper must notice its build is gone by itself (it holds the build's
    output pipes: whoever reads them would wait as long). The build dies before its helper has
    looked at the proof's 2,000 files: by then the helper's parent is whoever adopted it."""
    import subprocess

    for k in range(1000):
        project.write(f"src/{k}.txt", "a\n")
    project.pipefile(
        'if os.path.exists("kill-me"):\n'
        '    if os.fork() == 0:  # lives on, holding what the build held but its standard streams\n'
        '        for fd in (0, 1, 2):\n'
        '            os.close(fd)\n'
        '        time.sleep(20)\n'
        '        os._exit(0)\n'
        '    os.kill(os.getpid(), 9)\n'
        'for k in range(1000):\n'
        '    rule(f"out/{k}.txt", [f"src/{k}.txt"], upper)\n'
    )
    project.build()
    project.build()
    project.write("kill-me", "")
    started = time.monotonic()
    done = subprocess.run([*PIPE, "build"], cwd=project.root, capture_output=True, timeout=60)
    assert done.returncode == -9
    assert time.monotonic() - started < 10, "the helper outlived its build"


def test_given_a_rule_the_target_does_not_need_made_invalid_then_the_pipefile_is_still_refused(project):
    """The digest holds the actions of the wanted rules only: another rule's is checked all the same."""
    project.write("src/a.txt", "a\n")
    body = 'rule("out/a.txt", ["src/a.txt"], upper)\nrule("out/b.txt", [], {action})\n'
    project.pipefile(body.format(action='sh("echo b > {output}")'))
    assert len(project.build("out/a.txt").ran) == 1
    assert project.build("out/a.txt").ran == []
    project.pipefile(body.format(action='sh("cat {input} > {output}")'))
    assert "uses {input} but the rule has no inputs" in project.build("out/a.txt", rc=2).err
    project.pipefile(body.format(action="None"))
    assert "has no action" in project.build("out/a.txt", rc=2).err


def test_given_the_default_targets_changed_in_settings_then_the_new_ones_are_built(project):
    project.write("src/a.txt", "a\n")
    project.pipefile('rule("out/a.txt", ["src/a.txt"], upper)\nrule("out/b.txt", ["src/a.txt"], cat)\n')
    project.write("pipe.toml", 'default = ["out/a.txt"]\n')
    assert project.build().ran == ["out/a.txt"]
    assert project.build().ran == []
    project.write("pipe.toml", 'default = ["out/b.txt"]\n')
    assert project.build().ran == ["out/b.txt"]


def test_given_a_default_in_settings_then_a_broken_default_in_the_pipefile_is_still_refused(project):
    """The setting replaces the Pipefile's default(), so the proof's digest leaves that out: it
    is checked all the same, as a build without a proof would."""
    project.write("src/a.txt", "a\n")
    rules = 'rule("out/a.txt", ["src/a.txt"], upper)\nalias("app", ["out/a.txt"])\n'
    project.pipefile(rules + 'default("app")\n')
    project.write("pipe.toml", 'default = ["app"]\n')
    assert project.build().ran == ["out/a.txt"]
    assert project.build().ran == []
    project.pipefile(rules + 'default("ap")\n')
    project.write("src/a.txt", "b\n")
    r = project.build(rc=2)
    assert "default() names an unknown target 'ap'" in r.err and r.ran == []


def test_given_a_moved_state_directory_then_its_old_proof_does_not_vouch_for_the_graph(project):
    """The graph a proof was made with was checked against the state directory of then: a rule
    writing into the state directory's new place must be refused."""
    project.write("src/a.txt", "a\n")
    project.pipefile('rule("out/a.txt", ["src/a.txt"], upper)\nrule("state/x.txt", ["src/a.txt"], cat)\n')
    assert sorted(project.build().ran) == ["out/a.txt", "state/x.txt"]
    assert project.build().ran == []
    project.path(".buildpipe").rename(project.path("moved"))
    project.path("state").rename(project.path("elsewhere"))
    project.path("moved").rename(project.path("state"))
    project.write("pipe.toml", 'state-dir = "state"\n')
    project.write("src/a.txt", "b\n")
    r = project.build(rc=2)
    assert "output state/x.txt is in the state directory" in r.err and r.ran == []


def test_given_outputs_written_early_in_a_build_then_its_proof_trusts_their_stat(project):
    """Re-read at the end of the build, once their timestamp tick has passed: the next no-op need
    not hash them (a clean build followed by a no-op would otherwise hash every output)."""
    from buildpipe.filesystem import TRUSTED

    project.write("src/a.txt", "a\n")
    project.pipefile(
        'rule("out/a.txt", ["src/a.txt"], upper)\n'
        'def slow(output, inputs):\n    time.sleep(0.3)\n    output.write_text("b")\n'
        'rule("out/b.txt", ["out/a.txt"], slow)\n'
    )
    project.build()
    if project.path("out/a.txt").stat().st_mtime_ns % 1_000_000 == 0:
        pytest.skip("coarse timestamps: a record is trusted only seconds after the write")
    (found,) = project.path(".buildpipe").glob("proof-*")
    pf = proof.read(str(project.path(".buildpipe")), found.name[len("proof-") :])
    assert pf is not None
    record = pf.get("out/a.txt")
    assert record is not None and record[TRUSTED] == 1


def test_given_a_damaged_proof_then_the_build_decides_everything_itself(built):
    (found,) = built.path(".buildpipe").glob("proof-*")
    found.write_bytes(found.read_bytes()[:-100])
    built.write("src/c.txt", "sea\n")
    r = built.build("all", "-v")
    assert r.ran == ["out/c.txt", "out/all.txt"] and PROOF_LINE not in r.out
    assert built.build("all").ran == []


@both
def test_given_a_rule_whose_input_changes_while_it_runs_then_no_proof_hides_it(project):
    project.write("src/a.txt", "one\n")
    project.pipefile("""
def slow(output, inputs):
    log(output)
    text = inputs[0].read_text()
    gate("slow")
    output.write_text(text.upper())
rule("out/a.txt", ["src/a.txt"], slow)
""")
    build = project.spawn("build")
    project.wait_started("slow", build)
    time.sleep(0.02)
    project.write("src/a.txt", "two\n")
    project.open_gate("slow")
    assert build.wait().rc == 0
    assert proofs(project) == 0
    assert project.build().ran == ["out/a.txt"]  # its gate is open by now
    assert project.read("out/a.txt") == "TWO\n"


# -- the differential walk ---------------------------------------------------------------------------

WALK_PIPEFILE = """
def join(output, inputs):
    log(output)
    output.write_text("|".join(p.read_text().{case}() for p in inputs))


def words(outputs, inputs):
    log(outputs[0])
    text = inputs[0].read_text().split()
    outputs[0].write_text(" ".join(text[::2]))
    outputs[1].write_text(" ".join(text[1::2]))


{early}
rule("out/j1.txt", ["src/a.txt", "src/b.txt"], join)
rule("out/j2.txt", ["src/c.txt"], join)
rule(["out/even.txt", "out/odd.txt"], ["out/j1.txt"], words)
{late}
rule("out/sh.txt", ["out/odd.txt"], sh("echo out/sh.txt >> ran.log; cat {{input}} {{input}} > {{output}}"))
alias("some", ["out/j2.txt", "out/even.txt"])
"""
TEXTS = ["a b\n", "A B\n", "c\n", "a b c d\n", "", "x" * 30 + "\n"]
SOURCES = ["src/a.txt", "src/b.txt", "src/c.txt"]
OUTPUTS = ["out/j1.txt", "out/j2.txt", "out/even.txt", "out/odd.txt", "out/both.txt", "out/sh.txt"]


@both
@pytest.mark.parametrize("seed", [0])
def test_a_random_walk_decides_with_a_proof_exactly_as_without(project, tmp_path, seed, checked):
    """The same edits in a twin project whose proofs are deleted before each build (so that it
    decides every rule): the same rules run and the outputs are the same bytes."""
    rng = random.Random(f"{seed} {checked}")  # another walk each way
    twin = tmp_path / "twin"
    twin.mkdir()
    roots = (project.root, twin)

    def write(rel: str, text: str) -> None:
        for root in roots:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)

    layout = {"case": "upper", "order": ["out/j2.txt", "out/even.txt", "out/odd.txt"], "early": False}

    def pipefile() -> str:
        """out/both.txt declared after the rules it reads, or before (out of order)."""
        both = f'rule("out/both.txt", {layout["order"]!r}, join)'
        lines = {"early": both, "late": ""} if layout["early"] else {"early": "", "late": both}
        return WALK_PIPEFILE.format(case=layout["case"], **lines)

    for s in SOURCES:
        write(s, rng.choice(TEXTS))
    project.pipefile(pipefile())
    write("Pipefile.py", project.path("Pipefile.py").read_text())
    for step in range(14):
        what = rng.choice(["write", "touch", "output", "delete-output", "pipefile", "nothing"])
        if what == "write":
            write(rng.choice(SOURCES), rng.choice(TEXTS))
        elif what == "touch":
            t = time.time_ns() + rng.randrange(10**9)
            rel = rng.choice(SOURCES)
            for root in roots:
                os.utime(root / rel, ns=(t, t))
        elif what == "output":
            write(rng.choice(OUTPUTS), rng.choice(TEXTS))
        elif what == "delete-output":
            victim = rng.choice(OUTPUTS)
            for root in roots:
                if (root / victim).exists():
                    (root / victim).unlink()
        elif what == "pipefile":
            layout["case"] = rng.choice(["upper", "lower"])
            layout["order"] = rng.sample(["out/j2.txt", "out/even.txt", "out/odd.txt"], 3)
            layout["early"] = rng.random() < 0.5
            project.pipefile(pipefile())
            write("Pipefile.py", project.path("Pipefile.py").read_text())
        target = rng.choice([[], ["some"], ["out/sh.txt"]])
        with_proof = project.build(*target)
        if (twin / ".buildpipe").exists():
            drop_proofs(twin)
        project.run("build", *target, cwd=twin)
        where = f"seed {seed} step {step}: {what}, build {target}"
        assert sorted(with_proof.ran) == sorted(project.take_log(twin)), where
        assert project.snapshot("out") == _snapshot(twin), where
    assert proofs(project) >= 1


def _snapshot(root: Path) -> dict[str, bytes]:
    files = sorted((root / "out").rglob("*"))
    return {str(p.relative_to(root)): p.read_bytes() for p in files if p.is_file()}
