"""The state database: one SQLite file under `.buildpipe/`, plus the lock that keeps builds apart.

On-disk format (schema 1):
  meta(key, value)                       'schema' = 1
  files(path, size, mtime, ctime, ino, digest, recorded)
      the last stat of a file and the xxh3-128 digest of its bytes; `recorded` is the clock
      (ns) just before that stat was taken, which tells whether the stat can be trusted (racy).
  rules(id, record)
      per rule (id = first output) what its last successful run was built from and produced:
      record = marshal((inputs, input_digests, action_fp, params_fp, outputs, output_digests)).

Everything is loaded in one query per table and written back in batched transactions; a rule's
record is written only after it succeeded, so a record present always describes real outputs.
Knows nothing of graphs or rules beyond those records.
"""

from __future__ import annotations

import errno
import fcntl
import marshal
import os
import sqlite3
from collections.abc import Callable
from typing import NamedTuple

from .errors import StoreError

SCHEMA = 1
DB_NAME = "state.db"
LOCK_NAME = "lock"

FileRecord = tuple[int, int, int, int, bytes, int]  # size, mtime, ctime, ino, digest, recorded


class RuleRecord(NamedTuple):
    inputs: tuple[str, ...]
    input_digests: tuple[bytes, ...]
    action: bytes
    params: bytes
    outputs: tuple[str, ...]
    output_digests: tuple[bytes, ...]


class Lock:
    """An exclusive flock on `.buildpipe/lock`, holding the owner's pid.

    The kernel drops it when the holder dies, however it dies, so it never outlives a killed build.
    """

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, LOCK_NAME)
        self.fd = -1

    def acquire(self, on_wait: Callable[[str], None] | None = None) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise StoreError(f"cannot lock {self.path}: {e.strerror}")
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def fds(self) -> list[int]:
        """Descriptors a forked worker must close, so the lock dies with this process."""
        return [self.fd] if self.fd >= 0 else []

    def release(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)  # closing drops the flock


class Store:
    """In-memory view of the state database, with pending writes flushed in batches."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._init_schema()
            self.files: dict[str, FileRecord] = {
                row[0]: row[1:] for row in self.db.execute("SELECT * FROM files")
            }
            self._rules: dict[str, bytes] = dict(self.db.execute("SELECT id, record FROM rules"))
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"the state database {path} cannot be used ({e}); deleting "
                f"{os.path.dirname(path) or '.'} is safe: the next build reruns what it needs"
            )
        self._dirty_files: dict[str, FileRecord | None] = {}
        self._dirty_rules: dict[str, bytes | None] = {}

    def _init_schema(self) -> None:
        db = self.db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, size INTEGER, "
                "mtime INTEGER, ctime INTEGER, ino INTEGER, digest BLOB, recorded INTEGER) "
                "WITHOUT ROWID"
            )
            db.execute("CREATE TABLE IF NOT EXISTS rules(id TEXT PRIMARY KEY, record BLOB) WITHOUT ROWID")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            db.execute("COMMIT")
            return
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        found = row[0] if row else "none"
        if found != str(SCHEMA):
            raise StoreError(
                f"the state database {self.path} has schema {found}, this buildpipe reads schema "
                f"{SCHEMA}; delete {os.path.dirname(self.path)} to start afresh (the next build "
                "reruns every rule it needs)"
            )

    # -- reading ----------------------------------------------------------------------------------

    def rule(self, rule_id: str) -> RuleRecord | None:
        blob = self._rules.get(rule_id)
        if blob is None:
            return None
        try:
            return RuleRecord(*marshal.loads(blob))
        except (ValueError, EOFError, TypeError):
            return None  # unreadable record: as if the rule never ran

    # -- writing (pending until flush) ------------------------------------------------------------

    def put_file(self, path: str, rec: FileRecord) -> None:
        self.files[path] = rec
        self._dirty_files[path] = rec

    def drop_file(self, path: str) -> None:
        if self.files.pop(path, None) is not None or path in self._dirty_files:
            self._dirty_files[path] = None

    def put_rule(self, rule_id: str, rec: RuleRecord) -> None:
        blob = marshal.dumps(tuple(rec), 4)
        self._rules[rule_id] = blob
        self._dirty_rules[rule_id] = blob

    def drop_rule(self, rule_id: str) -> None:
        if self._rules.pop(rule_id, None) is not None or rule_id in self._dirty_rules:
            self._dirty_rules[rule_id] = None

    @property
    def pending(self) -> bool:
        return bool(self._dirty_files or self._dirty_rules)

    def flush(self) -> None:
        """Write pending changes in one transaction."""
        if not self.pending:
            return
        files, self._dirty_files = self._dirty_files, {}
        rules, self._dirty_rules = self._dirty_rules, {}
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            put_f = [(p,) + r for p, r in files.items() if r is not None]
            del_f = [(p,) for p, r in files.items() if r is None]
            put_r = [(i, b) for i, b in rules.items() if b is not None]
            del_r = [(i,) for i, b in rules.items() if b is None]
            if put_f:
                db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?)", put_f)
            if del_f:
                db.executemany("DELETE FROM files WHERE path=?", del_f)
            if put_r:
                db.executemany("INSERT OR REPLACE INTO rules VALUES (?,?)", put_r)
            if del_r:
                db.executemany("DELETE FROM rules WHERE id=?", del_r)
            db.execute("COMMIT")
        except sqlite3.Error as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"cannot write the state database {self.path}: {e}")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.db.close()


def open_state(
    state_dir: str, on_wait: Callable[[str], None] | None = None, lock: bool = True
) -> tuple[Store, Lock]:
    """Create `state_dir` if needed, take the lock (waiting for another build), open the store.

    Without `lock` (dry runs, status), the store is only read: SQLite's WAL lets that run beside a
    build."""
    try:
        os.makedirs(state_dir, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the state directory {state_dir}: {e.strerror}")
    the_lock = Lock(state_dir)
    if lock:
        try:
            the_lock.acquire(on_wait)
        except OSError as e:
            raise StoreError(f"cannot lock {the_lock.path}: {e.strerror}")
    try:
        store = Store(os.path.join(state_dir, DB_NAME))
    except BaseException:
        the_lock.release()
        raise
    return store, the_lock
