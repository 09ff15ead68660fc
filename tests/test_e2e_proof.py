"""The up-to-date proof (buildpipe.proof): a build that rests on the proof the last one left must
decide exactly what a build deciding every rule would. Each test here builds through the real
`pipe`; the differential walk compares every build with one run on a copy whose proofs were
deleted, so that copy decides everything itself."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import Project

PROOF_LINE = "against the last build's proof"


def proofs(project: Project) -> int:
    con = sqlite3.connect(project.path(".buildpipe/state.db"))
    try:
        return con.execute("SELECT count(*) FROM proof").fetchone()[0]
    finally:
        con.close()


def drop_proofs(root: Path) -> None:
    con = sqlite3.connect(root / ".buildpipe" / "state.db")
    try:
        con.execute("DELETE FROM proof")
        con.commit()
    finally:
        con.close()


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


def test_given_a_proof_when_a_source_changes_then_only_what_depends_on_it_runs(built):
    built.write("src/b.txt", "bee\n")
    r = built.build("all", "-v")
    assert r.ran == ["out/b.txt", "out/ab.txt", "out/all.txt"]
    assert "checked 8 files against the last build's proof: 1 changed" in r.out
    assert built.read("out/all.txt") == "A\nBEE\n-C\n"
    assert proofs(built) == 1  # earned again by the build that ran them
    assert built.build("all").ran == []


def test_given_a_proof_when_a_change_is_cut_off_then_consumers_do_not_run(built):
    built.write("src/a.txt", "A\n")  # upper-cases to the same bytes
    r = built.build("all")
    assert r.ran == ["out/a.txt"]
    assert built.build("all").ran == []


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


def test_given_a_cleaned_target_then_its_rules_run_again(built):
    built.run("clean", "out/ab.txt")  # and what it needs
    assert sorted(built.build("all").ran) == ["out/a.txt", "out/ab.txt", "out/b.txt"]  # cut off


def test_given_a_damaged_proof_then_the_build_decides_everything_itself(built):
    con = sqlite3.connect(built.path(".buildpipe/state.db"))
    con.execute("UPDATE proof SET data = x'00ff'")
    con.commit()
    con.close()
    built.write("src/c.txt", "sea\n")
    r = built.build("all", "-v")
    assert r.ran == ["out/c.txt", "out/all.txt"] and PROOF_LINE not in r.out
    assert built.build("all").ran == []


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


rule("out/j1.txt", ["src/a.txt", "src/b.txt"], join)
rule("out/j2.txt", ["src/c.txt"], join)
rule(["out/even.txt", "out/odd.txt"], ["out/j1.txt"], words)
rule("out/both.txt", {order!r}, join)
rule("out/sh.txt", ["out/odd.txt"], sh("echo out/sh.txt >> ran.log; cat {{input}} {{input}} > {{output}}"))
alias("some", ["out/j2.txt", "out/even.txt"])
"""
TEXTS = ["a b\n", "A B\n", "c\n", "a b c d\n", "", "x" * 30 + "\n"]
SOURCES = ["src/a.txt", "src/b.txt", "src/c.txt"]
OUTPUTS = ["out/j1.txt", "out/j2.txt", "out/even.txt", "out/odd.txt", "out/both.txt", "out/sh.txt"]


def _twin(project: Project, twin: Path) -> None:
    """`twin` becomes a copy of the project, state included, with its proofs deleted."""
    shutil.rmtree(twin, ignore_errors=True)
    shutil.copytree(project.root, twin, symlinks=True)
    drop_proofs(twin)


@pytest.mark.parametrize("seed", range(3))
def test_a_random_walk_decides_with_a_proof_exactly_as_without(project, tmp_path, seed):
    rng = random.Random(seed)
    for s in SOURCES:
        project.write(s, rng.choice(TEXTS))
    layout = {"case": "upper", "order": ["out/j2.txt", "out/even.txt", "out/odd.txt"]}
    project.pipefile(WALK_PIPEFILE.format(**layout))
    project.build()
    twin = tmp_path / "twin"
    for step in range(12):
        what = rng.choice(["write", "touch", "output", "delete-output", "pipefile", "nothing"])
        if what == "write":
            project.write(rng.choice(SOURCES), rng.choice(TEXTS))
        elif what == "touch":
            t = time.time_ns() + rng.randrange(10**9)
            os.utime(project.path(rng.choice(SOURCES)), ns=(t, t))
        elif what == "output":
            project.write(rng.choice(OUTPUTS), rng.choice(TEXTS))
        elif what == "delete-output":
            victim = rng.choice(OUTPUTS)
            if project.exists(victim):
                project.remove(victim)
        elif what == "pipefile":
            layout["case"] = rng.choice(["upper", "lower"])
            layout["order"] = rng.sample(["out/j2.txt", "out/even.txt", "out/odd.txt"], 3)
            project.pipefile(WALK_PIPEFILE.format(**layout))
        target = rng.choice([[], ["some"], ["out/sh.txt"]])
        _twin(project, twin)
        with_proof = project.build(*target)
        project.run("build", *target, cwd=twin)
        where = f"seed {seed} step {step}: {what}, build {target}"
        assert sorted(with_proof.ran) == sorted(project.take_log(twin)), where
        assert project.snapshot("out") == _snapshot(twin), where


def _snapshot(root: Path) -> dict[str, bytes]:
    files = sorted((root / "out").rglob("*"))
    return {str(p.relative_to(root)): p.read_bytes() for p in files if p.is_file()}
