"""Several `pipe` processes on one project (contract §3: "two pipe processes on the same state never
corrupt it: the second says it is waiting for the first, naming its pid, and then proceeds"; §4: `pipe
status` runs nothing and, taking no lock, answers while a build runs)."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import time

import pytest
from conftest import Project, process_gone, wait_until

ROUNDS = 50 if os.environ.get("BUILDPIPE_SLOW") else 5
BUILDS = 4

MANY = """
def make(output, inputs, params):
    log(output)
    text = "".join(p.read_text()[:60] for p in inputs)
    if params["slow"]:
        time.sleep(params["slow"])
    output.write_text(f"{params['tag']}:{text}\\n")


for i in range(N):
    ins = [f"src/{i % 5}.txt"] + ([f"out/{i // 2}.txt"] if i else [])
    rule(f"out/{i}.txt", ins, make, params={"tag": i, "slow": 0.5 if i == 1 else 0})
rule("out/all.txt", [f"out/{i}.txt" for i in range(N)], cat)
"""
N = 40


def inputs(i: int) -> list[str]:
    return [f"src/{i % 5}.txt"] + ([f"out/{i // 2}.txt"] if i else [])


def expected(project: Project) -> dict[str, str]:
    """Every source and output, by path."""
    files = {f"src/{k}.txt": project.read(f"src/{k}.txt") for k in range(5)}
    for i in range(N):
        ins = [files[p] for p in inputs(i)]
        files[f"out/{i}.txt"] = f"{i}:" + "".join(t[:60] for t in ins) + "\n"
    files["out/all.txt"] = "".join(files[f"out/{i}.txt"] for i in range(N))
    return files


def integrity_ok(project: Project) -> None:
    con = sqlite3.connect(project.path(".buildpipe/state.db"))
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        con.close()


WAITING = re.compile(r"waiting for another pipe \(pid ([^)]*)\)")


def test_given_four_builds_started_together_then_each_rule_runs_once_and_nothing_is_lost(project):
    project.pipefile(f"N = {N}\n" + MANY)
    waited = []
    want: dict[str, str] = {}
    for round_ in range(ROUNDS):
        # Round 0 starts with no state at all: four processes create the database together.
        for k in range(5):
            if round_ == 0 or (round_ + k) % 3:
                project.write(f"src/{k}.txt", f"round {round_} source {k}\n")
        old, want = want if round_ else {}, expected(project)
        project.take_log()
        builds = [project.spawn("build", "-j2") for _ in range(BUILDS)]
        status = project.spawn("status")
        runs = [b.wait(timeout=60) for b in builds]
        pids = {b.pid for b in builds}
        round_waited = 0
        for b, r in zip(builds, runs):
            assert r.rc == 0, f"round {round_}: {r}"
            assert "Traceback" not in r.err, r
            for m in WAITING.finditer(r.err):
                round_waited += 1
                holder = m.group(1)
                others = {str(p) for p in pids - {b.pid}}
                assert holder in others, f"round {round_}: names pid {holder}, not one of {others}\n{r}"
        waited.append(round_waited)
        st = status.wait(timeout=60)
        assert st.rc in (0, 1), f"round {round_}: pipe status beside the builds\n{st}"
        assert st.err == "", st
        ran = project.take_log()
        # Exactly the stale rules ran, each once, by whichever build got there first.
        ins = {f"out/{i}.txt": inputs(i) for i in range(N)}
        ins["out/all.txt"] = [f"out/{i}.txt" for i in range(N)]
        stale = [out for out, paths in ins.items() if not old or any(old[p] != want[p] for p in paths)]
        assert sorted(ran) == sorted(stale), f"round {round_}: ran {sorted(ran)}"
        integrity_ok(project)
        r = project.build()
        assert r.ran == [] and "nothing to do" in r.out, f"round {round_}: records were lost\n{r}"
        assert {rel: project.read(rel) for rel in ins} == {rel: want[rel] for rel in ins}
    assert all(waited), f"builds that said they waited, by round: {waited}"


@pytest.mark.parametrize("round_", range(10 if os.environ.get("BUILDPIPE_SLOW") else 1))
def test_given_four_builds_started_together_when_one_is_killed_then_the_others_finish_and_nothing_is_lost(
    project, round_
):
    project.pipefile(f"N = {N}\n" + MANY)
    rnd = random.Random(round_)
    for k in range(5):
        project.write(f"src/{k}.txt", f"version {round_} source {k}\n")
    builds = [project.spawn("build", "-j2") for _ in range(BUILDS)]
    victim = rnd.choice(builds)
    time.sleep(rnd.uniform(0.1, 1.0))
    victim.signal(signal.SIGKILL)
    for b in builds:
        r = b.wait(timeout=60)
        assert r.rc in ((0, -signal.SIGKILL) if b is victim else (0,)), r  # (done before the kill)
    integrity_ok(project)
    project.take_log()
    r = project.build()  # what the killed build was running, if it held the lock last
    assert project.build().ran == []
    want = expected(project)
    assert {rel: project.read(rel) for rel in want if rel.startswith("out/")} == {
        rel: text for rel, text in want.items() if rel.startswith("out/")
    }, r


def test_given_a_build_waiting_for_the_lock_then_it_names_the_holder_and_proceeds_when_it_is_done(project):
    project.pipefile(
        """
        def held(output, inputs):
            log(output)
            gate("held")
            output.write_text("held")

        rule("out/held.txt", [], held)
        rule("out/other.txt", ["src/o.txt"], upper)
        """
    )
    project.write("src/o.txt", "o")
    first = project.spawn("build", "out/held.txt")
    project.wait_started("held", first)
    others = [project.spawn("build") for _ in range(3)]
    for o in others:
        wait_until(lambda o=o: "waiting" in o.err_text(), what="each other build to say it waits")
        assert f"pid {first.pid}" in o.err_text()
    time.sleep(0.3)
    assert not project.exists("out/other.txt"), "a build went on without the lock"
    project.open_gate("held")
    assert first.wait().rc == 0
    for o in others:
        r = o.wait()
        assert r.rc == 0, r
    assert sorted(project.take_log()) == ["out/held.txt", "out/other.txt"]
    assert project.build().ran == []
    integrity_ok(project)


def test_given_a_build_waiting_when_the_holder_is_killed_then_it_proceeds_and_finishes_the_job(project):
    project.pipefile(STATUS)
    project.write("src/a.txt", "a")
    project.write("src/b.txt", "b")
    first = project.spawn("build", "-j1")
    worker = project.wait_started("held", first)
    time.sleep(0.3)  # out/a.txt and out/b.txt finished and committed
    project.take_log()
    second = project.spawn("build", "-j1")
    wait_until(lambda: "waiting" in second.err_text(), what="the second build to say it waits")
    assert f"pid {first.pid}" in second.err_text()
    first.signal(signal.SIGKILL)
    assert first.wait().rc == -signal.SIGKILL
    assert process_gone(worker), "the held action outlived its killed build"
    project.open_gate("held")
    r = second.wait()
    assert r.rc == 0, r
    assert project.take_log() == ["out/held.txt", "out/last.txt"]
    assert project.read("out/last.txt") == "held:AB"
    assert project.build().ran == []
    integrity_ok(project)


STATUS = """
def held(output, inputs):
    log(output)
    gate("held")
    output.write_text("held:" + inputs[0].read_text())


rule("out/a.txt", ["src/a.txt"], upper)
rule("out/b.txt", ["src/b.txt"], upper)
rule("out/held.txt", ["out/a.txt"], held)
rule("out/last.txt", ["out/held.txt", "out/b.txt"], cat)
"""


def stale_names(text: str) -> set[str]:
    return set(re.findall(r"^stale (\S+)", text, re.M))


@pytest.mark.parametrize("state", ["fresh", "built-before"])
def test_given_a_build_running_when_asking_status_then_it_answers_at_once_with_what_is_recorded(
    project, state
):
    project.pipefile(STATUS)
    project.write("src/a.txt", "a")
    project.write("src/b.txt", "b")
    if state == "built-before":
        project.open_gate("held")
        project.build()
        project.remove("held.go")
        project.remove("held.started")
        project.write("src/a.txt", "A2")
        project.write("src/b.txt", "B2")
    build = project.spawn("build", "-j1", env=project.env(PYTHONUNBUFFERED="1"))
    project.wait_started("held", build)
    # out/a.txt and out/b.txt are done; the build commits them within its flush interval.
    wait_until(lambda: "out/b.txt" in build.out_path.read_text(), what="pipe to report out/b.txt")
    time.sleep(0.5)
    for _ in range(3):
        t0 = time.monotonic()
        r = project.run("status", rc=None)
        took = time.monotonic() - t0
        assert r.rc == 1, r
        assert took < 15, f"pipe status took {took:.1f}s beside a build: did it wait for the lock?"
        assert r.err == "", r
        assert stale_names(r.out) == {"out/held.txt", "out/last.txt"}, r
    assert build.proc.poll() is None, "the build must still be running"
    project.open_gate("held")
    assert build.wait().rc == 0
    r = project.run("status", rc=0)
    assert stale_names(r.out) == set()


def test_given_a_state_database_not_initialised_yet_when_asking_status_then_it_answers(project):
    """A first build creates state.db, then its tables: status beside it (or after that build was
    killed in between) sees an empty database file, which is an empty state."""
    project.pipefile(STATUS)
    project.write("src/a.txt", "a")
    project.write("src/b.txt", "b")
    project.write(".buildpipe/state.db", b"")
    r = project.run("status", rc=None)
    assert r.rc == 1, r
    assert stale_names(r.out) == {"out/a.txt", "out/b.txt", "out/held.txt", "out/last.txt"}, r
    r = project.build("-n")
    assert "would run out/held.txt" in r.out, r
    project.open_gate("held")
    project.build()
    assert project.run("status", rc=0)


def test_given_the_lock_just_taken_by_a_new_holder_then_a_waiter_never_names_the_previous_one(project):
    """Between taking the flock and writing its pid, a holder leaves the lock file as it found it:
    a waiter reading then must not name whoever held the lock before (here: a finished build)."""
    import fcntl

    project.pipefile(STATUS)
    project.write("src/a.txt", "a")
    project.write("src/b.txt", "b")
    project.open_gate("held")
    first = project.spawn("build")
    assert first.wait().rc == 0
    assert process_gone(first.pid)
    fd = os.open(project.path(".buildpipe/lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the new holder, an instant before it writes its pid
        second = project.spawn("build")
        wait_until(lambda: "waiting" in second.err_text(), what="the second build to say it waits")
        time.sleep(0.2)
        assert f"pid {first.pid})" not in second.err_text(), "names a build that finished long ago"
    finally:
        os.close(fd)
    assert second.wait().rc == 0
