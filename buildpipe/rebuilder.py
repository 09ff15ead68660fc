"""Is this rule stale, and why: contract §2 as reasons, not a bool, for `build`, `-n`, `-v` and `status`.

File contents are known through `FileStates`: stat first, the stored digest when the stat matches and
is not racy, a fresh hash otherwise.
"""

from __future__ import annotations

from collections import namedtuple

from .filesystem import DIGEST_END, DIRECTORY, STAT_END, TRUSTED, Stat, file_record, pack_stat
from .rules import Rule, shown
from .store import DIGEST_SIZE, RuleRecord, Store, paths_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from .filesystem import FileSystem

    class Records(Protocol):
        """File records by path (a dict, or a proof)."""

        def get(self, path: str) -> bytes | None: ...

MISSING = b"\0" * DIGEST_SIZE  # the digest of a file that does not exist
UNKNOWN = b"?" * DIGEST_SIZE  # a dry run's stand-in for an output that would be rebuilt
CHANGED = b"~" * DIGEST_SIZE  # recorded for an input whose stat changed while its rule ran
UNREADABLE = b"!" * DIGEST_SIZE  # a path that cannot be stat'ed or read, or is not a regular file


class Reason(namedtuple("Reason", "kind path detail", defaults=("", ""))):
    """Why a rule runs. kind: forced new action params inputs input upstream missing modified
    unreadable needed; path: the file concerned; detail: what went wrong reading it."""

    __slots__ = ()

    def __str__(self) -> str:
        path = shown(self.path)
        return {
            "forced": "forced",
            "new": "never built",
            "action": "action changed",
            "params": "params changed",
            "inputs": "its list of inputs changed",
            "input": f"input {path} changed",
            "upstream": f"input {path} would be rebuilt",
            "missing": f"output {path} missing",
            "modified": f"output {path} modified since it was built",
            "unreadable": f"output {path} cannot be read: {self.detail}",
            "needed": f"its temp files are needed by {path}",
        }[self.kind]


class FileStates:
    """Current digests of files for one build, stat-first, memoised.

    The store's file table caches (stat, digest); a file whose stat matches and was not racy when
    recorded is trusted without reading it. `prefetch` settles many paths in one tight loop, the
    way a no-op build spends most of its time.
    """

    def __init__(self, fs: FileSystem, store: Store) -> None:
        self.fs = fs
        self.store = store
        self.memo: dict[str, bytes] = {}
        self.start_ns = fs.now_ns()  # earlier than any read of this build: a safe "recorded" time
        self.hashed = 0
        self.errors: dict[str, str] = {}  # why a path is UNREADABLE
        self.vouched: Records | None = None  # records a proof vouches for (see `vouch`)
        self.unvouched: set[str] = set()

    def vouch(self, records: Records, except_for: set[str]) -> None:
        """Know the files of `records` (file records by path) by their digests without a stat,
        except those in `except_for`: a proof checked them all before the build."""
        self.vouched, self.unvouched = records, except_for

    def digest(self, path: str) -> bytes:
        """The content digest of `path`: MISSING if absent, UNREADABLE (see `errors`) if it is not a
        regular file or cannot be stat'ed or read."""
        d = self.memo.get(path)
        if d is not None:
            return d
        if self.vouched is not None and path not in self.unvouched:
            rec = self.vouched.get(path)
            if rec is not None:
                d = self.memo[path] = rec[STAT_END:DIGEST_END]
                return d
        try:
            st = self.fs.stat(path)
            rec = self.store.files.get(path) if st is not None and st[0] >= 0 else None
            if rec is not None and rec[TRUSTED] and rec[:STAT_END] == pack_stat(*st):  # type: ignore[misc]
                d = self.memo[path] = rec[STAT_END:DIGEST_END]
                return d
            return self._settle(path, st, None if st is None or st[0] < 0 else self.fs.digest(path))
        except OSError as e:
            return self._settle(path, None, e.strerror or str(e))

    def _settle(self, path: str, st: Stat | None, d: bytes | str | None) -> bytes:
        """Know `path` by what was read of it (see `filesystem.Hashed`), hashed afresh."""
        if isinstance(d, str):
            self.errors[path] = d
            d = UNREADABLE
        elif st is None:
            d = MISSING
            if path in self.store.files:
                self.store.drop_file(path)
        elif st[0] < 0:
            d = UNREADABLE
            self.errors[path] = "is a directory" if st == DIRECTORY else "is not a regular file"
        else:
            assert d is not None
            self.hashed += 1
            self.store.put_file(path, file_record(st, d, self.start_ns))
        self.memo[path] = d
        return d

    def prefetch(self, paths: list[str]) -> None:
        """Settle every path: in one tight loop of stat calls those whose stat vouches
        for their recorded digest (a no-op's work), then the others (new, changed, racy, missing,
        odd) all at once, which shares hashing many files with a helper process."""
        memo, files = self.memo, self.store.files
        known = [p for p in paths if p in files and p not in memo]
        for p, now in zip(known, self.fs.packed_stats(known)):
            if now is not None:
                rec = files[p]
                if rec[TRUSTED] and rec.startswith(now):
                    memo[p] = rec[STAT_END:DIGEST_END]
        rest = [p for p in paths if p not in memo]
        for p, (st, d) in zip(rest, self.fs.hash_files(rest)):
            self._settle(p, st, d)

    def set(self, path: str, digest: bytes) -> None:
        self.memo[path] = digest

    def forget(self, path: str) -> None:
        self.memo.pop(path, None)


NEW = Reason("new")  # shared: a first build gives it to every rule


def _split(digests: bytes) -> list[bytes]:
    return [digests[k : k + DIGEST_SIZE] for k in range(0, len(digests), DIGEST_SIZE)]


def reasons(
    rule: Rule,
    record: RuleRecord | None,
    input_digests: bytes,
    output_digests: bytes,
    action_fp: bytes,
    params_fp: bytes,
    forced: bool,
    errors: dict[str, str] | None = None,
) -> list[Reason]:
    """Why `rule` must run (contract §2); empty when it is up to date.

    Digests are concatenated, DIGEST_SIZE bytes per file, in the rule's order."""
    if forced:
        return [Reason("forced")]
    if record is None:
        if UNREADABLE not in _split(output_digests):
            return [NEW]
        return [NEW] + [
            Reason("unreadable", p, (errors or {}).get(p, ""))
            for p, now in zip(rule.outputs, _split(output_digests))
            if now == UNREADABLE
        ]
    inputs_key = paths_key(rule.inputs)
    outputs_key = paths_key(rule.outputs)
    if (
        record.input_digests == input_digests
        and record.output_digests == output_digests
        and record.action == action_fp
        and record.params == params_fp
        and record.inputs_key == inputs_key
        and record.outputs_key == outputs_key
    ):
        return []  # the common case, decided without a loop
    why: list[Reason] = []
    if record.action != action_fp:
        why.append(Reason("action"))
    if record.params != params_fp:
        why.append(Reason("params"))
    if record.inputs_key != inputs_key:
        why.append(Reason("inputs"))
    else:
        for path, now, then in zip(rule.inputs, _split(input_digests), _split(record.input_digests)):
            if now != then:
                why.append(Reason("upstream" if now == UNKNOWN else "input", path))
    if record.outputs_key != outputs_key:
        why.append(Reason("new"))
    else:
        for path, now, then in zip(rule.outputs, _split(output_digests), _split(record.output_digests)):
            if now == MISSING:
                why.append(Reason("missing", path))
            elif now == UNREADABLE:
                why.append(Reason("unreadable", path, (errors or {}).get(path, "")))
            elif now != then:
                why.append(Reason("modified", path))
    return why


def only_missing(why: list[Reason]) -> bool:
    """A temp rule whose files are merely gone is not stale by itself (contract §1)."""
    return bool(why) and all(r.kind == "missing" for r in why)
