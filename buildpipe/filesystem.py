"""Stat and content hashing behind one small interface, so the engine runs on a real disk or in memory.

A file's state is `(size, mtime_ns, ctime_ns, inode)`; its identity is the xxh3-128 digest of its bytes.
What the store keeps of a file is one packed record (`file_record`): its state, its digest, and whether
that state can be trusted to vouch for the digest later (see `is_racy`).
"""

from __future__ import annotations

import marshal
import os
import signal
import stat as _stat
import struct
import time

import xxhash

Stat = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
# A file read by `hash_files`: (stat, digest) of a regular file; (None, None) if it is missing;
# (DIRECTORY or NOT_REGULAR, None); (None, why) if it could not be stat'ed or read.
Hashed = tuple[Stat | None, bytes | str | None]
DIRECTORY: Stat = (-1, 0, 0, 0)  # stat() of a directory
NOT_REGULAR: Stat = (-2, 0, 0, 0)  # stat() of a FIFO, socket or device

# A recorded stat is trusted only if the file's mtime is safely older than the moment it was read:
# an edit in the same timestamp tick would leave size and mtime unchanged ("racy timestamp").
# Linux stamps files from a coarse clock (one tick, 1-10 ms); 50 ms covers it with margin. A whole
# millisecond mtime suggests a filesystem with coarse stamps (FAT: 2 s, ext3/HFS+: 1 s).
RACY_FINE_NS = 50_000_000
RACY_COARSE_NS = 2_000_000_000
CHUNK = 1 << 20
_buffer = bytearray(CHUNK)  # one reusable read buffer: hashing allocates nothing per file

# A file record: the packed stat (32 bytes), the digest (16), then 1 if the stat vouches for the
# digest, 0 if it was racy when recorded (the file must be hashed again to be known).
STAT_RECORD = struct.Struct("<qqqQ")
_pack = STAT_RECORD.pack


def pack_stat(size: int, mtime_ns: int, ctime_ns: int, ino: int) -> bytes:
    """A file's state in 32 bytes. A timestamp beyond 64-bit nanoseconds (after 2262, before 1677)
    is kept as a digest of the numbers instead: equal states still pack equal."""
    try:
        return _pack(size, mtime_ns, ctime_ns, ino)
    except struct.error:
        return xxhash.xxh3_128_digest(repr((size, mtime_ns, ctime_ns, ino)).encode()) * 2
STAT_END, DIGEST_END = 32, 48
TRUSTED = 48  # index of the flag


def file_record(st: Stat, digest: bytes, recorded_ns: int) -> bytes:
    """What the store keeps of a file whose stat `st` was read after `recorded_ns`."""
    return pack_stat(*st) + digest + (b"\0" if is_racy(st[1], recorded_ns) else b"\1")


def recorded_stat(record: bytes) -> Stat:
    """The stat in a file record (meaningless for the rare digest-packed state: used only to decide
    whether to re-read a racy record, which `file_record` then judges from the real stat)."""
    return STAT_RECORD.unpack_from(record)


def is_racy(mtime_ns: int, recorded_ns: int) -> bool:
    """Whether a stat read at `recorded_ns` could miss a later same-size edit."""
    window = RACY_COARSE_NS if mtime_ns % 1_000_000 == 0 else RACY_FINE_NS
    return mtime_ns >= recorded_ns - window


TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any, NoReturn, Protocol

    class FileSystem(Protocol):
        def stat(self, path: str) -> Stat | None: ...
        def packed_stats(self, paths: list[str]) -> list[bytes | None]: ...
        def hash_files(self, paths: list[str]) -> Iterable[Hashed]: ...
        def digest(self, path: str) -> bytes: ...
        def remove(self, path: str) -> None: ...
        def now_ns(self) -> int: ...


def stat_path(path: str) -> Stat | None:
    """The state of `path`: None if missing, DIRECTORY or NOT_REGULAR if it is not a regular file."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not _stat.S_ISREG(st.st_mode):
        return DIRECTORY if _stat.S_ISDIR(st.st_mode) else NOT_REGULAR
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def digest_path(path: str) -> bytes:
    """xxh3-128 of the file's bytes, read in bounded chunks into one reused buffer."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        buf = _buffer
        n = os.readv(fd, (buf,))
        with memoryview(buf) as view:
            if n < CHUNK:
                return xxhash.xxh3_128_digest(view[:n])
            h = xxhash.xxh3_128()
            while n:
                h.update(view[:n])
                n = os.readv(fd, (buf,))
            return h.digest()
    finally:
        os.close(fd)


def digest_bytes(data: bytes) -> bytes:
    return xxhash.xxh3_128_digest(data)


PARALLEL_STATS = 4000  # paths from which a second process shares the stat calls
PARALLEL_HASHES = 200  # files from which a second process shares the hashing
HASH_BATCH = 50_000


def _packed_stats(paths: list[str]) -> list[bytes | None]:
    out: list[bytes | None] = []
    append, stat, pack, regular = out.append, os.stat, _pack, _stat.S_ISREG
    for p in paths:
        try:
            s = stat(p)
        except OSError:
            append(None)
            continue
        if not regular(s.st_mode):
            append(None)
            continue
        try:
            append(pack(s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino))
        except struct.error:
            append(pack_stat(s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino))
    return out


def reply_and_exit(r: int, w: int, answer: Callable[[], Any]) -> NoReturn:
    """In a forked helper: compute the answer, send it marshalled down `w`, vanish (no atexit, no
    buffers flushed; exit status 1 if anything went wrong). The answer ends when `w` and the
    standard streams are closed, before the exit's own clean-up, which nobody need wait for."""
    code = 1
    try:
        os.close(r)
        view = memoryview(marshal.dumps(answer()))
        while view:
            view = view[os.write(w, view) :]
        code = 0
    finally:
        for fd in (w, 0, 1, 2):
            try:
                os.close(fd)
            except OSError:
                pass
        os._exit(code)


class _Helper:
    """A forked process that computes `work(items)` and sends back the marshalled list. Any trouble
    (no fork, the helper killed, a short read) yields None, and the caller does the work itself. It
    lives for the time of that work (it would outlive a killed parent by at most that)."""

    def __init__(self, work: Callable[[list[str]], list[Any]], items: list[str]) -> None:
        self.pid = -1
        try:
            self.r, w = os.pipe()
        except OSError:
            return
        self.expected = len(items)
        # The helper must never run the build's Ctrl-C handling (closing the store, the lock): it
        # starts with those signals blocked and ends with os._exit.
        quiet = {signal.SIGINT, signal.SIGTERM}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, quiet)
        try:
            self.pid = os.fork()
        except OSError:
            os.close(self.r)
            os.close(w)
            return
        finally:
            if self.pid != 0:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if self.pid == 0:  # the helper
            reply_and_exit(self.r, w, lambda: work(items))
        os.close(w)

    def result(self) -> list[Any] | None:
        """Its answer, or None if it gave none. Interrupted meanwhile: the caller must `cancel`."""
        if self.pid <= 0:
            return None
        chunks = []
        while chunk := os.read(self.r, 1 << 20):
            chunks.append(chunk)
        if self._end() != 0:
            return None
        try:
            answer = marshal.loads(b"".join(chunks))
        except (EOFError, ValueError, TypeError):
            return None
        return answer if type(answer) is list and len(answer) == self.expected else None

    def cancel(self) -> None:
        """Kill it, if it is still there: nobody will read its answer."""
        if self.pid > 0:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._end()

    def _end(self) -> int:
        os.close(self.r)
        try:
            status = os.waitpid(self.pid, 0)[1]
        except ChildProcessError:  # SIGCHLD ignored: reaped already; the data tells
            status = 0
        self.pid = -1
        return status


def _shared(work: Callable[[list[str]], list[Any]], items: list[str], alone_below: int) -> list[Any]:
    """`work(items)`, every other item done at the same time by a forked helper process when there
    are at least `alone_below` items: a build process waiting on the disk, or hashing, keeps only
    one core busy."""
    if len(items) < alone_below:
        return work(items)
    odd = items[1::2]  # every other item, not a half: the costly ones may all sit in one half
    helper = _Helper(work, odd)
    out: list[Any] = [None] * len(items)
    try:
        out[::2] = work(items[::2])
        second = helper.result()
    except BaseException:  # Ctrl-C, say: the helper must not go on holding what it inherited
        helper.cancel()
        raise
    out[1::2] = second if second is not None else work(odd)
    return out


def _hash_files(paths: list[str]) -> list[Hashed]:
    out: list[Hashed] = []
    for p in paths:
        try:
            st = stat_path(p)
            out.append((st, digest_path(p) if st is not None and st[0] >= 0 else None))
        except OSError as e:
            out.append((None, e.strerror or str(e)))
    return out


class RealFileSystem:
    """The disk, paths relative to the current directory (the Pipefile's)."""

    stat = staticmethod(stat_path)
    digest = staticmethod(digest_path)

    @staticmethod
    def packed_stats(paths: list[str]) -> list[bytes | None]:
        """`pack_stat` of each regular file, None for anything else. A long list is split with a
        forked helper process, so that both cores wait on `stat` at once."""
        return _shared(_packed_stats, paths, PARALLEL_STATS)

    @staticmethod
    def hash_files(paths: list[str]) -> Iterator[Hashed]:
        """Stat and hash each path (see `Hashed`), a long list shared with a helper process. The
        answers come a batch at a time: a million of them held at once would take 300 MB."""
        for k in range(0, len(paths), HASH_BATCH):
            yield from _shared(_hash_files, paths[k : k + HASH_BATCH], PARALLEL_HASHES)

    def remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def now_ns(self) -> int:
        return time.time_ns()
