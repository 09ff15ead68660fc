"""The one build loop: decide rule by rule in dependency order, run what is stale, record what ran.

Deciding is pure (rebuilder); doing goes through an Executor; `pipe build -n`, `pipe status` and
`pipe watch` all drive this same loop. States of a wanted rule:

  WAITING   some producer is not settled yet
  UPTODATE  nothing changed: settled without running
  DEFERRED  a temp rule whose files are merely missing: settled, consumers see its recorded digests;
            it runs only if a consumer must run (it is then "materialised")
  QUEUED    must run, waiting for a free worker or for deferred temp producers to be materialised
  RUNNING   in a worker
  BUILT     ran successfully and is recorded
  FAILED    ran and failed; nothing recorded, consumers BLOCKED
  BLOCKED   not run because something it needs failed (or the build is stopping)
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable

from .executor import NOT_STARTED, Result
from .filesystem import STAT_END, TRUSTED, file_record, is_racy, recorded_stat
from .fingerprint import Fingerprinter, params_fingerprint
from .graph import Graph, describe
from .proof import RECORD, Changes, Check, Proof, declarations
from .proof import write as write_proof
from .rebuilder import CHANGED, MISSING, UNKNOWN, UNREADABLE, FileStates, Reason, only_missing, reasons
from .rules import Rule, shown
from .store import DIGEST_SIZE, Store, pack_rule, paths_key, record_digests, unpack_rule

TYPE_CHECKING = False

WAITING, UPTODATE, DEFERRED, QUEUED, RUNNING, BUILT, FAILED, BLOCKED = range(8)
DECIDE_BATCH = 200  # ready rules decided between starting rules (see Build.run)
FLUSH_INTERVAL = 0.05  # seconds between store commits while rules finish
FEW_TOUCHES = 16  # touched files a no-op records in its proof only (see `settled`)
REFRESH_MAX_BYTES = 1 << 20  # larger outputs are left to be re-hashed if the next build needs them


class BuildOptions:
    """What `pipe build` was asked for."""

    def __init__(
        self,
        targets: list[str] | None = None,  # None: the default targets, else every rule
        keep_going: bool = False,
        dry_run: bool = False,
        force_all: bool = False,
        force: list[str] | None = None,
        shuffle: int | None = None,  # a seed: start ready rules in a random order
    ) -> None:
        self.targets = targets
        self.keep_going = keep_going
        self.dry_run = dry_run
        self.force_all = force_all
        self.force = force or []
        self.shuffle = shuffle


class BuildSummary:
    """What a build did, for the report and the exit status."""

    def __init__(self, wanted: int = 0) -> None:
        self.wanted = wanted
        self.ran: list[int] = []
        self.failed: list[tuple[int, Result]] = []
        self.blocked = 0
        self.up_to_date = 0
        self.interrupted = 0  # the signal number that stopped the build
        self.would_run: list[tuple[int, list[Reason]]] = []
        self.seconds = 0.0
        self.proven: tuple[int, int] | None = None  # from a proof: (files checked, files changed)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


if TYPE_CHECKING:
    from typing import Protocol

    from .executor import Executor
    from .filesystem import FileSystem

    class Reporter(Protocol):
        def begin(self, total: int) -> None: ...
        def started(self, rule: Rule, why: list[Reason]) -> None: ...
        def finished(self, rule: Rule, result: Result, seconds: float, done: int) -> None: ...
        def progress(self, done: int, total: int, running: list[Rule]) -> None: ...
        def end(self, summary: BuildSummary) -> None: ...


class MissingSourceError(Exception):
    """A source the build needs is absent, not a file, or unreadable."""

    def __init__(self, path: str, rule: Rule, what: str) -> None:
        super().__init__(f"source {shown(path)} {what}; needed by rule {describe(rule)}")
        self.where = rule.where


def holds(store: Store, proof: Proof) -> bool:
    """Whether the store is as the proof found it: no rule record has changed since."""
    return store.generation is not None and store.generation == proof.generation


def settled(
    store: Store, key: str, proof: Proof, changes: Changes, wanted: int, reporter: Reporter, t0: float
) -> BuildSummary:
    """The build of `wanted` rules when the proof holds and no file changed: all are up to date. A
    file that was only touched gets its new record in the proof. The store gets them too when
    there are many (a checkout, say): a build that decides every rule would hash them all again.
    A few it would hash again at little cost, where writing them would cost this build opening
    SQLite (a tenth of a no-op at ten thousand rules)."""
    if changes.touched:
        records = bytearray(proof.records)
        for p, rec in changes.touched.items():
            k = proof.position(p)
            if k is not None:  # it is: the check found it there
                records[k * RECORD : (k + 1) * RECORD] = rec
            if len(changes.touched) > FEW_TOUCHES:
                store.put_file(p, rec)
        write_proof(os.path.dirname(store.path), key, proof.repack(proof.generation, bytes(records)))
    summary = BuildSummary(wanted=wanted)
    summary.proven = (proof.count, 0)
    reporter.begin(wanted)
    summary.up_to_date = wanted
    summary.seconds = time.perf_counter() - t0
    reporter.end(summary)
    return summary


class Build:
    decide_batch = DECIDE_BATCH  # ready rules decided between starting rules

    def __init__(
        self,
        graph: Graph,
        store: Store,
        fs: FileSystem,
        make_executor: Callable[[], Executor],
        reporter: Reporter,
        options: BuildOptions,
        fingerprinter: Fingerprinter | None = None,
        proof: tuple[str, Check | None] | None = None,
        declared: bytes | None = None,
    ) -> None:
        self.graph = graph
        self.rules = graph.rules
        self.store = store
        self.fs = fs
        self.make_executor = make_executor
        self.reporter = reporter
        self.opts = options
        self.fp = fingerprinter or Fingerprinter()
        self.states = FileStates(fs, store)
        self.signal = 0
        # The request's proof key and the check of its stored proof (see `proof`): None for a build
        # that neither uses nor writes proofs (dry runs, status, watch).
        self.proof_key: str | None = proof[0] if proof is not None else None
        self.proof_check: Check | None = proof[1] if proof is not None else None
        self.declared = declared  # the declarations digest, if already known (see `proof`)
        self._action_fps: dict[int, bytes] = {}  # by id: an action need not be hashable
        self.proven: Proof | dict[str, bytes] = {}  # deciding from a proof: its file records

    def _action_fp(self, action: object) -> bytes:
        """An action's fingerprint, computed once per action per build."""
        fp = self._action_fps.get(id(action))
        if fp is None:
            fp = self._action_fps[id(action)] = self.fp.action(action)
        return fp

    # -- planning ---------------------------------------------------------------------------------

    def _targets(self) -> tuple[list[Rule], bool]:
        """The rules to build, and whether they were named (rather than "everything")."""
        g = self.graph
        targets = self.opts.targets
        if targets is None:
            targets = g.default_targets()
        if targets is None:
            # Everything: temp rules are built only for their consumers, never for themselves.
            return [r for r in g.rules if not r.temp], False
        return g.resolve(targets), True

    def _check_sources(self, wanted: list[int]) -> None:
        """Read the state of every file the build looks at, then refuse a missing source."""
        producer = self.graph.producer
        rules = self.rules
        sources: dict[str, Rule] = {}  # each source, with the first rule that needs it
        outputs: list[str] = []
        for i in wanted:
            r = rules[i]
            outputs += r.outputs
            for p in r.inputs:
                if p not in producer and p not in sources:
                    sources[p] = r
        # Tight loops of stat calls first (most of a no-op is this), sources first: a missing one
        # is refused before any output is hashed.
        self.states.prefetch(list(sources))
        for p, r in sources.items():
            self._refuse_missing(p, r)
        self.states.prefetch(outputs)

    def _refuse_missing(self, path: str, rule: Rule) -> None:
        d = self.states.digest(path)
        if d == MISSING:
            raise MissingSourceError(path, rule, "does not exist")
        if d == UNREADABLE:
            why = self.states.errors.get(path, "")
            if why.startswith("is "):
                raise MissingSourceError(path, rule, f"{why}; an input must be a file")
            raise MissingSourceError(path, rule, f"cannot be read ({why})")

    # -- the proof (see `proof`) -----------------------------------------------------------------

    def _use_proof(self, graph_fp: bytes) -> tuple[Proof, Changes] | None:
        """The stored proof and what changed since, if it holds for this build."""
        check = self.proof_check
        if check is None:
            return None
        self.proof_check = None
        changes = check.result()
        proof = check.proof
        if changes is None or proof.graph != graph_fp or self.opts.force_all or self.opts.force:
            return None
        return (proof, changes) if holds(self.store, proof) else None

    def _start_from_proof(
        self, wanted: list[int], proof: Proof, changes: Changes
    ) -> tuple[bytearray, list[int]]:
        """Know the proof's files by their proven records, except the changed ones, read afresh
        (as the helper read them). Return the rules to decide, `dirty` (those that read or write a
        changed file), and the wanted rules that may run: those and every rule downstream of them,
        in order. The rest are up to date: the proof holds for them whatever the dirty ones do.
        The store is not loaded: the dirty rules are decided against the proof (whose digests are
        what their records hold), and what runs is appended to the journal as usual."""
        store = self.store
        self.proven = proof
        for p, rec in changes.touched.items():
            store.put_file(p, rec)
        for p, new in changes.changed.items():
            if new is not None:
                store.put_file(p, new)  # digest() trusts it unless it was racy
        changed = set(changes.changed)
        self.states.vouch(proof, changed)
        rules, producer = self.rules, self.graph.producer
        dirty = bytearray(len(rules))
        cone: set[int] = set()
        hot = set(changed)  # the changed files, then the outputs of every rule in the cone
        for p in changed:
            r = producer.get(p)
            if r is not None:
                dirty[r.index] = 1
                cone.add(r.index)
                hot.update(r.outputs)
        for i in wanted:
            r = rules[i]
            if hot.isdisjoint(r.inputs):
                continue
            if not changed.isdisjoint(r.inputs):
                dirty[i] = 1
                for p in changed.intersection(r.inputs):
                    if p not in producer:
                        self._refuse_missing(p, r)
            cone.add(i)  # reads a changed file, or is downstream of a rule that does
            hot.update(r.outputs)
        if not proof.in_order:  # a consumer may come before its producer: take every rule
            return dirty, wanted
        return dirty, sorted(cone)

    def _proof_reasons(self, r: Rule) -> list[Reason]:
        """Why a rule decided against the proof must run: each file whose digest is not the
        proven one, which is the digest its record holds (the proof rests on those records)."""
        digest, proven, why = self.states.digest, self.proven, []
        for p in r.inputs:
            rec = proven.get(p)
            if rec is None or digest(p) != rec[STAT_END:TRUSTED]:
                why.append(Reason("input", p))
        for p in r.outputs:
            rec, now = proven.get(p), digest(p)
            if now == MISSING:
                why.append(Reason("missing", p))
            elif now == UNREADABLE:
                why.append(Reason("unreadable", p, self.states.errors.get(p, "")))
            elif rec is None or now != rec[STAT_END:TRUSTED]:
                why.append(Reason("modified", p))
        return why

    def _unlike_proven(self, paths: tuple[str, ...], digests: list[bytes]) -> bool:
        """Whether any of `paths` now has another digest than the proven one."""
        get = self.proven.get
        return any((rec := get(p)) is None or rec[STAT_END:TRUSTED] != d for p, d in zip(paths, digests))

    def _proof_paths(self, wanted: list[int]) -> list[str]:
        rules = self.rules
        return list(dict.fromkeys([p for i in wanted for p in (*rules[i].outputs, *rules[i].inputs)]))

    def _write_proof(
        self, graph_fp: bytes, wanted: list[int], ran: list[int], proof: Proof | None, changes: Changes | None
    ) -> None:
        """Every wanted rule is up to date: record what that rests on, if each rule that ran now has
        the very record it would get (an input that changed while it ran, say, leaves no proof).
        From a proof, only the files that changed, were touched or were rebuilt get new records."""
        memo, store, rules = self.states.memo, self.store, self.rules
        stored_rule = store.rules.get
        for i in ran:
            # Its record's paths and fingerprints are this build's (it ran in it): compare digests.
            r = rules[i]
            raw = stored_rule(r.outputs[0])
            outs = b"".join([memo.get(p, MISSING) for p in r.outputs])
            ins = b"".join([memo.get(p, MISSING) for p in r.inputs])
            if raw is None or record_digests(raw) != outs + ins:
                return
        files_get = store.files.get
        unproven = (MISSING, UNREADABLE, UNKNOWN, CHANGED)

        def record(p: str, old: bytes | None) -> bytes | None:
            d = memo.get(p)
            if d is None and old is not None:  # touched, no rule read it: its proven digest
                d = self.states.digest(p)
            if d is None or d in unproven:
                return None
            rec = files_get(p)
            if rec is not None and rec[STAT_END:TRUSTED] == d:
                return rec
            if old is not None and old[STAT_END:TRUSTED] == d:
                return old
            return bytes(STAT_END) + d + b"\0"  # no stat vouches for it: the next build hashes it

        store.flush()  # its generation is the one the proof holds for
        generation = store.generation
        if generation is None or store.readonly:
            return
        key, state_dir = self.proof_key or "", os.path.dirname(store.path)
        if proof is not None and changes is not None:
            renewed = {*changes.changed, *changes.touched, *(o for i in ran for o in rules[i].outputs)}
            patched = bytearray(proof.records)
            for p in renewed:
                k = proof.position(p)
                if k is not None:
                    rec = record(p, proof.record(k))
                    if rec is None:
                        return
                    patched[k * RECORD : (k + 1) * RECORD] = rec
            write_proof(state_dir, key, proof.repack(generation, bytes(patched)))
            return
        paths = self._proof_paths(wanted)
        records = bytearray()
        for p in paths:
            rec = record(p, None)
            if rec is None:
                return
            records += rec
        g = self.graph
        named = [*(self.opts.targets or ()), *(g.default_targets() or ())]  # settings' default, if any
        named += [t for ts in g.aliases.values() for t in ts]
        named += g.declared_default[0] if g.declared_default is not None else []  # checked all the same
        plain = wanted if g.declared_only(named) else None
        packed = Proof.pack(generation, graph_fp, plain, g.in_order, paths, bytes(records))
        write_proof(state_dir, key, packed)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> BuildSummary:
        t0 = time.perf_counter()
        g, rules, opts = self.graph, self.rules, self.opts
        targets, named = self._targets()
        target_ids = {r.index for r in targets} if named else set()
        check = self.proof_check
        if self.declared is not None and check is not None and check.proof.wanted is not None:
            wanted = check.proof.wanted  # the same declarations as the proof's: the same closure
        else:
            wanted = g.closure(targets)
        any_temp = any(r.temp for r in g.unusual) and any(rules[i].temp for i in wanted)
        summary = BuildSummary(wanted=len(wanted))
        graph_fp = proof = changes = None
        dirty: bytearray | None = None  # with a proof: the rules to decide; the others are up to date
        considered = wanted  # the rules the loop below visits; with a proof, those that may run
        if self.proof_key is not None and not opts.dry_run and not any_temp:
            graph_fp = self.declared or declarations(
                g.rules, g.unusual, g.aliases, g.invariants, g.default_targets(), wanted, self._action_fp,
                params_fingerprint,
            )
            proven = self._use_proof(graph_fp) if graph_fp is not None else None
            if proven is not None:
                proof, changes = proven
                if not changes.changed:  # nothing to decide: every wanted rule is up to date
                    return settled(self.store, self.proof_key or "", proof, changes, len(wanted),
                                   self.reporter, t0)
                summary.proven = (proof.count, len(changes.changed))
                dirty, considered = self._start_from_proof(wanted, proof, changes)
        if self.proof_check is not None:  # not used after all
            self.proof_check.close()
            self.proof_check = None
        if dirty is None:
            self.store.load()
            self._check_sources(wanted)
        forced = {r.index for r in g.resolve(opts.force)} if opts.force else set()

        n = len(rules)
        state = bytearray(n)  # WAITING ... BLOCKED
        settled_flag = bytearray(n)  # consumers were told this rule is decided
        # Temp rules whose files are gone: until they run again, consumers see their recorded
        # output digests (a materialised temp rule regenerates those very bytes).
        deferred = bytearray(n)
        # Lists indexed by rule, not dicts: a few bytes a rule instead of a hundred.
        consumers: list[list[int] | None] = [None] * n
        waiting = [0] * n
        inside = None if considered is wanted else set(considered)  # the others are up to date
        # With a proof, the producers of the few rules it considers, not of them all.
        deps_of = g.deps.__getitem__ if dirty is None else g.deps_of
        for i in considered:
            deps = deps_of(i)
            if inside is not None:
                deps = tuple(d for d in deps if d in inside)
            waiting[i] = len(deps)
            for d in deps:
                c = consumers[d]
                if c is None:
                    consumers[d] = [i]
                else:
                    c.append(i)
        ready = deque(i for i in considered if waiting[i] == 0)
        runnable: deque[int] = deque()
        why: dict[int, list[Reason]] = {}
        blockers: dict[int, int] = {}  # rule -> materialisations it still waits for
        mat_waiters: dict[int, list[int]] = {}
        snapshots: dict[int, bytes] = {}
        input_stats: dict[int, list[bytes | None]] = {}  # packed, as recorded when it started
        started_at: dict[int, float] = {}
        running: dict[int, Rule] = {}
        store, states, fs = self.store, self.states, self.fs
        dry = opts.dry_run
        force_all = opts.force_all
        done = len(wanted) - len(considered)
        stopping = False
        executor: Executor | None = None
        rng = None
        if opts.shuffle is not None:
            import random

            rng = random.Random(opts.shuffle)
        self.reporter.begin(len(wanted))

        memo_get, digest = states.memo.get, states.digest

        def digests(paths: tuple[str, ...]) -> bytes:
            """Current digests, concatenated. While a temp rule is deferred, the memo holds its
            recorded output digests: its consumers are judged as if its files were there."""
            return b"".join([memo_get(p) or digest(p) for p in paths])

        def show_recorded(i: int) -> None:
            rec = store.rule(rules[i].outputs[0])
            for k, o in enumerate(rules[i].outputs):
                states.set(o, rec.output_digests[k * DIGEST_SIZE : (k + 1) * DIGEST_SIZE] if rec else MISSING)

        def settle(i: int) -> None:
            nonlocal done
            settled_flag[i] = 1
            done += 1
            for c in consumers[i] or ():
                waiting[c] -= 1
                if waiting[c] == 0:
                    ready.append(c)
            if any_temp and not dry:
                for d in deps_of(i):
                    if rules[d].temp:
                        delete_temp_if_done(d, (UPTODATE, BUILT))

        def delete_temp_if_done(d: int, finished: tuple[int, ...]) -> None:
            """Temp files go once every consumer in this build finished successfully."""
            if d in target_ids or state[d] not in (UPTODATE, BUILT):
                return
            if all(state[c] in finished for c in consumers[d] or ()):
                for o in rules[d].outputs:
                    fs.remove(o)
                    store.drop_file(o)
                state[d] = DEFERRED  # its record now stands for its deleted files
                deferred[d] = 1
                show_recorded(d)

        stored_rule = store.rules.get
        action_fp = self._action_fp
        proof_reasons = self._proof_reasons
        proven_get = self.proven.get

        def evaluate(i: int) -> None:
            r = rules[i]
            if dirty is not None:  # deciding from a proof
                if not dirty[i]:  # it holds for this rule
                    state[i] = UPTODATE
                    settle(i)
                    return
                w = proof_reasons(r)
                if w:
                    why[i] = w
                    must_run(i)
                else:
                    state[i] = UPTODATE
                    settle(i)
                return
            raw = stored_rule(r.outputs[0])
            paths = r.inputs
            ins = (memo_get(paths[0]) or digest(paths[0])) if len(paths) == 1 else digests(paths)
            paths = r.outputs
            outs = (memo_get(paths[0]) or digest(paths[0])) if len(paths) == 1 else digests(paths)
            afp = action_fp(r.action)
            pfp = b"" if r.params is None else params_fingerprint(r.params)
            if (
                raw is not None
                and not (force_all or i in forced)
                and raw == pack_rule(paths_key(r.inputs), ins, afp, pfp, paths_key(r.outputs), outs)
            ):
                w = []  # up to date: the record it would get now is the one it has
            else:
                rec = None if raw is None else unpack_rule(raw)
                w = reasons(r, rec, ins, outs, afp, pfp, force_all or i in forced, states.errors)
            if not w:
                state[i] = UPTODATE
                settle(i)
            elif r.temp and only_missing(w) and i not in target_ids:
                state[i] = DEFERRED
                deferred[i] = 1
                show_recorded(i)
                settle(i)
            else:
                if r.temp:  # its files being gone is normal, not news
                    w = [x for x in w if x.kind != "missing"] or w
                why[i] = w
                must_run(i)

        def must_run(i: int) -> None:
            """Queue i once the deferred temp rules it reads from have been materialised."""
            deps = deps_of(i)
            if any(state[d] in (FAILED, BLOCKED) for d in deps):
                # Only a deferred temp rule can have failed before its consumer was decided.
                state[i] = BLOCKED
                summary.blocked += 1
                block(i)
                return
            state[i] = QUEUED
            pending = 0
            for d in deps:
                if state[d] == DEFERRED:
                    why[d] = [Reason("needed", rules[i].outputs[0])]
                    must_run(d)
                    if state[d] == BLOCKED:
                        state[i] = BLOCKED
                        summary.blocked += 1
                        block(i)
                        return
                if state[d] in (QUEUED, RUNNING):
                    mat_waiters.setdefault(d, []).append(i)
                    pending += 1
            blockers[i] = pending
            if pending == 0:
                runnable.append(i)

        def block(i: int) -> None:
            """Everything downstream of a failure stays unbuilt.

            A temp rule that was deferred had settled: its consumers not decided yet may well be up
            to date (they see its recorded digests); only those waiting for its files are blocked,
            and a later one that must run is blocked by must_run."""
            stack = mat_waiters.pop(i, [])
            if not deferred[i]:
                stack += consumers[i] or ()
            while stack:
                c = stack.pop()
                if state[c] in (WAITING, QUEUED):
                    state[c] = BLOCKED
                    summary.blocked += 1
                    if not deferred[c]:
                        stack.extend(consumers[c] or ())
                    stack.extend(mat_waiters.pop(c, []))

        def dispatch(i: int) -> None:
            nonlocal executor
            r = rules[i]
            snapshots[i] = digests(r.inputs)  # before it runs
            files_get = store.files.get
            input_stats[i] = [
                (rec[:STAT_END] if (rec := files_get(p) or proven_get(p)) else None) for p in r.inputs
            ]
            # Its outputs' digests stay as they are until it completes: only the consumers of a
            # materialised temp rule can be decided meanwhile, and they must see its recorded ones.
            state[i] = RUNNING
            w = why[i]
            if dry:
                summary.would_run.append((i, w))
                complete(Result(i, True, None, "", ""))
                return
            if executor is None:
                executor = self.make_executor()
            running[i] = r
            started_at[i] = time.perf_counter()
            self.reporter.started(r, w)
            executor.start(r)

        def complete(res: Result) -> None:
            i = res.rule
            r = rules[i]
            running.pop(i, None)
            seconds = time.perf_counter() - started_at.pop(i, time.perf_counter())
            why.pop(i, None)
            if res.error == NOT_STARTED:  # handed back unrun: another rule failed, the build stops
                state[i] = BLOCKED
                summary.blocked += 1
                block(i)
                return
            if res.seconds is not None:
                seconds = res.seconds
            if not res.ok:
                state[i] = FAILED
                summary.failed.append((i, res))
                store.drop_rule(r.outputs[0])  # never trusted again until it succeeds
                block(i)
                self.reporter.finished(r, res, seconds, done)
                return
            summary.ran.append(i)
            if dry:
                for o in r.outputs:
                    states.set(o, UNKNOWN)
            else:
                assert res.outputs is not None
                digests = []
                for o, rec in zip(r.outputs, res.outputs):  # packed file records
                    d = rec[STAT_END:TRUSTED]
                    store.put_file(o, rec)
                    states.set(o, d)
                    digests.append(d)
                store.put_rule(
                    r.outputs[0],
                    pack_rule(
                        paths_key(r.inputs),
                        self._changed_while_running(
                            r.inputs, snapshots.pop(i), input_stats.pop(i), res.inputs
                        ),
                        action_fp(r.action),
                        params_fingerprint(r.params),
                        paths_key(r.outputs),
                        b"".join(digests),
                    ),
                )
            state[i] = BUILT
            # Its consumers see its new outputs: decide them, unless it made the very files the
            # proof holds for (an early cutoff: what they read is as proven).
            if dirty is not None and (dry or self._unlike_proven(r.outputs, digests)):
                for c in consumers[i] or ():
                    dirty[c] = 1
            for c in mat_waiters.pop(i, ()):
                if state[c] == QUEUED:
                    blockers[c] -= 1
                    if blockers[c] == 0:
                        runnable.append(c)
            if not settled_flag[i]:
                settle(i)
            if not dry:
                self.reporter.finished(r, res, seconds, done)

        def start_runnable() -> None:
            while runnable and not stopping and not self.signal:
                if executor is not None and not executor.has_room():
                    break
                if rng is not None:  # --shuffle: any ready rule may go next
                    k = rng.randrange(len(runnable))
                    runnable.rotate(-k)
                i = runnable.popleft()
                if state[i] == QUEUED:
                    dispatch(i)

        old_handlers = self._install_signals()
        last_flush = last_progress = time.perf_counter()
        try:
            # Ready rules are decided a batch at a time, so that the first rules start while the rest
            # are decided. All at once with --shuffle (any of them may start first), and once the
            # build is stopping (none will start, and the summary counts the up-to-date ones).
            batch = self.decide_batch if rng is None else n
            while not self.signal:
                decided = 0
                while ready and (decided < batch or stopping):
                    i = ready.popleft()
                    if state[i] == WAITING:
                        evaluate(i)
                    decided += 1
                start_runnable()
                if not running:
                    if stopping or not (ready or runnable):
                        break
                    continue
                assert executor is not None
                results = executor.wait(0 if ready and not stopping else 0.2)
                if opts.keep_going or all(res.ok for res in results):
                    start_runnable()  # the freed workers get their next rules before the bookkeeping
                for res in results:
                    complete(res)
                    if not res.ok and not opts.keep_going:
                        stopping = True
                now = time.perf_counter()
                if store.pending and now - last_flush >= FLUSH_INTERVAL:
                    store.flush()
                    last_flush = now
                if now - last_progress >= 0.1:
                    self.reporter.progress(done, len(wanted), list(running.values()))
                    last_progress = now
            if not dry and not self.signal:
                if any_temp:
                    for d in wanted:
                        if rules[d].temp:
                            delete_temp_if_done(d, (UPTODATE, BUILT, DEFERRED))
                self._refresh_racy(summary.ran)
        finally:
            self._restore_signals(old_handlers)
            if executor is not None:
                executor.shutdown(kill=bool(running))
            if not dry:
                store.flush()
        ran = set(summary.ran)
        summary.up_to_date = len(wanted) - len(considered) + sum(
            1 for i in considered if state[i] in (UPTODATE, DEFERRED) and i not in ran
        )
        summary.blocked += sum(1 for i in considered if state[i] in (WAITING, QUEUED, RUNNING))
        summary.interrupted = self.signal
        if (
            graph_fp is not None
            and summary.ok
            and not summary.blocked
            and summary.up_to_date + len(summary.ran) == len(wanted)
        ):
            self._write_proof(graph_fp, wanted, summary.ran, proof, changes)
        summary.seconds = time.perf_counter() - t0
        self.reporter.end(summary)
        return summary

    def _changed_while_running(
        self,
        inputs: tuple[str, ...],
        snapshot: bytes,
        before: list[bytes | None],
        after: list[bytes | None] | None,
    ) -> bytes:
        """The input digests to record: those taken when the rule started, except for an input whose
        stat changed while it ran (even if its content came back: the action may have read another
        version), which is recorded as CHANGED so that the next build runs the rule again.
        `after`: the stats the worker read when the action ended; None to read them now."""
        if after is None:
            after = self.fs.packed_stats(list(inputs))
        if after == before:
            return snapshot
        for k, (then, now) in enumerate(zip(before, after)):
            if now is None or now != then:
                at = k * DIGEST_SIZE
                snapshot = snapshot[:at] + CHANGED + snapshot[at + DIGEST_SIZE :]
        return snapshot

    def _refresh_racy(self, ran: list[int]) -> None:
        """Re-read outputs written moments ago, so the next build can trust their stat.

        A worker stats an output right after writing it, so the recorded state is racy (an edit in
        the same tick would keep the stat): the next build would have to re-hash every output of
        this one. Once the timestamp tick has passed, stat and hash again and record that instead:
        the sound way to make the record trustworthy, paid here rather than on the next no-op."""
        store, fs = self.store, self.fs
        now = fs.now_ns()
        paths = []
        for i in ran:
            for path in self.rules[i].outputs:
                rec = store.files.get(path)
                if rec is None or rec[TRUSTED]:
                    continue
                size, mtime = recorded_stat(rec)[:2]
                if size <= REFRESH_MAX_BYTES and not is_racy(mtime, now):  # else left to the next build
                    paths.append(path)
        for path, (st, d) in zip(paths, fs.hash_files(paths)):
            if st is not None and st[0] >= 0 and isinstance(d, bytes):
                store.put_file(path, file_record(st, d, now))

    # -- signals ----------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.signal:  # a second Ctrl-C: stop waiting for anything
            raise KeyboardInterrupt
        self.signal = signum

    def _install_signals(self) -> dict[int, object]:
        old: dict[int, object] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass
        return old

    def _restore_signals(self, old: dict[int, object]) -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
