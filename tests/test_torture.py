"""Crash torture (contract §3 and §5): `pipe` SIGKILLed at random moments and inside its commits, its
workers killed, SIGINT / SIGTERM at random moments, the state's disk full, the state directory
read-only. After each: the state database passes `PRAGMA integrity_check`, the next build finishes
the job without redoing what was recorded, a third build runs nothing, and the outputs have a clean
build's bytes.

The random sweeps live in tests/torture.py (also a standalone script for long runs); the default run
takes a small sample, `--slow` the long one (200 kill points of a 300-rule project).
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torture
from conftest import PACKAGE_DIR, Project, assert_no_internal_traceback, process_gone, wait_until

SLOW = bool(os.environ.get("BUILDPIPE_SLOW"))


def seed() -> int:
    return int(os.environ.get("BUILDPIPE_TORTURE_SEED") or random.randrange(1 << 30))


def run_torture(tmp_path: Path, **kw) -> torture.Stats:
    s = seed()
    lines: list[str] = []
    try:
        stats = torture.torture(tmp_path / "proj", seed=s, say=lines.append, **kw)
    except torture.Failure as e:
        progress = lines[-1] if lines else "in the first rounds"
        raise AssertionError(f"{e}\n({progress}; BUILDPIPE_TORTURE_SEED={s} reproduces)") from None
    print(f"seed {s}: {stats}")
    return stats


# -- the random sweeps -----------------------------------------------------------------------------


def test_given_pipe_disrupted_at_random_moments_and_inside_commits_then_each_next_build_finishes_the_job(
    tmp_path,
):
    """12 SIGKILLs of pipe (4 at a random moment, 4 on a WAL write, 4 inside a WAL write), 2 of a worker,
    2 SIGINT / SIGTERM (at a random moment or on a WAL write), 2 builds with sources edited meanwhile."""
    stats = run_torture(tmp_path, kills=12, rules=40, workers=2, interrupts=2, edits=2)
    assert stats.kill_points >= 12
    assert stats.landed.get("worker", 0) == 2
    if torture.strace_ok():  # some kill left a transaction half written in the WAL
        assert any(k.endswith(":torn") for k in stats.wal), stats


@pytest.mark.slow
def test_given_a_300_rule_project_when_pipe_is_disrupted_200_times_then_every_next_build_finishes_the_job(
    tmp_path,
):
    stats = run_torture(tmp_path, kills=200, rules=300, workers=40, interrupts=40, edits=20)
    assert stats.kill_points >= 200


# -- kills at chosen moments -----------------------------------------------------------------------

WORKER_SH = """
rule("out/s.txt", ["src/a.txt"], sh(
    "echo out/s.txt >> ran.log; printf half > {output}; echo $$ > sh.started; "
    "sleep 1; cat {input} >> {output}"))
rule("out/t.txt", ["out/s.txt"], cat)
"""


def worker_of(pipe_pid: int, timeout: float = 10) -> int:
    """The one worker process (a child) of `pipe`."""
    found: list[int] = []

    def one() -> bool:
        found[:] = torture.children(pipe_pid)
        return len(found) == 1

    wait_until(one, timeout, "pipe's worker")
    return found[0]


def test_given_a_worker_killed_mid_sh_rule_when_built_again_at_once_then_the_output_is_not_corrupted(
    project: Project,
):
    # The worker's shell command must die with it: if it lived on, it would append to the output
    # while the next build runs the rule again, and that build would record the result as built.
    project.pipefile(WORKER_SH)
    project.write("src/a.txt", "-full")
    build = project.spawn("build", "-j1")
    wait_until(
        lambda: project.exists("sh.started") and project.read("sh.started").strip(),
        what="the sh action to start",
    )
    shell = int(project.read("sh.started"))
    os.kill(worker_of(build.pid), signal.SIGKILL)
    r = build.wait(timeout=20)
    assert r.rc == 1, r
    assert "out/s.txt" in r.text and "died" in r.text and "SIGKILL" in r.text, r
    assert not project.exists("out/t.txt")
    shell_gone = process_gone(shell, timeout=2)
    r = project.build()
    assert r.ran == ["out/s.txt", "out/t.txt"]
    time.sleep(1.2)  # long enough for an orphaned shell to finish its command
    try:
        assert project.read("out/s.txt") == "half-full"
        assert project.build().ran == []
        assert shell_gone, "the killed worker's sh command kept running"
    finally:
        if not process_gone(shell, timeout=0):
            os.kill(shell, signal.SIGKILL)


def test_given_a_worker_killed_mid_python_rule_then_only_its_rule_fails_and_the_next_build_fixes_it(
    project,
):
    project.pipefile(
        """
        def stuck(output, inputs):
            log(output)
            output.write_text("partial")
            gate("stuck")
            output.write_text("done")

        rule("out/other.txt", ["src/a.txt"], upper)
        rule("out/stuck.txt", ["out/other.txt"], stuck)
        rule("out/after.txt", ["out/stuck.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    build = project.spawn("build", "-j1")
    worker = project.wait_started("stuck", build)
    os.kill(worker, signal.SIGKILL)
    r = build.wait(timeout=20)
    assert r.rc == 1, r
    assert project.where('rule("out/stuck.txt"') in r.text
    assert "died" in r.text and "SIGKILL" in r.text, r
    assert "Traceback" not in r.text
    assert project.read("out/stuck.txt") == "partial"
    project.open_gate("stuck")
    r = project.build()
    assert r.ran == ["out/stuck.txt", "out/after.txt"]  # out/other.txt had been recorded
    assert project.read("out/after.txt") == "done"
    assert project.build().ran == []


@pytest.mark.skipif(not torture.strace_ok(), reason="needs strace for fault injection")
@pytest.mark.slow
def test_given_pipe_killed_at_each_write_to_its_wal_then_each_next_build_finishes_the_job(tmp_path):
    """Systematically: a SIGKILL on entry of the 1st, 2nd, ... write of pipe to the SQLite WAL."""
    t = torture.Torture(tmp_path / "proj", n_rules=40, seed=seed(), say=print)
    t.setup()
    n = 1
    while True:
        t.round_no += 1
        stale, _ = t.mutate()
        proc, _, err = t.spawn(
            [
                "strace",
                "-f",
                "-qq",
                "-o",
                str(t.scratch / "trace"),
                "-P",
                str(t.state_dir / "state.db-wal"),
                "-e",
                "trace=pwrite64,write",
                "-e",
                f"inject=pwrite64,write:signal=SIGKILL:when={n}",
            ]
        )
        rc = proc.wait(60)
        t.take_log()
        if rc == 0:
            break  # the build made fewer writes: every point was hit
        assert rc in (-9, 137), err.read_text()
        assert torture.integrity(t.state_dir, t.scratch) == "ok", n
        r = t.build()
        assert r.rc == 0, r
        assert set(r.ran) <= t.allowed(stale), n
        assert t.build().ran == {}, n
        t.check_outputs(f"a kill at WAL write {n}")
        n += 1
    print(f"{n - 1} kill points: one on entry of each write to the WAL")
    assert n > 10


# -- the disk ---------------------------------------------------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str, *options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """`path` as a read-only bind mount of itself (root ignores permission bits)."""
    r = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot bind-mount: {r.stderr.strip()}")
    try:
        r = subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot remount read-only: {r.stderr.strip()}")
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path, leave: int) -> Path:
    """A file taking all but `leave` bytes of the filesystem holding `directory`."""
    filler = directory / "filler"
    st = os.statvfs(directory)
    size = max(0, st.f_bavail * st.f_frsize - leave)
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * (1 << 16)
        try:
            while size > 0:
                size -= f.write(chunk[: min(size, len(chunk))])
            while leave == 0:  # to the last byte the filesystem will give
                f.write(chunk[:512])
        except OSError:
            pass
    return filler


CHAIN = """
def make(output, inputs, params):
    with open(params["log"], "a") as f:
        f.write(f"{output}\\n")
    text = "".join(p.read_text()[:40] for p in inputs)
    output.write_text(params["tag"] * params["rep"] + ":" + text + "\\n")


for i in range(N):
    ins = [f"src/{i % 5}.txt"] + ([f"out/{i - 1}.txt"] if i else [])
    rule(f"out/{i}.txt", ins, make, params={"tag": str(i), "rep": 200, "log": LOG})
"""


def chain_expected(project: Project, n: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for i in range(n):
        ins = [project.read(f"src/{i % 5}.txt")] + ([files[f"out/{i - 1}.txt"].decode()] if i else [])
        files[f"out/{i}.txt"] = (str(i) * 200 + ":" + "".join(t[:40] for t in ins) + "\n").encode()
    return files


def chain_project(project: Project, n: int, sources: str = "v1") -> Path:
    log = project.scratch / "chain.log"
    project.pipefile(f"N = {n}\nLOG = {str(log)!r}\n" + CHAIN, header=True)
    for k in range(5):
        project.write(f"src/{k}.txt", f"{sources} source {k}\n")
    return log


def check_db(state: Path) -> None:
    con = sqlite3.connect(state / "state.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        con.close()


DISK_MESSAGE = ("state database", "disk", "space")
K = 1 << 10
FREE = [0, 4 * K, 8 * K, 16 * K, 24 * K, 32 * K, 48 * K, 64 * K, 80 * K, 96 * K, 128 * K, 160 * K, 200 * K]
STATE_DISK = (
    [(free, built) for free in FREE for built in (False, True)]
    if SLOW
    else [(0, False), (32 * K, True), (96 * K, False), (160 * K, True)]
)


@pytest.mark.parametrize(
    "free,built_before",
    STATE_DISK,
    ids=[f"{free // K}k-free-{'rebuild' if b else 'fresh'}" for free, b in STATE_DISK],
)
def test_given_the_state_dir_on_a_full_disk_when_building_then_a_clear_error_and_nothing_recorded_wrongly(
    project, free, built_before
):
    disk = project.scratch / "disk"
    with tmpfs(disk, "512k"):
        state = disk / "state"
        project.write("pipe.toml", f"state-dir = {str(state)!r}\n")
        n = 80
        chain_project(project, n)
        if built_before:
            project.build()
            chain_project(project, n, "v2")
        filler = fill(disk, free)
        r = project.build("-j2", rc=None)
        if free == 0:
            assert r.rc != 0, r
        if r.rc != 0:
            assert r.rc == 2, r
            assert any(w in r.err.lower() for w in DISK_MESSAGE), r
            assert "Traceback" not in r.text, r
            assert_no_internal_traceback(r.err, project.root)
        filler.unlink()
        if (state / "state.db").exists():
            check_db(state)
        r = project.build("-j2")
        assert project.snapshot() == chain_expected(project, n)
        assert project.build().ran == []
        check_db(state)


@pytest.mark.parametrize(
    "free", [0, 24 * K, 64 * K, 100 * K, 200 * K] if SLOW else [0, 64 * K], ids=lambda b: f"{b // K}k-free"
)
def test_given_the_project_on_a_full_disk_when_building_then_a_clear_error_and_nothing_recorded_wrongly(
    project, free
):
    n = 60
    with tmpfs(project.root, "1m"):
        chain_project(project, n)
        filler = fill(project.root, free)
        r = project.build("-j2", rc=None)
        assert r.rc != 0, r
        assert any(w in r.err.lower() for w in DISK_MESSAGE) or "No space left on device" in r.text, r
        assert PACKAGE_DIR not in r.text, r  # the actions' tracebacks, never buildpipe's
        filler.unlink()
        project.build("-j2")
        assert project.snapshot() == chain_expected(project, n)
        assert project.build().ran == []
        check_db(project.root / ".buildpipe")


# -- a read-only state directory ---------------------------------------------------------------------


def assert_clear_read_only_error(r, root: Path) -> None:
    assert r.rc == 2, r
    text = r.err.lower()
    assert "read-only" in text or "permission" in text or "not writable" in text, r
    assert "Traceback" not in r.text, r
    assert_no_internal_traceback(r.err, root)


def test_given_a_read_only_state_dir_when_building_then_a_clear_error_and_nothing_runs(project):
    log = chain_project(project, 10)
    project.build()
    project.write("src/1.txt", "changed\n")
    log.unlink()
    with read_only(project.root / ".buildpipe"):
        r = project.build(rc=None)
        assert_clear_read_only_error(r, project.root)
        assert not log.exists(), "rules ran without a way to record them"
    project.build()
    assert project.snapshot() == chain_expected(project, 10)
    assert project.build().ran == []


def test_given_a_read_only_state_dir_when_asking_status_then_an_answer_or_a_clear_error(project):
    chain_project(project, 10)
    project.build()
    project.write("src/1.txt", "changed\n")
    with read_only(project.root / ".buildpipe"):
        for args in (("status",), ("build", "-n")):
            r = project.run(*args, rc=None)
            if r.rc in (0, 1):  # it could read the state: then it must be right
                assert r.rc == 1 or args[0] == "build", r
                assert "out/1.txt" in r.out and not re.search(r"\bout/0\.txt\b", r.out), r
            else:
                assert "deleting" not in r.err, f"advises deleting a state that is fine\n{r}"
                assert_clear_read_only_error(r, project.root)


@pytest.mark.parametrize("where", ["is", "inside"])
def test_given_the_state_dir_on_a_read_only_filesystem_when_building_then_a_clear_error(project, where):
    disk = project.scratch / "ro"
    with tmpfs(disk, "64k", "ro"):
        state = disk if where == "is" else disk / "state"
        project.write("pipe.toml", f"state-dir = {str(state)!r}\n")
        chain_project(project, 3)
        r = project.build(rc=None)
        assert_clear_read_only_error(r, project.root)
        assert not project.exists("out/0.txt")
