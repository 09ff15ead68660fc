"""The up-to-date proof: what a build that ended with every wanted rule up to date rested on.

Whether a rule is up to date depends on three things only (contract §2): what the Pipefile declared
(outputs, inputs, action, params), the rule records in the store, and the contents of its files. A
build that ends with every wanted rule up to date writes a proof for its request (the Pipefile and
the targets): a digest of the declarations, and the file record (stat and digest) of every file the
wanted rules read or write. Any change to a rule record deletes every proof (see `store`).

The next build of the same request reads the proof before running the Pipefile, and a forked helper
stats those files against it while the Pipefile runs, hashing only a file whose stat differs. The
Pipefile still runs every time; if it declared the same things (same digest) and no file changed,
every rule is up to date without deciding each one, and a file that did change marks only the rules
that read or write it (and, through what they rebuild, their consumers) to be decided as usual.
This is the decision a full build would make, reached from what changed instead of from everything.
"""

from __future__ import annotations

import marshal
import mmap
import os
import signal
import struct
import sys
import time
from array import array

import xxhash

from .filesystem import (
    DIGEST_END,
    STAT_END,
    STAT_RECORD,
    TRUSTED,
    digest_path,
    file_record,
    pack_stat,
    reply_and_exit,
    stat_path,
)
from .store import DIGEST_SIZE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from .rules import Rule

RECORD = 49  # bytes of a file record (filesystem.file_record)
# Files up to which the build checks a proof itself, without a helper (the environment variable
# is for the tests, which run both ways on small projects).
INLINE = int(os.environ.get("BUILDPIPE_PROOF_INLINE", "2000"))
# Files looked up in a proof by searching its stored form before it is worth indexing them all.
SEARCHES = 8
_pack = STAT_RECORD.pack
_ENC = ("utf-8", "surrogateescape")


def request_key(pipefile: str, state_dir: str, targets: list[str]) -> str:
    """What a proof is stored under: the Pipefile, the state directory (moved, it holds the proof
    of a graph checked against its old place) and the targets as given (none: the default)."""
    return xxhash.xxh3_128_hexdigest("\0".join([pipefile, state_dir, *targets]).encode(*_ENC))


# A Pipefile that writes files or starts processes while it runs could change the very files the
# helper is checking, after it looked: such a build decides everything itself. Python reports
# those operations to audit hooks (PEP 578); one hook, installed once, watches while asked to.
# Opening a database or calling into C counts too: their writes are not reported. What a C
# extension writes on its own (say, numpy or h5py saving a file) is not seen.
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WRITES = frozenset((
    "os.rename", "os.remove", "os.rmdir", "os.truncate", "os.utime", "os.link", "os.symlink",
    "os.chmod", "os.chown", "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.move",
    "shutil.rmtree", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "os.mkfifo", "os.mknod",
    "sqlite3.connect", "ctypes.dlopen", "ctypes.call_function",
))
_watch = [False, False]  # watching, and whether a write was seen


def _hook(event: str, args: tuple) -> None:
    if not _watch[0]:
        return
    if event == "open":
        mode, flags = args[1], args[2]
        if (type(flags) is int and flags & _WRITE_FLAGS) or (
            type(mode) is str and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
        ):
            _watch[1] = True
    elif event in _WRITES:
        _watch[1] = True


_hooked = [False]


def watch_writes(on: bool) -> bool:
    """Start (on) or stop watching for writes; returns whether any was seen since the start."""
    if on:
        if not _hooked[0]:
            sys.addaudithook(_hook)
            _hooked[0] = True
        _watch[1] = False
    _watch[0] = on
    return _watch[1]


def declarations(
    rules: list[Rule], unusual: list[Rule], aliases: dict[str, list[str]], invariants: Iterable[str],
    default: list[str] | None, wanted: list[int], action_fp: Callable[[Any], bytes],
    params_fp: Callable[[Any], bytes],
) -> bytes | None:
    """A digest of everything the Pipefile declared that deciding the wanted rules depends on: the
    outputs and inputs of every rule (which rules a target needs), each rule's temp flag, name and
    output shape (`unusual`: the rules that have any, indexed), the aliases, invariants and default
    targets, and the action and params of each wanted rule; None if some action or params cannot be
    fingerprinted (no proof then). The same digest means the same graph: a Graph's checks would
    pass or fail alike, but for targets that name existing files (see `Proof.wanted`)."""
    h = xxhash.xxh3_128()
    # Paths hold no NUL and are never empty: an empty item ends a rule's outputs, then its inputs.
    h.update("\0".join(["\0".join((*r.outputs, "", *r.inputs, "")) for r in rules]).encode(*_ENC))
    extras = [(r.index, r.temp, r.name, r.shape) for r in unusual]
    try:
        actions = [rules[i].action for i in wanted] if len(wanted) < len(rules) else [r.action for r in rules]
        ids = list(map(id, actions))
        fps = {k: action_fp(a) for k, a in dict(zip(ids, actions)).items()}
        h.update(array("Q", wanted).tobytes())
        h.update(b"".join(map(fps.__getitem__, ids)))
        chosen = set(wanted) if unusual else ()
        with_params = [r for r in unusual if r.params is not None and r.index in chosen]
        params = [(r.index, params_fp(r.params)) for r in with_params]
        h.update(repr((extras, params, sorted(aliases.items()), sorted(invariants), default)).encode(*_ENC))
    except Exception:  # e.g. a value the fingerprint cannot walk: the build will say what is wrong
        return None
    return h.digest()


class Proof:
    """A stored proof, unpacked: the store generation it holds for, the declarations digest, the
    directories of its files, the wanted rules (see `wanted`), whether the graph has every
    producer before its consumers, the files (NUL-separated, in a fixed order) and their records,
    RECORD bytes each."""

    def __init__(self, meta: tuple, paths: bytes, records: bytes) -> None:
        self.generation, self.graph, self.dirs, self._wanted, self.in_order = meta
        self._paths, self.records = paths, records
        self.count = len(records) // RECORD
        if (
            type(self.generation) is not str
            or type(self.graph) is not bytes
            or type(self.dirs) is not list
            or not (self._wanted is None or (type(self._wanted) is bytes and len(self._wanted) % 4 == 0))
            or len(records) != RECORD * self.count
            or len(self.graph) != DIGEST_SIZE
            or type(self.in_order) is not bool
        ):
            raise ValueError("a proof of the wrong shape")
        self._list: list[str] | None = None
        self._index: dict[str, int] | None = None
        self._found: dict[str, int | None] = {}  # the files searched for, before there is an index

    @property
    def paths(self) -> list[str]:
        """The files, split from their stored form when first needed (a no-op needs none)."""
        if self._list is None:
            self._list = self._paths.decode(*_ENC).split("\0") if self.count else []
            if len(self._list) != self.count:
                raise ValueError("a proof of the wrong shape")
        return self._list

    @property
    def wanted(self) -> list[int] | None:
        """The wanted rules' indices, if every target the build named, every alias target and
        every default target named a declared alias, output, rule or invariant: then the
        declarations digest alone vouches for the graph, and the next build with the same digest
        need not build or check it. None if some target named a file by its existence."""
        return None if self._wanted is None else array("I", self._wanted).tolist()

    def position(self, path: str) -> int | None:
        """Where `path` is among the files, or None. The first few are searched for in the stored
        form: a build that changed a file or two needs only those, and an index of a million
        files costs a second and a half. Past those, the index is built."""
        if self._index is None:
            found = self._found
            if path in found:
                return found[path]
            if len(found) < SEARCHES:
                k = found[path] = self._search(path)
                return k
            self._index = dict(zip(self.paths, range(self.count)))
        return self._index.get(path)

    def _search(self, path: str) -> int | None:
        raw, name = self._paths, path.encode(*_ENC)
        if not name or b"\0" in name or not self.count:
            return None
        if raw.startswith(name + b"\0") or raw == name:
            return 0
        at = raw.find(b"\0" + name + b"\0")
        if at < 0:
            return self.count - 1 if raw.endswith(b"\0" + name) else None
        return raw.count(b"\0", 0, at) + 1

    def get(self, path: str) -> bytes | None:
        """The record of `path`, if the proof has it."""
        k = self.position(path)
        return None if k is None else self.record(k)

    def record(self, k: int) -> bytes:
        return self.records[k * RECORD : (k + 1) * RECORD]

    def digest(self, k: int) -> bytes:
        return self.records[k * RECORD + STAT_END : k * RECORD + DIGEST_END]

    def repack(self, generation: str, records: bytes) -> list[bytes]:
        """This proof with new records for the same files, as `write` takes it."""
        return _parts((generation, self.graph, self.dirs, self._wanted, self.in_order), self._paths, records)

    @staticmethod
    def pack(
        generation: str, graph: bytes, wanted: list[int] | None, in_order: bool, paths: list[str],
        records: bytes,
    ) -> list[bytes]:
        """`in_order`: the graph's (see `graph.Graph.in_order`), which the declarations decide."""
        dirs = sorted(_directories(paths))  # watched while it is checked
        packed = None if wanted is None else array("I", wanted).tobytes()
        meta = (generation, graph, dirs, packed, in_order)
        return _parts(meta, "\0".join(paths).encode(*_ENC), records)


def _directories(paths: list[str]) -> set[str]:
    """The directories of normalised paths: os.path.dirname's answers, several times faster."""
    dirs = {p.rpartition("/")[0] for p in paths}
    if "" in dirs:  # a file at the top: of the project (".") or of the file system ("/")
        dirs.discard("")
        dirs.update(os.path.dirname(p) or "." for p in paths if p.rfind("/") <= 0)
    return dirs


# A proof file: this header (a tag, then the sizes of the three parts), the marshalled
# (generation, graph, dirs, wanted, in_order), the paths, the records. The large parts are read and written
# as they are, without a copy into or out of one large object.
_HEADER = struct.Struct("<8sQQQ")
_TAG = b"bpproof3"


def _parts(meta: tuple, paths: bytes, records: bytes) -> list[bytes]:
    head = marshal.dumps(meta)
    return [_HEADER.pack(_TAG, len(head), len(paths), len(records)), head, paths, records]


def _file(state_dir: str, key: str) -> str:
    return os.path.join(state_dir, f"proof-{key}")


KEEP = 16  # proofs kept (one per request: Pipefile and targets); the oldest go first


def read(state_dir: str, key: str) -> Proof | None:
    """The proof stored for `key`, or None if there is none or it cannot be read whole."""
    try:
        with open(_file(state_dir, key), "rb") as f:
            tag, *sizes = _HEADER.unpack(f.read(_HEADER.size))
            parts = [f.read(n) for n in sizes]
            if tag != _TAG or [len(p) for p in parts] != sizes or f.read(1):
                return None
        return Proof(marshal.loads(parts[0]), parts[1], parts[2])
    except Exception:  # absent, unreadable or damaged: decide everything instead
        return None


def write(state_dir: str, key: str, parts: list[bytes]) -> None:
    """Store a proof (whole or not at all: written aside, then renamed over the old one)."""
    path = _file(state_dir, key)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return
    try:
        found = [e for e in os.scandir(state_dir) if e.name.startswith("proof-")]
    except OSError:
        return
    if len(found) > KEEP:
        found.sort(key=lambda e: e.stat().st_mtime_ns)
        for e in found[: len(found) - KEEP]:
            try:
                os.unlink(e.path)
            except OSError:
                pass


class _Watch:
    """inotify on the directories of a proof's files, from before the helper's first stat until the
    build has the answer: whatever changes a file meanwhile - the Pipefile, a C extension it calls,
    a process it starts, anyone - names it, and it is examined again. None of this on a system
    without inotify, or beyond its limits: `ok` is then False."""

    # IN_MODIFY IN_ATTRIB IN_CLOSE_WRITE IN_MOVED_FROM IN_MOVED_TO IN_CREATE IN_DELETE
    # IN_DELETE_SELF IN_MOVE_SELF, and IN_ONLYDIR
    MASK = 0x002 | 0x004 | 0x008 | 0x040 | 0x080 | 0x100 | 0x200 | 0x400 | 0x800 | 0x01000000
    LOST = 0x4000 | 0x400 | 0x800 | 0x8000  # IN_Q_OVERFLOW, a directory deleted or moved, IN_IGNORED

    def __init__(self) -> None:
        self.fd = -1
        self.dirs: dict[int, list[str]] = {}  # a directory reached by two names has one watch
        self.ok = False
        self._add = None
        if not sys.platform.startswith("linux"):
            return
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            self._add = libc.inotify_add_watch
        except (OSError, AttributeError):
            return self.close()
        self.ok = self.fd >= 0

    def arm(self, dirs: list[str]) -> dict[int, list[str]] | None:
        """Watch `dirs` (in the helper, before its first stat: adding a watch costs the kernel a
        walk over the directory's cached entries). Returns the directories of each watch, or None
        if one cannot be added (over the limit of watches, say)."""
        import ctypes

        for d in dirs:
            wd = self._add(self.fd, os.fsencode(d), self.MASK)  # type: ignore[misc]
            if wd < 0:
                if ctypes.get_errno() == 2:  # the directory is gone: its files are changed
                    continue
                return None
            self.dirs.setdefault(wd, []).append(d)
        return self.dirs

    def changed(self) -> set[str] | None:
        """The paths named by events since the start; None if some were lost (queue overflow, a
        watched directory deleted or moved): then nothing the helper saw can be relied on."""
        if not self.ok:
            return None
        names: set[str] = set()
        event = struct.Struct("iIII")
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return names
            except OSError:
                return None
            at = 0
            while at + event.size <= len(data):
                wd, mask, _, length = event.unpack_from(data, at)
                at += event.size
                name = data[at : at + length].rstrip(b"\0")
                at += length
                if mask & self.LOST:
                    return None
                if name:
                    for d in self.dirs.get(wd, ()):
                        names.add(os.fsdecode(name) if d == "." else d + "/" + os.fsdecode(name))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.ok = False


class Changes:
    """What the helpers found: `touched` files (new stat, same digest) and `changed` ones (a new
    digest, or gone), each with its new record (None when it is missing or not a regular file)."""

    def __init__(self) -> None:
        self.touched: dict[str, bytes] = {}
        self.changed: dict[str, bytes | None] = {}


BLOCK = 256  # files compared at once


def _examine(paths: list[str], records: bytes, first: int, last: int,
             found: dict[int, bytes | None]) -> None:
    """Add to `found` the files among paths[first:last] whose stat does not vouch for their
    recorded digest, each with its new record (None: missing or not a regular file).

    The no-op's tightest loop: a block of files whose stats all equal their trusted records is
    passed over in one comparison; a block with any difference is examined file by file."""
    stat, pack = os.stat, _pack
    for lo in range(first, last, BLOCK):
        hi = min(lo + BLOCK, last)
        a, b = lo * RECORD, hi * RECORD
        try:
            now = b"".join(
                [pack(s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for s in map(stat, paths[lo:hi])]
            )
        except (OSError, struct.error):
            now = b""
        if (
            now != b"".join([records[at : at + STAT_END] for at in range(a, b, RECORD)])
            or 0 in records[a + TRUSTED : b : RECORD]
        ):
            _examine_each(paths, records, lo, hi, found)


def _examine_each(paths: list[str], records: bytes, first: int, last: int,
                  found: dict[int, bytes | None]) -> None:
    stat, pack, vouches = os.stat, _pack, records.startswith
    at = first * RECORD - RECORD
    for k, path in enumerate(paths[first:last], first):
        at += RECORD
        try:
            s = stat(path)
            if vouches(pack(s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino), at) and records[at + TRUSTED]:
                continue
        except OSError:
            pass
        except struct.error:  # a timestamp beyond 64-bit nanoseconds
            now = pack_stat(s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino)
            if vouches(now, at) and records[at + TRUSTED]:
                continue
        recorded = time.time_ns()
        try:  # gone, not a regular file, or unreadable: changed (the build says what is wrong)
            st = stat_path(path)
            found[k] = None if st is None or st[0] < 0 else file_record(st, digest_path(path), recorded)
        except OSError:
            found[k] = None


CHUNK = 512  # files examined between two looks at where the other side has got to
_progress = struct.Struct("<qq")  # the helper's next file; the lowest file the parent has taken


_PENDING = object()


class Check:
    """A forked helper checks a proof's files from the first on while the Pipefile runs; once the
    build has its graph it takes files from the last one down until the two meet (a few may be
    examined twice: either look is a true one). `result()` gives the Changes, or None if anything
    went wrong (the build then decides everything itself).

    The helper holds the lock (the descriptor `holds`) while it looks, and lets go as soon as it
    has looked at its share: the Pipefile may run `pipe` itself. It then waits for the build to
    ask, looks again at whatever the inotify events named meanwhile, answers and exits. It owns
    the last reference to the inotify descriptor: closing one costs the kernel up to tens of
    milliseconds (a grace period), which is spent in the helper, after it has answered."""

    def __init__(self, proof: Proof, inline: bool = False, holds: int = -1) -> None:
        self.proof = proof
        self.pid = -1
        self.epoch = ""  # the lock's epoch while the helper holds it (see store.Lock)
        self._result: object = _PENDING
        # A small proof is checked by the build itself, under its lock, once the Pipefile has run:
        # no helper, no watch (forking and watching would cost more than the stat calls).
        self.inline = inline
        self._watching = inline
        if inline:
            return
        _reap()
        self.watch = _Watch()  # armed by the helper, before its first stat
        n = proof.count
        opened: list[int] = []
        try:
            self.shared = mmap.mmap(-1, _progress.size)
            opened += os.pipe()
            opened += os.pipe()
        except OSError:
            for fd in opened:
                os.close(fd)
            self.watch.close()
            return
        self.r, w, asked, self.ask = opened
        _progress.pack_into(self.shared, 0, 0, n)
        # Like the stat helper: Ctrl-C is the build's to handle; the helper only ends.
        quiet = {signal.SIGINT, signal.SIGTERM}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, quiet)
        build = os.getpid()
        try:
            self.pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            for fd in (self.r, w, self.ask, asked):
                os.close(fd)
            self.watch.close()
            return
        if self.pid == 0:  # the helper
            os.close(self.ask)
            reply_and_exit(self.r, w, lambda: self._helper(holds, asked, build))
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        os.close(w)
        os.close(asked)
        self._watching = self.watch.ok
        self.watch.close()  # not the last reference: the helper's is (see above)

    def _helper(self, holds: int, asked: int, build: int) -> tuple[bool, dict, list[int], dict]:
        watch = self.watch
        ok = watch.arm(self.proof.dirs) is not None if watch.ok else True
        found = self._forwards() if ok else {}
        if holds >= 0:
            os.close(holds)  # lets go of the lock
        self._wait_for_the_build(asked, build)
        looked: list[int] = []
        again: dict[int, bytes | None] = {}
        if ok and watch.ok:  # files changed since they were looked at are looked at again
            events = watch.changed()
            if events is None:
                ok = False
            elif events:
                paths, records = self.proof.paths, self.proof.records
                looked = [k for k, p in enumerate(paths) if p in events]
                for k in looked:
                    _examine(paths, records, k, k + 1, again)
        return ok, found, looked, again

    @staticmethod
    def _wait_for_the_build(asked: int, build: int) -> None:
        """Until the build has taken its share and asks (or is gone: end of file). A process the
        Pipefile forked may hold the build's end of the pipe too: a build that died is noticed by
        its pid no longer being this helper's parent. The pid is the one taken before the fork:
        asked here, the parent may already be whoever adopted the helper."""
        import select

        poll = select.poll()  # not select(): a descriptor may be numbered beyond 1024
        poll.register(asked, select.POLLIN)
        while not poll.poll(1000):
            if os.getppid() != build:
                raise SystemExit(1)  # reply_and_exit ends the helper, with no answer
        os.read(asked, 1)

    def _forwards(self) -> dict[int, bytes | None]:
        found: dict[int, bytes | None] = {}
        paths, records, shared = self.proof.paths, self.proof.records, self.shared
        k = 0
        while True:
            low = _progress.unpack_from(shared)[1]
            if k >= low:
                return found
            end = min(k + CHUNK, low)
            _examine(paths, records, k, end, found)
            k = end
            shared[0:8] = k.to_bytes(8, "little", signed=True)  # its own counter only

    def _backwards(self, found: dict[int, bytes | None]) -> None:
        records, shared = self.proof.records, self.shared
        low = self.proof.count
        while True:
            high = _progress.unpack_from(shared)[0]
            if low <= high:
                return
            first = max(low - CHUNK, high)
            shared[8:16] = first.to_bytes(8, "little", signed=True)
            _examine(self.proof.paths, records, first, low, found)
            low = first

    def result(self) -> Changes | None:
        """Share what is left of the helper's work, then gather what it found (once; the helper
        has let go of the lock and answered when this returns)."""
        if self._result is not _PENDING:
            return self._result  # type: ignore[return-value]
        self._result = self._gather()
        return self._result

    def _gather(self) -> Changes | None:
        if self.inline:
            found: dict[int, bytes | None] = {}
            _examine(self.proof.paths, self.proof.records, 0, self.proof.count, found)
            return self._changes(found)
        if self.pid <= 0:
            return None
        mine: dict[int, bytes | None] = {}
        chunks = []
        try:
            self._backwards(mine)
            os.write(self.ask, b".")
            while chunk := os.read(self.r, 1 << 20):
                chunks.append(chunk)
        except BaseException as e:
            os.kill(self.pid, signal.SIGKILL)  # not worth waiting for its answer
            chunks = []
            if not isinstance(e, Exception):
                raise
        finally:
            self._let_go()
        try:  # a whole answer, or none: a helper that died mid-way left a truncated one
            ok, found, looked, again = marshal.loads(b"".join(chunks))
        except (EOFError, ValueError, TypeError):
            return None
        if ok is not True or type(found) is not dict or type(again) is not dict:
            return None
        found.update(mine)
        for k in looked:
            found.pop(k, None)
        found.update(again)
        return self._changes(found)

    def _let_go(self) -> None:
        """Done with the helper: it is reaped now if it has exited, else by a later Check."""
        os.close(self.r)
        os.close(self.ask)
        _children.append(self.pid)
        self.pid = -1
        _reap()

    def _changes(self, found: dict[int, bytes | None]) -> Changes:
        """Sort what was found: the same digest under a new stat is a touch, anything else a change."""
        proof, changes = self.proof, Changes()
        for k, rec in found.items():
            path = proof.paths[k]
            if rec is not None and rec[STAT_END:DIGEST_END] == proof.digest(k):
                changes.touched[path] = rec
            else:
                changes.changed[path] = rec
        return changes

    @property
    def watching(self) -> bool:
        """Whether every change made while the Pipefile runs will be seen (else the audit hook
        is all there is). An inline check looks only after the Pipefile has run."""
        return self._watching

    def close(self) -> None:
        """Stop the helper if its answer is not wanted."""
        if self.pid > 0:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._let_go()


_children: list[int] = []  # helpers that have answered or been killed, not yet reaped


def _reap() -> None:
    for pid in list(_children):
        try:
            done = os.waitpid(pid, os.WNOHANG)[0] != 0
        except ChildProcessError:  # reaped already (SIGCHLD ignored, say)
            done = True
        if done:
            _children.remove(pid)
