"""The state database: one SQLite file under `.buildpipe/`, plus the lock that keeps builds apart.

On-disk format (schema 4), a snapshot plus a journal, both marshal-encoded:
  meta(key, value)          'schema' = 4; 'generation' = random hex, new with every commit that
                            changes a rule record (a proof names the generation it holds for; see
                            `proof`, whose files lie beside the database)
  snapshot(chunk, data)     marshal((files, rules)): the whole state, split in chunks of entries
  journal(seq, data)        marshal((files, rules)) per committed batch: entries set (a value) or
                            dropped (None) since the snapshot, applied in seq order
where
  files[path] = a packed file record (filesystem.file_record): the file's last stat, the xxh3-128
      digest of its bytes, and whether that stat vouches for the digest;
  rules[id]   = a packed rule record (`pack_rule`; id = the rule's first output): what its last
      successful run was built from and produced.
Records are flat bytes: a few objects per entry keep loading fast and memory small, and a rule is up
to date exactly when the record it would get now equals the one stored - one comparison.

Loading is a few large reads; a build appends one journal row per batch of finished rules, and a
build that wrote enough folds the journal into a new snapshot on close. Each write is one SQLite
transaction, so a kill at any moment loses at most the batch being written, and a rule's record is
written only after it succeeded: a record present always describes real outputs. A database of an
older schema is emptied (everything reruns once; schema 3 only gains its generation); a newer one
is refused.
Knows nothing of graphs or rules beyond those records.
"""

from __future__ import annotations

import errno
import fcntl
import marshal
import os
import time
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

import xxhash

from .errors import StoreError

TYPE_CHECKING = False  # typing and sqlite3 cost milliseconds of start-up: annotations only
if TYPE_CHECKING:
    import sqlite3

SCHEMA = 4
DB_NAME = "state.db"
LOCK_NAME = "lock"
EPOCH_SUFFIX = ".epoch"
STAT_SUFFIX = ".stat"  # state.db.stat: the generation, and the stat of the database that holds it
CHUNK_ENTRIES = 20_000  # entries per snapshot row: small blobs keep the peak memory of loading low
DIGEST_SIZE = 16

# What a rule's last successful run was built from and produced. Path lists are kept as a digest
# of the list (`paths_key`); digests of several files are concatenated, DIGEST_SIZE bytes each, in
# the rule's order: inputs_key, input_digests, action, params (fingerprints; b"" for no params),
# outputs_key, output_digests.
RuleRecord = namedtuple("RuleRecord", "inputs_key input_digests action params outputs_key output_digests")
NO_PARAMS = b"\0" * DIGEST_SIZE
_HEAD = 4 * DIGEST_SIZE + 4  # four digests, then the number of outputs


def pack_rule(
    inputs_key: bytes, input_digests: bytes, action: bytes, params: bytes, outputs_key: bytes,
    output_digests: bytes,
) -> bytes:
    """A rule record as stored: the keys and fingerprints, the output count, the output digests, then
    the input digests. Build the record a rule would get now and compare: equal means up to date."""
    return b"".join((
        inputs_key, action, params or NO_PARAMS, outputs_key,
        (len(output_digests) // DIGEST_SIZE).to_bytes(4, "little"), output_digests, input_digests,
    ))


def unpack_rule(raw: bytes) -> RuleRecord | None:
    if type(raw) is not bytes or len(raw) < _HEAD:
        return None
    d = DIGEST_SIZE
    end = _HEAD + d * int.from_bytes(raw[4 * d : _HEAD], "little")
    params = raw[2 * d : 3 * d]
    return RuleRecord(raw[:d], raw[end:], raw[d : 2 * d], b"" if params == NO_PARAMS else params,
                      raw[3 * d : 4 * d], raw[_HEAD:end])


def record_digests(raw: bytes) -> bytes:
    """A rule record's output digests, then its input digests."""
    return raw[_HEAD:]


def paths_key(paths: tuple[str, ...]) -> bytes:
    """Identifies a list of paths, order included."""
    return xxhash.xxh3_128_digest("\0".join(paths).encode("utf-8", "surrogateescape"))


def _new_generation() -> str:
    return os.urandom(16).hex()


def state_files(state_dir: str) -> list[str]:
    """The files buildpipe keeps in `state_dir`: no rule may write them."""
    db = os.path.join(state_dir, DB_NAME)
    lock = os.path.join(state_dir, LOCK_NAME)
    return [db, db + "-wal", db + "-shm", db + "-journal", db + STAT_SUFFIX, lock, lock + EPOCH_SUFFIX]


def _db_stat(path: str) -> str:
    """The stat of the database and its write-ahead log: any write to either changes it."""
    parts = [str(SCHEMA)]
    for p in (path, path + "-wal"):
        try:
            s = os.lstat(p)
            parts.append(f"{s.st_ino}:{s.st_size}:{s.st_mtime_ns}:{s.st_ctime_ns}")
        except OSError:
            parts.append("-")
    return " ".join(parts)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """An exclusive flock on `.buildpipe/lock`, holding the owner's pid.

    The kernel drops it when the holder dies, however it dies, so it never outlives a killed build.
    Each holder leaves a new random *epoch* in `lock.epoch` as soon as it has the lock, before it
    touches anything: one who held the lock, let go and takes it again knows whether anyone else
    held it meanwhile (`seen` differs from the `epoch` it left).
    """

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, LOCK_NAME)
        self.fd = -1
        self.seen = ""  # the epoch found on taking the lock
        self.epoch = ""  # the epoch left on taking it

    def acquire(self, on_wait: Callable[[str], None] | None = None) -> None:
        try:
            # Never follow a link: a planted .buildpipe/lock must not make us overwrite its target.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StoreError(f"{self.path} is a symbolic link; delete it (buildpipe makes its own)")
            raise
        if not self._try(fd):
            holder = self._holder(fd)
            if holder is not None:  # else the lock came free while we looked
                if on_wait is not None:
                    on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        self._new_epoch()

    def _new_epoch(self) -> None:
        path = self.path + EPOCH_SUFFIX
        try:
            with open(path, "rb") as f:
                self.seen = f.read(64).decode("ascii", "replace")
        except OSError:
            self.seen = ""
        self.epoch = os.urandom(16).hex()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            try:
                os.write(fd, self.epoch.encode())
            finally:
                os.close(fd)
        except OSError:
            self.epoch = ""  # no epoch: nobody can rely on this holder having been alone

    def _try(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise StoreError(f"cannot lock {self.path}: {e.strerror}")
            return False

    def _holder(self, fd: int) -> str | None:
        """The pid of the live holder, or None once we hold the lock ourselves.

        A new holder writes its pid an instant after taking the lock; until then the file is empty
        or names a finished build, so look again for a moment rather than name the wrong process."""
        for _ in range(50):
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            if text.isdigit() and _alive(int(text)):
                return text
            time.sleep(0.01)
            if self._try(fd):
                return None
        return text or "?"

    def fds(self) -> list[int]:
        """Descriptors a forked worker must close, so the lock dies with this process."""
        return [self.fd] if self.fd >= 0 else []

    def hand_over(self) -> None:
        """Close this process's descriptor only: a forked child that shares it keeps the lock until
        it exits (`proof`'s helper)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def release(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.ftruncate(fd, 0)  # no pid outlives its holder
            os.close(fd)  # closing drops the flock


class Store:
    """The whole state in memory, with pending changes appended to the journal in batches.

    Closing a store it wrote leaves its generation in `state.db.stat`, beside the stat of the
    database files. A store opened without loading, whose database files still have that stat, takes
    the generation from there and connects to SQLite only when it first needs to: a build that a
    proof shows to be a no-op never opens the database. Any write to the database since, by anyone,
    changes its stat (and a killed build never gets to write the file): the database is then opened
    and read as usual."""

    def __init__(self, path: str, readonly: bool = False, load: bool = True) -> None:
        self.path = path
        self.loaded = False
        self.generation: str | None = None  # see meta 'generation'; None: no proof can hold
        self.readonly = readonly  # without the lock: look, never write
        self.files: dict[str, bytes] = {}  # path -> packed file record
        self.rules: dict[str, bytes] = {}  # rule id -> packed rule record
        self._dirty_files: dict[str, bytes | None] = {}
        self._dirty_rules: dict[str, bytes | None] = {}
        self.note = ""  # said once to the user: e.g. the state was of an older schema and was reset
        self._snapshot_bytes = 0
        self._journal_bytes = 0
        self._journal_rows = 0
        self._db: sqlite3.Connection | None = None
        if not readonly and not load:
            self.generation = self._mirrored()
            if self.generation is not None:
                return
        self._connect()
        if load:
            self.load()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._connect()
        return self._db  # type: ignore[return-value]

    def _connect(self) -> None:
        import sqlite3

        try:
            if self.readonly:
                self._db = self._connect_readonly(self.path)
            else:
                self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._init_schema()
        except sqlite3.DatabaseError as e:
            raise self._unusable(e)

    def _mirrored(self) -> str | None:
        """The generation left in `state.db.stat`, if the database has not changed since."""
        if self.path == ":memory:":
            return None
        try:
            fd = os.open(self.path + STAT_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                text = os.read(fd, 512).decode("ascii")
            finally:
                os.close(fd)
        except (OSError, UnicodeDecodeError):
            return None
        generation, _, stat = text.partition(" ")
        return generation if generation and stat == _db_stat(self.path) else None

    def _mirror(self) -> None:
        """Leave the generation beside the stat of the database as this store leaves it."""
        path = self.path + STAT_SUFFIX
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            try:
                os.write(fd, f"{self.generation} {_db_stat(self.path)}".encode("ascii"))
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            for p in (tmp, path):  # a stale one would not match the database's stat anyway
                try:
                    os.unlink(p)
                except OSError:
                    pass

    def _unusable(self, e: sqlite3.DatabaseError) -> StoreError:
        import sqlite3

        path = self.path
        directory = os.path.dirname(path) or "."
        if isinstance(e, sqlite3.OperationalError) and not os.access(directory, os.W_OK):
            return StoreError(f"the state directory {directory} is not writable ({e})")
        return StoreError(
            f"the state database {path} cannot be used ({e}); deleting "
            f"{directory} is safe: the next build reruns what it needs"
        )

    def load(self) -> None:
        """Read the whole state into memory (once; a store opened with load=False starts empty)."""
        import sqlite3

        if self.loaded:
            return
        try:
            self._load()
        except sqlite3.DatabaseError as e:
            raise self._unusable(e)
        self.loaded = True

    @staticmethod
    def _connect_readonly(path: str) -> sqlite3.Connection:
        """Open for reading only, creating nothing; an absent database is an empty state.

        A WAL database needs its -shm file even to read; where the directory is read-only and no
        -wal file holds uncommitted pages, `immutable` reads the database file as it is."""
        import sqlite3
        import urllib.parse

        if not os.path.exists(path):
            return sqlite3.connect(":memory:", isolation_level=None)
        uri = "file:" + urllib.parse.quote(os.path.abspath(path))
        try:
            db = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=60, isolation_level=None)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            if os.path.exists(path + "-wal") and os.path.getsize(path + "-wal") > 0:
                raise
            return sqlite3.connect(uri + "?immutable=1", uri=True, isolation_level=None)

    def _init_schema(self) -> None:
        import sqlite3

        db = self.db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables and self.readonly:
            # Nothing recorded yet (or a first build is creating it): an empty state, in memory.
            db.close()
            self._db = db = sqlite3.connect(":memory:", isolation_level=None)
            db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")  # in memory
            db.execute("CREATE TABLE snapshot(chunk INTEGER PRIMARY KEY, data BLOB)")
            db.execute("CREATE TABLE journal(seq INTEGER PRIMARY KEY, data BLOB)")
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            return
        if "meta" not in tables:
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS snapshot(chunk INTEGER PRIMARY KEY, data BLOB)")
            db.execute("CREATE TABLE IF NOT EXISTS journal(seq INTEGER PRIMARY KEY, data BLOB)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', ?)", (_new_generation(),))
            db.execute("COMMIT")
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        found = row[0] if row else "none"
        if found == "3" and not self.readonly:  # the same records, without a generation: add it
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', ?)", (_new_generation(),))
            db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA),))
            db.execute("COMMIT")
            found = str(SCHEMA)
        if found == "3":
            return  # read as it is: no generation, so no proof holds
        if found.isdigit() and int(found) < SCHEMA:
            # Recorded by an older buildpipe: only a cache of what was built, so start afresh.
            self.note = (
                f"the state in {os.path.dirname(self.path)} was recorded by an older buildpipe "
                f"(schema {found}); starting afresh: every rule runs once"
            )
            if self.readonly:
                db.close()
                self._db = sqlite3.connect(":memory:", isolation_level=None)
                return self._init_schema()
            db.execute("BEGIN IMMEDIATE")
            for name in tables - {"meta"}:  # whatever that schema had
                if name.startswith("sqlite_"):
                    continue
                db.execute(f'DROP TABLE "{name}"')
            db.execute("CREATE TABLE snapshot(chunk INTEGER PRIMARY KEY, data BLOB)")
            db.execute("CREATE TABLE journal(seq INTEGER PRIMARY KEY, data BLOB)")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (_new_generation(),))
            db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA),))
            db.execute("COMMIT")
            return self._read_generation()
        if found == str(SCHEMA):
            return self._read_generation()
        if found != str(SCHEMA):
            raise StoreError(
                f"the state database {self.path} has schema {found}, this buildpipe reads schema "
                f"{SCHEMA}; delete {os.path.dirname(self.path)} to start afresh (the next build "
                "reruns every rule it needs)"
            )

    def _read_generation(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        if row is None and not self.readonly:  # lost somehow: any new one will do
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', ?)", (_new_generation(),))
            row = self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        self.generation = row[0] if row else None

    def _load(self) -> None:
        """Snapshot, then the journal on top, read in one transaction: a consistent view."""
        import sqlite3

        db = self.db
        db.execute("BEGIN")
        try:
            files, rules = self.files, self.rules
            for (data,) in db.execute("SELECT data FROM snapshot ORDER BY chunk"):
                self._snapshot_bytes += len(data)
                f, r = marshal.loads(data)
                files.update(f)
                rules.update(r)
            for (data,) in db.execute("SELECT data FROM journal ORDER BY seq"):
                self._journal_bytes += len(data)
                self._journal_rows += 1
                f, r = marshal.loads(data)
                for k, v in f.items():
                    if v is None:
                        files.pop(k, None)
                    else:
                        files[k] = v
                for k, v in r.items():
                    if v is None:
                        rules.pop(k, None)
                    else:
                        rules[k] = v
        except (ValueError, EOFError, TypeError) as e:
            raise sqlite3.DatabaseError(f"undecodable state: {e}")
        finally:
            db.execute("COMMIT")

    # -- reading ----------------------------------------------------------------------------------

    def rule(self, rule_id: str) -> RuleRecord | None:
        raw = self.rules.get(rule_id)
        return None if raw is None else unpack_rule(raw)

    # -- writing (pending until flush) ------------------------------------------------------------

    def put_file(self, path: str, rec: bytes) -> None:
        self.files[path] = rec
        self._dirty_files[path] = rec

    def drop_file(self, path: str) -> None:
        # Unloaded, the store cannot tell whether it holds an entry: drop it all the same.
        if self.files.pop(path, None) is not None or path in self._dirty_files or not self.loaded:
            self._dirty_files[path] = None

    def put_rule(self, rule_id: str, raw: bytes) -> None:
        """Record a rule's packed record (`pack_rule`)."""
        self.rules[rule_id] = raw
        self._dirty_rules[rule_id] = raw

    def drop_rule(self, rule_id: str) -> None:
        if self.rules.pop(rule_id, None) is not None or rule_id in self._dirty_rules or not self.loaded:
            self._dirty_rules[rule_id] = None

    @property
    def pending(self) -> bool:
        return bool(self._dirty_files or self._dirty_rules)

    def _write(self, statements: Iterable[tuple[str, tuple]]) -> None:
        """Run `statements` (consumed one at a time) in one transaction."""
        import sqlite3

        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            for sql, args in statements:
                db.execute(sql, args)
            db.execute("COMMIT")
        except BaseException as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"cannot write the state database {self.path}: {e}")
            raise

    def flush(self) -> None:
        """Append the pending changes to the journal, in one transaction."""
        if not self.pending:
            return
        if self.readonly:
            self._dirty_files, self._dirty_rules = {}, {}
            return
        data = marshal.dumps((self._dirty_files, self._dirty_rules), 4)
        statements: list[tuple[str, tuple]] = [("INSERT INTO journal(data) VALUES (?)", (data,))]
        generation = self.generation
        if self._dirty_rules:  # what any proof rested on has changed
            generation = _new_generation()
            statements.append(("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (generation,)))
        self._write(statements)
        self.generation = generation
        self._dirty_files = {}
        self._dirty_rules = {}
        self._journal_bytes += len(data)
        self._journal_rows += 1

    def compact(self) -> None:
        """Fold the journal into a new snapshot, written a chunk at a time (bounded extra memory)."""
        self.flush()
        if self.readonly or not self.loaded:
            return
        size = 0

        def statements() -> Iterator[tuple[str, tuple]]:
            nonlocal size
            yield "DELETE FROM snapshot", ()
            yield "DELETE FROM journal", ()
            files, rules = iter(self.files.items()), iter(self.rules.items())
            chunk = 0
            while True:
                f = dict(islice(files, CHUNK_ENTRIES))
                r = dict(islice(rules, CHUNK_ENTRIES))
                if chunk and not (f or r):
                    return
                data = marshal.dumps((f, r), 4)
                del f, r
                size += len(data)
                yield "INSERT INTO snapshot VALUES (?, ?)", (chunk, data)
                chunk += 1

        self._write(statements())
        self._snapshot_bytes, self._journal_bytes, self._journal_rows = size, 0, 0

    def close(self) -> None:
        """Flush; fold a long journal into the snapshot; close. Only the lock holder may call it."""
        try:
            appended = self.pending
            self.flush()
            if not self.loaded and appended and not self.readonly:
                # Built without loading (see `proof`): fold the journal once it has grown long.
                row = self.db.execute("SELECT count(*) FROM journal").fetchone()
                if row[0] > 64:
                    self.load()
            if self.loaded and (
                self._journal_rows > 64 or self._journal_bytes > self._snapshot_bytes // 4
            ):
                self.compact()
        except BaseException:
            if self._db is not None:
                self._db.close()
            raise
        if self._db is not None:
            self._db.close()
            if not self.readonly and self.generation is not None and self.path != ":memory:":
                self._mirror()


def open_state(
    state_dir: str, on_wait: Callable[[str], None] | None = None, lock: bool = True,
    load: bool = True,
) -> tuple[Store, Lock]:
    """Create `state_dir` if needed, take the lock (waiting for another build), open the store.

    Without `lock` (dry runs, status), the store is only read: SQLite's WAL lets that run beside a
    build."""
    if lock:
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
        store = Store(os.path.join(state_dir, DB_NAME), readonly=not lock, load=load)
    except BaseException:
        the_lock.release()
        raise
    return store, the_lock
