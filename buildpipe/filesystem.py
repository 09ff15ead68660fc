"""Stat and content hashing behind one small interface, so the engine runs on a real disk or in memory.

A file's state is `(size, mtime_ns, ctime_ns, inode)`; its identity is the xxh3-128 digest of its bytes.
"""

from __future__ import annotations

import os
import stat as _stat
import time

import xxhash

Stat = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
DIRECTORY: Stat = (-1, 0, 0, 0)  # stat() of a directory
NOT_REGULAR: Stat = (-2, 0, 0, 0)  # stat() of a FIFO, socket or device

# A recorded stat is trusted only if the file's mtime is safely older than the moment it was read:
# an edit in the same timestamp tick would leave size and mtime unchanged ("racy timestamp").
# Linux stamps files from a coarse clock (one tick, 1-10 ms); 50 ms covers it with margin. A whole
# millisecond mtime suggests a filesystem with coarse stamps (FAT: 2 s, ext3/HFS+: 1 s).
RACY_FINE_NS = 50_000_000
RACY_COARSE_NS = 2_000_000_000
CHUNK = 1 << 20


def is_racy(mtime_ns: int, recorded_ns: int) -> bool:
    """Whether a stat read at `recorded_ns` could miss a later same-size edit."""
    window = RACY_COARSE_NS if mtime_ns % 1_000_000 == 0 else RACY_FINE_NS
    return mtime_ns >= recorded_ns - window


TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class FileSystem(Protocol):
        def stat(self, path: str) -> Stat | None: ...
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
    """xxh3-128 of the file's bytes, read in bounded chunks."""
    with open(path, "rb", buffering=0) as f:
        data = f.read(CHUNK)
        if len(data) < CHUNK:
            return xxhash.xxh3_128_digest(data)
        h = xxhash.xxh3_128()
        h.update(data)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
        return h.digest()


def digest_bytes(data: bytes) -> bytes:
    return xxhash.xxh3_128_digest(data)


class RealFileSystem:
    """The disk, paths relative to the current directory (the Pipefile's)."""

    stat = staticmethod(stat_path)
    digest = staticmethod(digest_path)

    def remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def now_ns(self) -> int:
        return time.time_ns()
