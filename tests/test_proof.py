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
    data = proof.Proof.pack(b"g" * 16, paths, records)
    return paths, proof.Proof(b"token", data)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(proof, "CHUNK", 7)  # many turns of the two-ended sharing


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
    pf = proof.Proof(b"t", proof.Proof.pack(pf.graph, paths, [bytes(records)]))
    found = proof.Check(pf).result()
    assert found is not None and list(found.touched) == [paths[1]] and not found.changed
    assert found.touched[paths[1]][48] == 1  # recorded long after its mtime: trusted now


def test_a_killed_helper_gives_no_answer(tmp_path, monkeypatch):
    paths, pf = _make(tmp_path, 50)
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


def test_closing_an_unread_check_stops_its_helper(tmp_path):
    paths, pf = _make(tmp_path, 5)
    check = proof.Check(pf)
    pid = check.pid
    check.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_a_damaged_proof_is_not_started(tmp_path):
    db = tmp_path / "state.db"
    import sqlite3

    con = sqlite3.connect(db)
    con.execute(proof_table())
    con.execute("INSERT INTO proof VALUES ('k', x'01', x'00ff')")
    con.commit()
    con.close()
    assert proof.start(str(tmp_path), "k") is None
    assert proof.start(str(tmp_path), "other") is None
    assert proof.start(str(tmp_path / "none"), "k") is None


def proof_table() -> str:
    from buildpipe.store import PROOF_TABLE

    return PROOF_TABLE


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
