"""The proof checker (buildpipe.proof.Check) on real files: the helper and the build's own share of
the files must together find exactly the files whose stat no longer vouches for their record, and
any trouble with the helper must give no answer rather than a wrong one."""

from __future__ import annotations

import os
import signal
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildpipe import proof
from buildpipe.filesystem import digest_path, file_record, stat_path


def _make(root, count: int) -> tuple[list[str], proof.Proof]:
    paths = []
    records = []
    old = time.time_ns() - 10**10  # recorded long after the files were written: trusted
    for k in range(count):
        p = str(root / f"f{k}.txt")
        with open(p, "w") as f:
            f.write(f"file {k}\n")
        t = old - 10**9
        os.utime(p, ns=(t, t))
        paths.append(p)
    for p in paths:
        records.append(file_record(stat_path(p), digest_path(p), time.time_ns()))
    return paths, _from(proof.Proof.pack("generation", b"g" * 16, None, True, paths, b"".join(records)))


def _start(state_dir: str, key: str) -> proof.Check | None:
    found = proof.read(state_dir, key)
    return None if found is None else proof.Check(found)


def _from(parts: list[bytes]) -> proof.Proof:
    import marshal

    return proof.Proof(marshal.loads(parts[1]), parts[2], parts[3])


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(proof, "CHUNK", 7)  # many turns of the two-ended sharing
    monkeypatch.setattr(proof, "BLOCK", 3)  # blocks compared whole, and file by file


@settings(max_examples=25, deadline=None)
@given(changes=st.dictionaries(st.integers(0, 59), st.sampled_from(["touch", "edit", "delete", "dir"])))
def test_the_changes_found_are_exactly_the_files_whose_stat_changed(tmp_path_factory, changes):
    root = tmp_path_factory.mktemp("proof")
    paths, pf = _make(root, 60)
    for k, how in changes.items():
        p = paths[k]
        if how == "touch":
            os.utime(p, ns=(time.time_ns(), time.time_ns()))
        elif how == "edit":
            with open(p, "a") as f:
                f.write("more\n")
        elif how == "delete":
            os.unlink(p)
        else:
            os.unlink(p)
            os.mkdir(p)
    found = proof.Check(pf).result()
    assert found is not None
    assert set(found.touched) == {paths[k] for k, how in changes.items() if how == "touch"}
    assert set(found.changed) == {paths[k] for k, how in changes.items() if how != "touch"}
    for k, how in changes.items():
        if how == "edit":
            assert found.changed[paths[k]][32:48] == digest_path(paths[k])
        elif how in ("delete", "dir"):
            assert found.changed[paths[k]] is None


def test_an_untrusted_record_is_hashed_and_a_same_content_file_counts_as_touched(tmp_path):
    paths, pf = _make(tmp_path, 3)
    records = bytearray(pf.records)
    records[proof.RECORD + 48] = 0  # the second file's record was racy when written
    pf = _from(pf.repack("generation", bytes(records)))
    found = proof.Check(pf).result()
    assert found is not None and list(found.touched) == [paths[1]] and not found.changed
    assert found.touched[paths[1]][48] == 1  # recorded long after its mtime: trusted now


def test_a_killed_helper_gives_no_answer(tmp_path, monkeypatch):
    paths, pf = _make(tmp_path, 50)
    parent, examine = os.getpid(), proof._examine

    def slow_in_the_helper(*args):  # so that it cannot finish before it is killed
        if os.getpid() != parent:
            time.sleep(30)
        examine(*args)

    monkeypatch.setattr(proof, "_examine", slow_in_the_helper)
    check = proof.Check(pf)
    os.kill(check.pid, signal.SIGKILL)
    assert check.result() is None


def test_without_fork_there_is_no_answer(tmp_path, monkeypatch):
    paths, pf = _make(tmp_path, 5)

    def no_fork():
        raise OSError("no more processes")

    monkeypatch.setattr(os, "fork", no_fork)
    check = proof.Check(pf)
    assert check.result() is None
    check.close()


def _eventually(condition, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_closing_an_unread_check_stops_its_helper(tmp_path):
    paths, pf = _make(tmp_path, 5)
    check = proof.Check(pf)
    pid = check.pid
    check.close()

    def reaped() -> bool:
        proof._reap()
        return pid not in proof._children

    _eventually(reaped, "the helper was not stopped")
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_the_helper_lets_go_of_the_lock_once_it_has_looked_and_looks_again_when_asked(tmp_path):
    """It must not hold the lock while the Pipefile runs on (a nested `pipe` would wait for it
    forever), and a file changed after it looked, before the build asks, must still be seen."""
    import fcntl

    from buildpipe.store import Lock

    paths, pf = _make(tmp_path, 40)
    state = tmp_path / "state"
    state.mkdir()
    lock = Lock(str(state))
    lock.acquire()
    check = proof.Check(pf, holds=lock.fd)
    lock.hand_over()
    if not check.watching:
        check.close()
        pytest.skip("no inotify here")
    _eventually(lambda: proof._progress.unpack_from(check.shared)[0] == pf.count, "the helper never finished")
    fd = os.open(lock.path, os.O_RDWR)

    def free() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    _eventually(free, "the helper kept the lock")
    os.close(fd)
    with open(paths[3], "a") as f:
        f.write("changed after the helper looked\n")
    os.utime(paths[7])
    found = check.result()
    assert found is not None
    assert list(found.changed) == [paths[3]] and list(found.touched) == [paths[7]]


def test_a_proof_is_written_whole_and_a_damaged_one_is_not_started(tmp_path):
    paths, pf = _make(tmp_path, 4)
    state = tmp_path / "state"
    state.mkdir()
    proof.write(str(state), "k", pf.repack("gen", pf.records))
    again = proof.read(str(state), "k")
    assert again is not None and again.paths == paths and again.records == pf.records
    assert again.generation == "gen" and [p.name for p in state.iterdir()] == ["proof-k"]
    check = _start(str(state), "k")
    assert check is not None and check.result() is not None
    whole = (state / "proof-k").read_bytes()
    for damaged in (whole[:-1], whole[:10], b"", b"\x00\xff"):
        (state / "proof-k").write_bytes(damaged)
        assert _start(str(state), "k") is None
    assert _start(str(state), "other") is None
    assert _start(str(tmp_path / "none"), "k") is None


def test_only_the_latest_proofs_are_kept(tmp_path):
    for k in range(proof.KEEP + 5):
        proof.write(str(tmp_path), f"k{k}", [b"data"])
        t = time.time_ns() - (100 - k) * 10**9  # each one newer than the last
        os.utime(tmp_path / f"proof-k{k}", ns=(t, t))
    kept = sorted(int(p.name[len("proof-k") :]) for p in tmp_path.iterdir())
    assert kept == list(range(proof.KEEP + 5))[-proof.KEEP :]


def test_the_audit_hook_sees_writes_and_processes_but_not_reads(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("x")
    proof.watch_writes(True)
    p.read_text()
    os.stat(p)
    assert proof.watch_writes(False) is False
    for write in (
        lambda: p.write_text("y"),
        lambda: open(p, "a").close(),
        lambda: os.replace(p, tmp_path / "g.txt"),
        lambda: os.utime(tmp_path / "g.txt"),
        lambda: os.system("true"),
    ):
        proof.watch_writes(True)
        write()
        assert proof.watch_writes(False) is True
    proof.watch_writes(True)
    proof.watch_writes(False)
    (tmp_path / "h.txt").write_text("not watched")
    assert proof.watch_writes(False) is False


def test_a_store_written_without_loading_folds_a_long_journal_on_close(tmp_path):
    import sqlite3

    from buildpipe.store import Store

    db = str(tmp_path / "state.db")
    Store(db).close()
    for k in range(70):
        s = Store(db, load=False)
        s.put_rule(f"r{k}", b"x" * 70)
        s.close()
        rows = sqlite3.connect(db).execute("SELECT count(*) FROM journal").fetchone()[0]
        assert rows == (k + 1 if k < 64 else k - 64), k  # folded when it passed 64 rows
    s = Store(db)
    assert len(s.rules) == 70 and s.rules["r69"] == b"x" * 70
    s.close()


def test_the_helper_stops_where_the_build_has_taken_over(tmp_path):
    """The helper publishes only its own progress: the build's claim (the lowest file it took)
    is never overwritten, so the two meet instead of the helper scanning everything."""
    paths, pf = _make(tmp_path, 60)
    for p in paths:
        with open(p, "a") as f:
            f.write("changed\n")
    check = object.__new__(proof.Check)
    check.proof = pf
    check.shared = bytearray(proof._progress.size)
    proof._progress.pack_into(check.shared, 0, 0, 20)  # the build took files 20 and up
    found = check._forwards()
    assert sorted(found) == list(range(20))
    assert proof._progress.unpack_from(check.shared) == (20, 20)


def test_a_proof_of_the_wrong_shape_is_ignored(tmp_path):
    good = ("g", b"\0" * 16, ["."], None, True)
    for meta, paths, records in (
        ((b"\0" * 16, 5, ["."], None, True), b"a", b"\0" * 49),
        (("g", b"\0" * 15, ["."], None, True), b"a", b"\0" * 49),
        (("g", b"\0" * 16, ".", None, True), b"a", b"\0" * 49),
        (("g", b"\0" * 16, ["."], b"\0\0\0", True), b"a", b"\0" * 49),
        (("g", b"\0" * 16, ["."], [0], True), b"a", b"\0" * 49),
        (("g", b"\0" * 16, ["."], None, 1), b"a", b"\0" * 49),
        (("g", b"\0" * 16, ["."], None), b"a", b"\0" * 49),
        (("g", b"\0" * 16, ["."]), b"a", b"\0" * 49),
        (good, b"a\0b", b"\0" * 49),
        (good, b"a", b"\0" * 48),
        (["g"], b"a", b"\0" * 49),
    ):
        proof.write(str(tmp_path), "k", proof._parts(meta, paths, records))  # type: ignore[arg-type]
        check = _start(str(tmp_path), "k")
        assert check is None or check.result() is None
    proof.write(str(tmp_path), "k", proof._parts(good, b"a", b"\0" * 49))
    assert proof.read(str(tmp_path), "k") is not None


def test_from_python_a_usage_error_leaves_no_lock_or_helper_behind(tmp_path):
    import subprocess
    import sys

    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "Pipefile.py").write_text(
        "from buildpipe import rule\n"
        "def copy(output, inputs):\n    output.write_text(inputs[0].read_text())\n"
        'rule("b.txt", ["a.txt"], copy)\n'
    )
    script = (
        "from buildpipe.cli import main\n"
        "assert main(['build', '-q']) == 0\n"
        "assert main(['build', '-q', '-j', '0']) == 2\n"
        "assert main(['build', '-q']) == 0\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, timeout=60, capture_output=True)
    assert done.returncode == 0, done.stderr


def test_the_watch_names_files_changed_below_python_and_loses_nothing_silently(tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a")
    watch = proof._Watch()
    if not watch.ok:
        pytest.skip("no inotify here")
    assert watch.arm(["d", ".", "gone"]) is not None  # a directory that is gone is no watch
    assert watch.changed() == set()
    db = sqlite3.connect("d/db")  # written by SQLite's C code: no audit event
    db.execute("CREATE TABLE t(x)")
    db.commit()
    db.close()
    os.utime("d/a.txt")
    (tmp_path / "top.txt").write_text("x")
    assert {"d/db", "d/a.txt", "top.txt"} <= watch.changed()
    os.rename("d", "e")  # the watched directory moved: nothing seen there can be trusted
    assert watch.changed() is None
    watch.close()


_segment = st.text("ab.", min_size=1, max_size=3).filter(lambda s: s not in (".", ".."))
_normal_path = st.builds(
    lambda lead, parts: lead + "/".join(parts), st.sampled_from(["", "/"]),
    st.lists(_segment, min_size=1, max_size=4),
)


@given(st.lists(_normal_path, max_size=8))
@settings(max_examples=500, deadline=None)
def test_the_directories_a_proof_watches_are_those_of_os_path_dirname(paths):
    assert proof._directories(paths) == {os.path.dirname(p) or "." for p in paths}


@given(
    st.lists(_normal_path, unique=True, max_size=12),
    st.lists(_normal_path, max_size=4),
    st.integers(min_value=0, max_value=20),
)
@settings(max_examples=500, deadline=None)
def test_a_proof_finds_its_files_by_searching_as_by_its_index(paths, others, searches):
    """Whether a file is looked up by searching the stored paths (the first few) or in the index
    (past those), its position is the same: the one of `paths`, or None for a file not there."""
    records = b"".join(bytes([k % 256]) * proof.RECORD for k in range(len(paths)))
    pf = _from(proof.Proof.pack("generation", b"g" * 16, None, True, paths, records))
    pf._found = {f"\\0{k}": None for k in range(proof.SEARCHES - min(searches, proof.SEARCHES))}
    for p in [*paths, *others, *(p[:-1] for p in paths), *(p + "x" for p in paths), *paths]:
        k = pf.position(p)
        assert k == (paths.index(p) if p in paths else None), p
        assert pf.get(p) == (None if k is None else bytes([k % 256]) * proof.RECORD)
