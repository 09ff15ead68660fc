"""Timestamps lie (contract §2: stat first, hash when the stat differs, re-hash racy files): same-size
edits with the mtime put back, edits while the rule reading the file runs, files replaced by others of
the same size and mtime, clocks stepping backwards, filesystems with one-second timestamps. Whatever
the stat says, an edit is never missed: no false "up to date"."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project

from buildpipe import filesystem

CHAIN = """
rule("out/a.txt", ["src/a.txt"], upper)
rule("out/b.txt", ["out/a.txt"], cat)
"""

HOUR = 3600 * 10**9


def set_mtime(project: Project, rel: str, mtime_ns: int) -> None:
    p = project.path(rel)
    os.utime(p, ns=(p.stat().st_atime_ns, mtime_ns))


def age(project: Project, rel: str, seconds: float = 100) -> None:
    """Make `rel` look written long ago, so that its recorded stat is trusted (not racy)."""
    set_mtime(project, rel, time.time_ns() - int(seconds * 1e9))


def edit_keeping_mtime(project: Project, rel: str, text: str) -> None:
    """Rewrite `rel` in place with `text` (same size) and put its mtime back."""
    p = project.path(rel)
    st = p.stat()
    assert len(text.encode()) == st.st_size
    with open(p, "r+b") as f:  # in place: same inode
        f.write(text.encode())
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = p.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def built(project: Project, source: str = "hello") -> None:
    project.pipefile(CHAIN)
    project.write("src/a.txt", source)


# -- same size, mtime put back ------------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [True, False], ids=["old-file", "just-written"])
def test_given_a_source_edited_with_the_same_size_and_its_mtime_put_back_then_its_rules_run(project, trusted):
    built(project)
    if trusted:
        age(project, "src/a.txt")
    assert project.build().ran == ["out/a.txt", "out/b.txt"]
    if trusted:
        assert project.build().ran == []
    for text in ("jello", "jelly"):
        edit_keeping_mtime(project, "src/a.txt", text)
        r = project.build()
        assert r.ran == ["out/a.txt", "out/b.txt"], (text, r)
        assert project.read("out/b.txt") == text.upper()
    assert project.build().ran == []


def test_given_an_output_edited_with_the_same_size_and_its_mtime_put_back_then_its_rule_runs(project):
    built(project)
    age(project, "src/a.txt")
    project.build()
    time.sleep(0.1)  # past the racy window: the build's last look at its outputs is trusted
    project.build()
    for rel in ("out/a.txt", "out/b.txt"):
        edit_keeping_mtime(project, rel, "HELLx")
        r = project.build()
        assert r.ran == [rel], r  # restored; the same bytes as before: nothing after it runs
        assert project.read(rel) == "HELLO"
    assert project.build().ran == []


# -- edits while the rule runs ---------------------------------------------------------------------------

WHILE_RUNNING = """
def read_then_wait(output, inputs):
    log(output)
    text = inputs[0].read_text()
    gate("reading")
    output.write_text("read:" + text)


def wait_then_read(output, inputs):
    log(output)
    gate("reading")
    output.write_text("read:" + inputs[0].read_text())


rule("out/a.txt", ["src/a.txt"], {action})
rule("out/b.txt", ["out/a.txt"], cat)
"""


WHILE_CASES = [
    ("read_then_wait", "same-size-mtime-back"),
    ("read_then_wait", "new-size"),
    ("read_then_wait", "renamed-over"),
    ("wait_then_read", "same-size-mtime-back"),
]


@pytest.mark.parametrize("action,how", WHILE_CASES, ids=[f"{a}-{h}" for a, h in WHILE_CASES])
def test_given_a_source_edited_while_its_rule_runs_then_the_rule_is_stale_next_build(project, action, how):
    project.pipefile(WHILE_RUNNING.format(action=action))
    project.write("src/a.txt", "one")
    age(project, "src/a.txt")
    build = project.spawn("build")
    project.wait_started("reading", build)
    if how == "same-size-mtime-back":
        edit_keeping_mtime(project, "src/a.txt", "two")
    elif how == "new-size":
        project.write("src/a.txt", "three")
    else:
        old = project.path("src/a.txt").stat()
        project.write("src/new.txt", "two")
        os.utime(project.path("src/new.txt"), ns=(old.st_atime_ns, old.st_mtime_ns))
        os.rename(project.path("src/new.txt"), project.path("src/a.txt"))
    text = project.read("src/a.txt")
    project.open_gate("reading")
    assert build.wait().rc == 0
    first = project.read("out/a.txt")
    r = project.build()
    if first != "read:" + text:  # the running action saw the old text: it must run again
        assert r.ran[:1] == ["out/a.txt"], r
    assert project.read("out/a.txt") == "read:" + text
    assert project.read("out/b.txt") == "read:" + text
    assert project.build().ran == []


def test_given_an_upstream_output_edited_while_its_consumer_runs_then_the_next_build_restores_it(project):
    project.pipefile(
        """
        def slow_cat(output, inputs):
            log(output)
            text = inputs[0].read_text()
            gate("reading")
            output.write_text(text)

        rule("out/a.txt", ["src/a.txt"], upper)
        rule("out/b.txt", ["out/a.txt"], slow_cat)
        """
    )
    project.write("src/a.txt", "abc")
    build = project.spawn("build")
    project.wait_started("reading", build)
    edit_keeping_mtime(project, "out/a.txt", "xyz")
    project.open_gate("reading")
    assert build.wait().rc == 0
    r = project.build()
    assert "out/a.txt" in r.ran, r
    assert project.read("out/a.txt") == "ABC"
    assert project.read("out/b.txt") == "ABC"
    assert project.build().ran == []


# -- replaced files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["renamed-over", "deleted-and-recreated"])
@pytest.mark.parametrize("same_bytes", [False, True], ids=["new-bytes", "same-bytes"])
def test_given_a_source_replaced_by_a_file_of_the_same_size_and_mtime_then_only_new_bytes_count(
    project, how, same_bytes
):
    built(project)
    age(project, "src/a.txt")
    project.build()
    old = project.path("src/a.txt").stat()
    text = "hello" if same_bytes else "world"
    if how == "renamed-over":
        project.write("src/tmp.txt", text)
        os.utime(project.path("src/tmp.txt"), ns=(old.st_atime_ns, old.st_mtime_ns))
        os.rename(project.path("src/tmp.txt"), project.path("src/a.txt"))
        assert project.path("src/a.txt").stat().st_ino != old.st_ino
    else:  # the freed inode number may well be reused
        project.remove("src/a.txt")
        project.write("src/a.txt", text)
        set_mtime(project, "src/a.txt", old.st_mtime_ns)
    new = project.path("src/a.txt").stat()
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    r = project.build()
    assert r.ran == ([] if same_bytes else ["out/a.txt", "out/b.txt"]), r
    assert project.read("out/b.txt") == text.upper()


def test_given_an_output_replaced_by_a_file_of_the_same_size_and_mtime_then_its_rule_runs(project):
    built(project)
    project.build()
    old = project.path("out/a.txt").stat()
    project.write("out/x.txt", "HELLX")
    os.utime(project.path("out/x.txt"), ns=(old.st_atime_ns, old.st_mtime_ns))
    os.rename(project.path("out/x.txt"), project.path("out/a.txt"))
    r = project.build()
    assert r.ran == ["out/a.txt"], r
    assert project.read("out/a.txt") == "HELLO"
    assert project.build().ran == []


# -- clocks stepping backwards ------------------------------------------------------------------------------


def test_given_a_source_with_an_mtime_in_the_future_when_edited_keeping_it_then_its_rules_run(project):
    built(project)
    set_mtime(project, "src/a.txt", time.time_ns() + HOUR)  # written before the clock stepped back
    assert project.build().ran == ["out/a.txt", "out/b.txt"]
    assert project.build().ran == []
    edit_keeping_mtime(project, "src/a.txt", "jello")
    assert project.build().ran == ["out/a.txt", "out/b.txt"]
    assert project.read("out/b.txt") == "JELLO"
    assert project.build().ran == []


@pytest.mark.parametrize("start", ["past", "future"])
def test_given_an_edit_stamped_older_than_what_was_recorded_then_its_rules_run(project, start):
    built(project)
    if start == "past":
        age(project, "src/a.txt", 10)
    else:
        set_mtime(project, "src/a.txt", time.time_ns() + HOUR)
    project.build()
    recorded = project.mtime_ns("src/a.txt")
    for k, text in enumerate(("jello", "world")):
        project.write("src/a.txt", text)
        set_mtime(project, "src/a.txt", recorded - (k + 1) * HOUR)  # the clock went back
        r = project.build()
        assert r.ran == ["out/a.txt", "out/b.txt"], (text, r)
        assert project.read("out/b.txt") == text.upper()
        recorded = project.mtime_ns("src/a.txt")


def test_given_outputs_stamped_in_the_future_or_past_when_edited_keeping_size_then_their_rules_run(project):
    built(project)
    project.build()
    for k, shift in enumerate((HOUR, -HOUR)):
        for rel in ("out/a.txt", "out/b.txt"):
            set_mtime(project, rel, time.time_ns() + shift)
        assert project.build().ran == [], "a changed mtime alone runs nothing"
        edit_keeping_mtime(project, "out/b.txt", f"HELL{k}")
        assert project.build().ran == ["out/b.txt"], shift
        assert project.read("out/b.txt") == "HELLO"


# -- a filesystem with one-second timestamps: same size, same mtime, same ctime, same inode --------------


@pytest.fixture
def coarse(project: Project) -> Iterator[Project]:
    """The project on an ext4 with 128-byte inodes: whole-second mtime and ctime."""
    if not shutil.which("mkfs.ext4"):
        pytest.skip("needs mkfs.ext4")
    image = project.scratch / "coarse.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "128", str(image)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mkfs.ext4: {r.stderr.strip()}")
    r = subprocess.run(["mount", "-o", "loop", str(image), str(project.root)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot loop-mount: {r.stderr.strip()}")
    try:
        shutil.rmtree(project.root / "lost+found", ignore_errors=True)
        probe = project.write("probe", "x")
        if probe.stat().st_mtime_ns % 10**9:
            pytest.skip("the filesystem has fine timestamps after all")
        probe.unlink()
        yield project
    finally:
        subprocess.run(["umount", "-l", str(project.root)], capture_output=True)


def same_second(project: Project, action, attempts: int = 10):
    """Run `action` from a fresh start just after a second ticks over, until it ends within that
    second."""
    for _ in range(attempts):
        for rel in ("out", ".buildpipe"):
            shutil.rmtree(project.path(rel), ignore_errors=True)
        for marker in project.root.glob("*.started"):
            marker.unlink()
        for marker in project.root.glob("*.go"):
            marker.unlink()
        project.take_log()
        time.sleep(1 - time.time() % 1 + 0.01)
        t = int(time.time())
        result = action()
        if int(time.time()) == t:
            return result
    pytest.skip("could not do it within one second")


def full_stat(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def test_given_one_second_timestamps_when_a_source_is_edited_in_the_second_it_was_built_then_it_runs(
    coarse,
):
    project = coarse
    project.pipefile(CHAIN)

    def write_build_edit():
        project.write("src/a.txt", "one")
        before = full_stat(project.path("src/a.txt"))
        r = project.build()
        with open(project.path("src/a.txt"), "r+b") as f:
            f.write(b"two")
        return r, before

    r, before = same_second(project, write_build_edit)
    assert r.ran == ["out/a.txt", "out/b.txt"]
    assert full_stat(project.path("src/a.txt")) == before, "the edit left every stat field alone"
    r = project.build()
    assert r.ran == ["out/a.txt", "out/b.txt"], r
    assert project.read("out/b.txt") == "TWO"


def test_given_one_second_timestamps_when_an_output_is_edited_in_the_second_it_was_built_then_it_runs(
    coarse,
):
    project = coarse
    project.pipefile(CHAIN)
    project.write("src/a.txt", "one")

    def build_edit():
        r = project.build()
        before = full_stat(project.path("out/b.txt"))
        with open(project.path("out/b.txt"), "r+b") as f:
            f.write(b"XXX")
        return r, before

    r, before = same_second(project, build_edit)
    assert r.ran == ["out/a.txt", "out/b.txt"]
    assert full_stat(project.path("out/b.txt")) == before
    r = project.build()
    assert r.ran == ["out/b.txt"], r
    assert project.read("out/b.txt") == "ONE"


def test_given_one_second_timestamps_when_a_source_is_edited_while_its_rule_runs_then_it_runs_again(
    coarse,
):
    project = coarse
    project.pipefile(WHILE_RUNNING.format(action="read_then_wait"))

    def run():
        project.write("src/a.txt", "one")
        before = full_stat(project.path("src/a.txt"))
        build = project.spawn("build")
        project.wait_started("reading", build)
        with open(project.path("src/a.txt"), "r+b") as f:
            f.write(b"two")
        project.open_gate("reading")
        assert build.wait().rc == 0
        return before

    before = same_second(project, run)
    assert full_stat(project.path("src/a.txt")) == before
    assert project.read("out/a.txt") == "read:one"
    r = project.build()
    assert r.ran == ["out/a.txt", "out/b.txt"], r
    assert project.read("out/b.txt") == "read:two"


ABA = """
def two_looks(output, inputs):
    log(output)
    gate("before")
    text = inputs[0].read_text()
    gate("after")
    output.write_text("read:" + text)


rule("out/a.txt", ["src/a.txt"], two_looks)
rule("out/b.txt", ["out/a.txt"], cat)
"""


@pytest.mark.parametrize("mtime_back", [False, True], ids=["new-mtime", "mtime-put-back"])
def test_given_a_source_changed_and_changed_back_while_its_rule_runs_then_the_rule_is_stale_next_build(
    project, mtime_back
):
    """A checkout of another branch and back during a build: the action read the other version, so
    its output must not be taken for one built from the file as it is now."""
    project.pipefile(ABA)
    project.write("src/a.txt", "one")
    age(project, "src/a.txt")
    build = project.spawn("build")
    project.wait_started("before", build)
    if mtime_back:
        edit_keeping_mtime(project, "src/a.txt", "two")
    else:
        project.write("src/a.txt", "two")
    project.open_gate("before")
    project.wait_started("after", build)
    if mtime_back:
        edit_keeping_mtime(project, "src/a.txt", "one")
    else:
        project.write("src/a.txt", "one")
    project.open_gate("after")
    assert build.wait().rc == 0
    assert project.read("out/a.txt") == "read:two"  # what the action saw
    r = project.build()
    assert project.read("out/a.txt") == "read:one", f"a clean build gives read:one\n{r}"
    assert project.read("out/b.txt") == "read:one"
    assert project.build().ran == []


# -- stat calls shared with a helper process -------------------------------------------------------


def _odd_tree(root: Path, n: int) -> list[str]:
    """n files, a directory, a FIFO, a symlink to a file, a dangling one, and missing paths."""
    (root / "d").mkdir()
    for i in range(n):
        (root / "d" / f"f{i}").write_text("x" * (i % 7))
    os.mkfifo(root / "fifo")
    (root / "link").symlink_to(root / "d" / "f1")
    (root / "dangling").symlink_to(root / "nowhere")
    names = [f"d/f{i}" for i in range(n)] + ["d", "fifo", "link", "dangling", "missing", "d/f1/x"]
    return [str(root / p) for p in names]


def test_given_many_paths_then_stats_shared_with_a_helper_process_equal_stats_taken_one_by_one(
    tmp_path,
):
    paths = _odd_tree(tmp_path, filesystem.PARALLEL_STATS + 10)
    got = filesystem.RealFileSystem.packed_stats(paths)
    want = [None if (st := filesystem.stat_path(p)) is None or st[0] < 0 else filesystem.pack_stat(*st)
            for p in paths]
    assert got == want
    assert got[-6:] == [None, None, want[-4], None, None, None]  # dir, FIFO, link, dangling, missing
    assert want[-4] == want[1]  # a symlink is followed


def test_given_the_stat_helper_cannot_run_or_dies_then_the_stats_are_taken_all_the_same(
    tmp_path, monkeypatch
):
    paths = _odd_tree(tmp_path, filesystem.PARALLEL_STATS + 10)
    want = filesystem._packed_stats(paths)

    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    with monkeypatch.context() as m:
        m.setattr(os, "fork", no_fork)
        assert filesystem.RealFileSystem.packed_stats(paths) == want
    parent = os.getpid()
    real = filesystem._packed_stats

    def dies_in_the_helper(ps: list[str]) -> list[bytes | None]:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(ps)

    monkeypatch.setattr(filesystem, "_packed_stats", dies_in_the_helper)
    assert filesystem.RealFileSystem.packed_stats(paths) == want


def test_given_many_files_then_hashing_shared_with_a_helper_equals_hashing_one_by_one(
    tmp_path, monkeypatch
):
    paths = _odd_tree(tmp_path, filesystem.PARALLEL_HASHES + 10)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    paths.append(str(loop))
    want = filesystem._hash_files(paths)
    assert list(filesystem.RealFileSystem.hash_files(paths)) == want
    monkeypatch.setattr(filesystem, "HASH_BATCH", 77)  # answers a batch at a time
    assert list(filesystem.RealFileSystem.hash_files(paths)) == want
    digests = [filesystem.digest_path(p) for p in paths[:-7]]
    assert [d for _, d in want[:-7]] == digests
    d, fifo, link, dangling, missing, under_file, looped = want[-7:]
    assert (d, fifo) == ((filesystem.DIRECTORY, None), (filesystem.NOT_REGULAR, None))
    assert link == want[1]  # followed
    assert dangling == missing == under_file == (None, None)
    assert looped[0] is None and "symbolic links" in looped[1]

    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    assert list(filesystem.RealFileSystem.hash_files(paths)) == want


def test_given_an_interrupt_while_a_helper_hashes_then_it_is_killed_and_reaped_at_once(
    tmp_path, monkeypatch
):
    """Ctrl-C (here: the parent's half raising KeyboardInterrupt) must not leave a helper hashing
    on with the build's lock and pipes, nor a descriptor behind."""
    paths = _odd_tree(tmp_path, filesystem.PARALLEL_HASHES + 10)
    parent = os.getpid()

    def slow_helper(ps: list[str]) -> list[filesystem.Hashed]:
        if os.getpid() != parent:
            time.sleep(60)
        raise KeyboardInterrupt

    forked = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        forked.append(pid)
        return pid

    fds = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(filesystem, "_hash_files", slow_helper)
    monkeypatch.setattr(os, "fork", fork)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        list(filesystem.RealFileSystem.hash_files(paths))
    assert time.monotonic() - t0 < 10
    (helper,) = forked
    with pytest.raises(ChildProcessError):  # reaped already
        os.waitpid(helper, os.WNOHANG)
    assert len(os.listdir("/proc/self/fd")) == fds


def test_given_the_child_signal_ignored_then_stats_shared_with_a_helper_are_still_right(tmp_path):
    """With SIGCHLD ignored (inherited from a parent) children are reaped by the kernel at once."""
    paths = _odd_tree(tmp_path, filesystem.PARALLEL_STATS + 10)
    want = filesystem._packed_stats(paths)
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        assert filesystem.RealFileSystem.packed_stats(paths) == want
    finally:
        signal.signal(signal.SIGCHLD, old)


@pytest.mark.parametrize("year_ns", [10_413_792_000_000_000_000])
def test_given_a_source_stamped_beyond_64_bit_nanoseconds_then_it_builds_and_stays_up_to_date(
    project, year_ns
):
    """Archives and odd filesystems carry such stamps (here the year 2300)."""
    project.pipefile('rule("out/a.txt", ["src/a.txt"], upper)\n')
    project.write("src/a.txt", "a\n")
    os.utime(project.path("src/a.txt"), ns=(year_ns, year_ns))
    if os.stat(project.path("src/a.txt")).st_mtime_ns != year_ns:
        pytest.skip("this filesystem cannot store that timestamp")
    assert project.build().ran == ["out/a.txt"]
    assert project.build().ran == []
    project.write("src/a.txt", "b\n")
    os.utime(project.path("src/a.txt"), ns=(year_ns, year_ns))
    assert project.build().ran == ["out/a.txt"]
    assert project.read("out/a.txt") == "B\n"
