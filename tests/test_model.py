"""Model-checking the build loop against a reference model of contract §2 ("When a rule runs").

The engine (`build.Build` with the real rebuilder and store) runs on an in-memory filesystem and
executor (tests/fakes.py). `Model` below is an independent, deliberately naive statement of the
contract that compares bytes instead of stats and digests. After every build we check:
  (i)   the rules that ran are exactly the model's;
  (ii)  every output of a rule that is up to date or was built holds the bytes a clean build from
        scratch would produce, temp files are gone exactly when the contract says, and nothing else
        (sources, other rules' outputs) was touched;
  (iii) a failed rule has no record, a blocked one keeps the record it had (nothing new is recorded
        for it), and every record matches the model's (same input and output bytes).

Readings of the contract chosen where it is silent (make / ninja / pypipegraph2 analogies):
- A temp rule whose present file was edited by hand reruns (like item 2 for ordinary rules);
  only *missing* temp files are exempt. A temp rule named as a target is built when its files are
  missing, and kept.
- "Blocked consumers have no record" is read as: nothing is recorded for them in that build; the
  record of their last successful run stays, and still describes their (untouched) outputs.
- `--force` of a rule outside the requested targets' closure does nothing.
- With -k, a temp rule that was deferred and then failed when made for a consumer blocks only the
  consumers that had to run; one that could not even be decided blocks all its consumers.
- `build -n` lists everything downstream of what would run (it cannot know the bytes, so no early
  cutoff), plus the deferred temp rules those need.
- Without -k, or when interrupted, what ran depends on scheduling: checked as properties (nothing
  starts after a failure, dependencies first, only what the model runs), then what finished is
  recorded as the model would.

A Mismatch carries a repro (executor options, graph, steps). To replay one:
    w, steps = World.from_repro(text); w.replay(steps)
Set BUILDPIPE_SLOW=1 for the bigger sweeps (every kind assignment of every DAG up to 4 rules and
DAGs of 5; bigger random graphs and many more examples).
"""

from __future__ import annotations

import ast
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import pytest
from fakes import (
    MS,
    SECOND,
    Clock,
    FakeExecutor,
    FakeFS,
    NullReporter,
    RuleSpec,
    build_graph,
    format_spec,
    parse_spec,
    produce,
    sources,
)

from buildpipe.build import Build, BuildOptions
from buildpipe.filesystem import digest_bytes
from buildpipe.fingerprint import Fingerprinter
from buildpipe.store import Store

SLOW = os.environ.get("BUILDPIPE_SLOW", "") not in ("", "0")
# One fingerprinter for all builds: the fake actions are immutable closures kept alive by
# fakes.make_action, so its memo (by object id) stays valid, and fingerprinting is the slow part.
FINGERPRINTER = Fingerprinter()

# -- the reference model ---------------------------------------------------------------------------

UPTODATE, DEFERRED, RUN = "uptodate", "deferred", "run"  # decisions
BUILT, FAILED, BLOCKED, NOTRUN = "built", "failed", "blocked", "not run"  # outcomes (+ the above)


@dataclass(frozen=True)
class MRec:
    """What a rule's last successful run was built from and produced, as bytes."""

    inputs: tuple[str, ...]
    in_bytes: tuple[bytes, ...]
    action: tuple[int, str]
    params: tuple[Any, ...]
    out_bytes: tuple[bytes, ...]


def canon_params(p: dict[str, Any] | None) -> tuple[Any, ...]:
    return tuple(sorted((k, type(v).__name__, repr(v)) for k, v in (p or {}).items()))


def run_spec(s: RuleSpec, ins: Sequence[bytes]) -> tuple[bytes, ...]:
    """The bytes the rule's (pure) action produces from these input bytes."""
    return tuple(produce(s.outputs, ins, dict(s.params or {}), s.version, s.mode))


def dependency_order(specs: Sequence[RuleSpec]) -> list[int]:
    """Rule indices, each after the rules producing its inputs (declaration order may differ)."""
    producer = {o: i for i, s in enumerate(specs) for o in s.outputs}
    order: list[int] = []
    seen: set[int] = set()

    def visit(i: int) -> None:
        if i not in seen:
            seen.add(i)
            for p in specs[i].inputs:
                if p in producer:
                    visit(producer[p])
            order.append(i)

    for i in range(len(specs)):
        visit(i)
    return order


def clean_build(specs: Sequence[RuleSpec], read: Callable[[str], bytes | None]) -> dict[str, bytes]:
    """Every output's bytes after a build from scratch."""
    value: dict[str, bytes] = {}
    for s in (specs[i] for i in dependency_order(specs)):
        ins = [value[p] if p in value else read(p) for p in s.inputs]
        assert all(b is not None for b in ins), "a source is missing"
        value.update(zip(s.outputs, run_spec(s, ins)))  # type: ignore[arg-type]
    return value


@dataclass
class Plan:
    wanted: list[int]
    named: set[int]
    deps: list[list[int]]
    consumers: dict[int, list[int]]
    decision: dict[int, str] = field(default_factory=dict)  # UPTODATE / DEFERRED / RUN
    ins: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    value: dict[str, bytes] = field(default_factory=dict)  # what an output holds / stands for
    run: set[int] = field(default_factory=set)  # rules to run, materialised temps included (-k)
    run_all: set[int] = field(default_factory=set)  # the same if nothing failed
    materialised: set[int] = field(default_factory=set)
    outcome: dict[int, str] = field(default_factory=dict)  # under -k
    temp_deleted: set[int] = field(default_factory=set)  # under -k

    def ran(self, outcome: dict[int, str] | None = None) -> set[int]:
        o = self.outcome if outcome is None else outcome
        return {i for i, x in o.items() if x in (BUILT, FAILED)}


class Model:
    """Contract §1 (temp files) and §2 as a few lines of Python over bytes.

    Rules may be declared in any order; the model works in dependency order.
    """

    def __init__(self) -> None:
        self.records: dict[str, MRec] = {}  # by first output, like the engine

    def plan(
        self,
        specs: Sequence[RuleSpec],
        read: Callable[[str], bytes | None],
        targets: Sequence[str] | None = None,
        failing: Iterable[str] = (),
        force_all: bool = False,
        force: Iterable[str] = (),
    ) -> Plan:
        producer = {o: i for i, s in enumerate(specs) for o in s.outputs}
        deps = [sorted({producer[p] for p in s.inputs if p in producer}) for s in specs]
        # What is wanted: the targets and their closure; by default every non-temp rule.
        if targets is None:
            roots = [i for i, s in enumerate(specs) if not s.temp]
            named: set[int] = set()
        else:
            roots = [producer[t] for t in targets]
            named = set(roots)
        wanted_set: set[int] = set()
        stack = list(roots)
        while stack:
            i = stack.pop()
            if i not in wanted_set:
                wanted_set.add(i)
                stack.extend(deps[i])
        wanted = [i for i in dependency_order(specs) if i in wanted_set]
        consumers: dict[int, list[int]] = {i: [] for i in wanted}
        for i in wanted:
            for d in deps[i]:
                consumers[d].append(i)
        forced = set(wanted) if force_all else {producer[t] for t in force} & wanted_set
        plan = Plan(wanted, named, deps, consumers)

        # Phase 1, in dependency order, as if nothing failed: does each rule have to run?
        for i in wanted:
            s = specs[i]
            ins = tuple(plan.value[p] if p in producer else read(p) for p in s.inputs)
            assert all(b is not None for b in ins)
            plan.ins[i] = ins  # type: ignore[assignment]
            rec = self.records.get(s.outputs[0])
            now = [read(o) for o in s.outputs]
            stale = (
                i in forced  # item 7
                or rec is None  # item 1
                or rec.inputs != s.inputs  # item 4
                or rec.in_bytes != ins  # item 3
                or rec.action != (s.version, s.mode)  # item 5
                or rec.params != canon_params(s.params)  # item 6
            )
            missing = any(b is None for b in now)
            modified = rec is not None and any(
                b is not None and b != r for b, r in zip(now, rec.out_bytes)
            )
            if not (stale or missing or modified):
                plan.decision[i] = UPTODATE
                plan.value.update(zip(s.outputs, now))  # type: ignore[arg-type]
            elif s.temp and not stale and not modified and i not in named:
                # A temp rule whose files are merely missing: they stand for what it recorded.
                assert rec is not None
                plan.decision[i] = DEFERRED
                plan.value.update(zip(s.outputs, rec.out_bytes))
            else:
                plan.decision[i] = RUN
                plan.value.update(zip(s.outputs, run_spec(s, ins)))  # type: ignore[arg-type]

        # Phase 2, again in dependency order, with failures (-k). A rule is blocked when a rule
        # it waits for failed or was blocked: any producer, except a deferred temp rule, which only
        # the consumers that have to run wait for (they make it run first: "materialise" it).
        # A temp rule blocked before it could be deferred blocks all its consumers.
        fail = {i for i in wanted if specs[i].outputs[0] in set(failing)}
        plan.run_all = {i for i in wanted if plan.decision[i] == RUN}
        for i in reversed(wanted):
            if i in plan.run_all:
                plan.run_all.update(d for d in deps[i] if plan.decision[d] == DEFERRED)
        outcome = plan.outcome
        settled: set[int] = set()  # deferred temp rules (all their producers went well)

        def materialise(d: int) -> bool:
            if d not in plan.materialised:
                plan.materialised.add(d)
                ok = all([materialise(e) for e in deps[d] if plan.decision[e] == DEFERRED])
                outcome[d] = BLOCKED if not ok else FAILED if d in fail else BUILT
            return outcome[d] == BUILT

        for i in wanted:
            if any(outcome[d] in (FAILED, BLOCKED) and d not in settled for d in deps[i]):
                outcome[i] = BLOCKED
            elif plan.decision[i] == RUN:
                ok = all([materialise(d) for d in deps[i] if plan.decision[d] == DEFERRED])
                outcome[i] = BLOCKED if not ok else FAILED if i in fail else BUILT
            elif plan.decision[i] == UPTODATE:
                outcome[i] = UPTODATE
            else:
                outcome[i] = DEFERRED
                settled.add(i)
        plan.run = {i for i in wanted if plan.decision[i] == RUN} | plan.materialised
        plan.temp_deleted = self.temp_deleted(specs, plan, plan.outcome)
        return plan

    @staticmethod
    def dry_run(specs: Sequence[RuleSpec], plan: Plan) -> set[int]:
        """What `pipe build -n` lists: it cannot know what a rule would write, so everything
        downstream of a rule that would run is listed too (no early cutoff); a deferred temp rule
        only when a listed rule needs it, and then its other consumers still see its record."""
        listed: set[int] = set()
        for i in plan.wanted:
            if plan.decision[i] == RUN or any(d in listed for d in plan.deps[i]):
                listed.add(i)
        for i in reversed(plan.wanted):
            if i in listed:
                listed.update(d for d in plan.deps[i] if plan.decision[d] == DEFERRED)
        return listed

    @staticmethod
    def temp_deleted(specs: Sequence[RuleSpec], plan: Plan, outcome: dict[int, str]) -> set[int]:
        """Temp rules whose files go: they are there and good, every consumer in this build
        finished successfully, and the temp rule was not itself named as a target."""
        return {
            t
            for t in plan.wanted
            if specs[t].temp
            and t not in plan.named
            and outcome[t] in (UPTODATE, BUILT)
            and all(outcome[c] in (UPTODATE, BUILT, DEFERRED) for c in plan.consumers[t])
        }

    def commit(self, specs: Sequence[RuleSpec], plan: Plan, outcome: dict[int, str]) -> None:
        for i, x in outcome.items():
            s = specs[i]
            if x == BUILT:
                self.records[s.outputs[0]] = MRec(
                    s.inputs,
                    plan.ins[i],
                    (s.version, s.mode),
                    canon_params(s.params),
                    tuple(plan.value[o] for o in s.outputs),
                )
            elif x == FAILED:
                self.records.pop(s.outputs[0], None)


# -- driving the engine and the model side by side -------------------------------------------------


class Mismatch(AssertionError):
    pass


class World:
    """A project on a FakeFS, built by the real engine and predicted by the model."""

    def __init__(
        self,
        specs: Sequence[RuleSpec],
        *,
        granularity: int = 1,
        reuse_inodes: bool = False,
        slots: int = 1,
        order: str = "fifo_all",
        store_path: str = ":memory:",
        reopen: bool = False,
        rule_ns: int = 100_003,
        shuffle: int | None = None,
    ) -> None:
        self.specs = [s.copy() for s in specs]
        self.initial_specs = [s.copy() for s in specs]
        self.options = (
            f"slots={slots} order={order} granularity={granularity} reuse_inodes={reuse_inodes}"
            + (" reopen" if reopen else "") + (f" rule_ns={rule_ns}" if rule_ns != 100_003 else "")
            + (f" shuffle={shuffle}" if shuffle is not None else "")
        )
        self.clock = Clock()
        self.fs = FakeFS(self.clock, granularity, reuse_inodes)
        self.slots = slots
        self.order = order
        self.rule_ns = rule_ns  # how long each action takes on the fake clock
        # --shuffle: build k starts ready rules in the random order of seed shuffle + k
        self.shuffle = shuffle
        self.store_path = store_path
        self.reopen = reopen
        self.store = Store(store_path)
        self.model = Model()
        self.src: dict[str, list[int]] = {}  # source -> [content version, comment version]
        self.history: list[str] = []
        self.builds = 0
        self.last_plan: Plan | None = None
        self.last_ran: list[str] = []
        for p in sources(self.specs):
            self.src[p] = [0, 0]
            self.fs.write(p, self._src_bytes(p))
        self.clock.advance(SECOND + 7)

    # -- helpers ----------------------------------------------------------------------------------

    def _src_bytes(self, p: str) -> bytes:
        v, c = self.src[p]
        return f"{p}:{v:04d}#{c:04d}".encode()  # same size for every version: same-size edits

    def rule_of(self, out: str) -> int:
        return next(i for i, s in enumerate(self.specs) if out in s.outputs)

    def log(self, what: str) -> None:
        self.history.append(what)

    def repro(self) -> str:
        return (
            f"options: {self.options}\ngraph:\n" + _indent(format_spec(self.initial_specs))
            + "\nsteps:\n" + _indent("\n".join(self.history))
        )

    @classmethod
    def from_repro(cls, text: str) -> tuple[World, str]:
        """A World and its steps from what `repro()` printed (options line optional)."""
        options: dict[str, Any] = {}
        m = re.search(r"options: (.*)", text)
        if m:
            for word in m.group(1).split():
                k, _, v = word.partition("=")
                options[k] = v if k == "order" else (v == "True") if k == "reuse_inodes" else (
                    True if not v else int(v))
            if options.pop("reopen", False):
                options["store_path"] = os.path.join(tempfile.mkdtemp(), "state.db")
                options["reopen"] = True
        graph = text.split("graph:", 1)[1].split("steps:", 1)[0]
        steps = text.split("steps:", 1)[1]
        return cls(parse_spec(graph), **options), steps

    def replay(self, steps: str) -> None:
        """Run steps written as `repro()` prints them (for bug reports and their tests)."""
        for line in steps.strip().splitlines():
            line = line.strip()
            m = re.fullmatch(
                r"build( [^-(\[][^(\[]*)?(?: \(failing: ([^;)]*)(; without -k)?\))?( -B)?"
                r"((?: --force \S+)*)(?: \[Ctrl-C after (\d+)\])?(?: \[then clock \+= (\d+)\])?",
                line,
            )
            if m:
                targets = m.group(1).split() if m.group(1) else None
                fail = m.group(2).split(", ") if m.group(2) else []
                force = m.group(5).split()[1::2] if m.group(5) else []
                stop = int(m.group(6)) if m.group(6) is not None else None
                adv = int(m.group(7)) if m.group(7) is not None else SECOND + 7
                self.build(targets, fail=fail, keep_going=not m.group(3),
                           force_all=bool(m.group(4)), force=force, advance=adv,
                           interrupt_after=stop)
                continue
            word, _, rest = line.partition(" ")
            if line.startswith("edit comment of "):
                self.edit_comment(line[len("edit comment of "):])
            elif line.startswith("same-stat hand-edit "):
                self.sneaky_hand_edit(line[len("same-stat hand-edit "):])
            elif line.startswith("backdate "):
                _, path, _, ns = line.split()
                self.backdate(path, int(ns))
            elif line.startswith("same-stat edit comment of "):
                self.sneaky_edit(line[len("same-stat edit comment of "):], comment=True)
            elif line.startswith("same-stat edit "):
                self.sneaky_edit(line[len("same-stat edit "):])
            elif line.startswith("change the action of "):
                self.bump_action(self.rule_of(line[len("change the action of "):]))
            elif line.startswith("inputs of "):
                out, _, value = line[len("inputs of "):].partition(" = ")
                self.set_inputs(self.rule_of(out), ast.literal_eval(value))
            elif line.startswith("add rule "):
                self.add_rule(parse_spec(line[len("add rule "):])[0])
            elif line.startswith("remove rule "):
                self.remove_rule(self.rule_of(line[len("remove rule "):]))
            elif line.startswith("temp of "):
                out, _, value = line[len("temp of "):].partition(" = ")
                self.set_temp(self.rule_of(out), value == "True")
            elif line.startswith("build -n"):
                self.dry_build(line.split()[2:] or None)
            elif line.startswith("params of "):
                out, _, value = line[len("params of "):].partition(" = ")
                self.set_params(self.rule_of(out), ast.literal_eval(value))
            elif word == "hand-edit":
                self.hand_edit(rest.split()[0], same_size=not rest.endswith("(grow)"))
            elif word in ("edit", "touch", "rm", "clock", "replace"):
                {"edit": self.edit, "touch": self.touch, "rm": self.delete,
                 "replace": self.replace_file,
                 "clock": lambda r: self.advance(int(r.split()[-1]))}[word](rest)
            else:
                raise ValueError(f"unknown step {line!r}")

    # -- what a user does -------------------------------------------------------------------------

    def advance(self, ns: int = SECOND + 7) -> None:
        self.clock.advance(ns)
        self.log(f"clock += {ns}")

    def edit(self, p: str) -> None:
        """Change a source's content (same size)."""
        self.src[p][0] += 1
        self.fs.write(p, self._src_bytes(p))
        self.log(f"edit {p}")

    def edit_comment(self, p: str) -> None:
        """Change only the part of a source hashing actions ignore: reruns, early cutoff."""
        self.src[p][1] += 1
        self.fs.write(p, self._src_bytes(p))
        self.log(f"edit comment of {p}")

    def sneaky_edit(self, p: str, comment: bool = False) -> None:
        """Edit a source keeping its whole stat (same timestamp tick)."""
        self.src[p][1 if comment else 0] += 1
        self.fs.sneaky_write(p, self._src_bytes(p))
        self.log(f"same-stat edit {'comment of ' if comment else ''}{p}")

    def replace_file(self, p: str) -> None:
        """Edit a source the way editors save: a new file renamed over the old (new inode)."""
        self.src[p][0] += 1
        self.fs.replace(p, self._src_bytes(p))
        self.log(f"replace {p}")

    def backdate(self, p: str, ns: int) -> None:
        """Set the mtime into the past (touch -d, cp -p, tar x); the ctime moves to now."""
        f = self.fs.files[p]
        self.fs.set_times(p, f.mtime - ns, self.fs.stamp())
        self.log(f"backdate {p} by {ns}")

    def sneaky_hand_edit(self, p: str) -> None:
        """Change an output's bytes keeping its whole stat (an edit in the tick it was written)."""
        old = self.fs.files[p].data
        new = bytes(reversed(old)) if bytes(reversed(old)) != old else b"~" + old[1:]
        self.fs.sneaky_write(p, new)
        self.log(f"same-stat hand-edit {p}")

    def touch(self, p: str) -> None:
        self.fs.touch(p)
        self.log(f"touch {p}")

    def delete(self, p: str) -> None:
        self.fs.remove(p)
        self.log(f"rm {p}")

    def hand_edit(self, p: str, same_size: bool = True) -> None:
        old = self.fs.read(p) or b"x" * 20
        new = bytes(reversed(old)) if same_size else old + b"!"
        if new == old:
            new = b"~" + old[1:]
        self.fs.write(p, new)
        self.log(f"hand-edit {p}" + ("" if same_size else " (grow)"))

    def set_params(self, i: int, params: dict[str, Any] | None) -> None:
        self.specs[i].params = params
        self.log(f"params of {self.specs[i].outputs[0]} = {params}")

    def set_inputs(self, i: int, inputs: Sequence[str], log: bool = True) -> None:
        """Change a rule's list of inputs (contract §2 item 4); new sources are created."""
        self.specs[i].inputs = tuple(inputs)
        produced = {o for s in self.specs for o in s.outputs}
        for p in inputs:
            if p not in produced and p not in self.src:
                self.src[p] = [0, 0]
                self.fs.write(p, self._src_bytes(p))
        if log:
            self.log(f"inputs of {self.specs[i].outputs[0]} = {list(inputs)}")

    def add_rule(self, spec: RuleSpec) -> None:
        """Declare one more rule (after the others: it may read any of their outputs)."""
        self.specs.append(spec.copy())
        self.log(f"add rule {format_spec([spec])}")
        self.set_inputs(len(self.specs) - 1, spec.inputs, log=False)

    def remove_rule(self, i: int) -> None:
        """Drop a rule nothing reads; its files and record stay behind."""
        out = self.specs[i].outputs
        assert not any(p in out for s in self.specs for p in s.inputs)
        del self.specs[i]
        self.log(f"remove rule {out[0]}")

    def set_temp(self, i: int, temp: bool) -> None:
        self.specs[i].temp = temp
        self.log(f"temp of {self.specs[i].outputs[0]} = {temp}")

    def dry_build(self, targets: Sequence[str] | None = None) -> set[int]:
        """`pipe build -n`: lists what would run, changes nothing."""
        self.log("build -n" + (f" {' '.join(targets)}" if targets is not None else ""))
        specs = self.specs
        plan = self.model.plan(specs, self.fs.read, targets)
        before = self.fs.snapshot()
        records = {s.outputs[0]: self.store.rule(s.outputs[0]) for s in specs}

        def no_executor() -> FakeExecutor:
            raise Mismatch(f"a dry run wants an executor\n{self.repro()}")

        summary = Build(
            build_graph(specs), self.store, self.fs, no_executor, NullReporter(),
            BuildOptions(targets=list(targets) if targets is not None else None, dry_run=True),
            FINGERPRINTER,
        ).run()
        listed = {i for i, _ in summary.would_run}
        want = self.model.dry_run(specs, plan)
        names = sorted(specs[i].outputs[0] for i in listed)
        if listed != want:
            raise Mismatch(
                f"build -n lists {names}, the model {sorted(specs[i].outputs[0] for i in want)}"
                f"\n{self.repro()}"
            )
        if self.fs.snapshot() != before:
            raise Mismatch(f"build -n changed files\n{self.repro()}")
        if {s.outputs[0]: self.store.rule(s.outputs[0]) for s in specs} != records:
            raise Mismatch(f"build -n changed records\n{self.repro()}")
        return listed

    def bump_action(self, i: int) -> None:
        self.specs[i].version += 1
        self.log(f"change the action of {self.specs[i].outputs[0]}")

    # -- a build, checked -------------------------------------------------------------------------

    def build(
        self,
        targets: Sequence[str] | None = None,
        *,
        fail: Iterable[str] = (),
        keep_going: bool = True,
        force_all: bool = False,
        force: Sequence[str] = (),
        advance: int | None = SECOND + 7,
        interrupt_after: int | None = None,
    ) -> Plan:
        """One build, checked against the model. `interrupt_after=k`: Ctrl-C arrives when the
        k-th rule finishes (k >= 1); rules still running are killed half-way."""
        fail = sorted(set(fail))
        desc = "build" + (f" {' '.join(targets)}" if targets is not None else "")
        if fail:
            desc += f" (failing: {', '.join(fail)}{'' if keep_going else '; without -k'})"
        if force_all:
            desc += " -B"
        for f in force:
            desc += f" --force {f}"
        if interrupt_after is not None:
            desc += f" [Ctrl-C after {interrupt_after}]"
        if advance != SECOND + 7:
            desc += f" [then clock += {advance or 0}]"
        self.log(desc)
        self.builds += 1
        specs = self.specs
        fs = self.fs
        plan = self.model.plan(specs, fs.read, targets, fail, force_all, force)
        before = fs.snapshot()
        records_before = {s.outputs[0]: self.store.rule(s.outputs[0]) for s in specs}
        events: list[tuple[Any, ...]] = []
        executors: list[FakeExecutor] = []

        finished = [0]

        def on_result(res: Any) -> bool:
            finished[0] += 1
            if finished[0] == interrupt_after:
                b.signal = signal.SIGINT  # what Build's SIGINT handler does
                return True
            return False

        def make_executor() -> FakeExecutor:
            ex = FakeExecutor(
                graph.rules, fs, slots=self.slots, fail=fail, order=self.order, events=events,
                per_rule_ns=self.rule_ns, on_result=on_result,
            )
            executors.append(ex)
            return ex

        graph = build_graph(specs)
        if self.reopen:
            self.store.close()
            self.store = Store(self.store_path)
        b = Build(
            graph,
            self.store,
            fs,
            make_executor,
            NullReporter(),
            BuildOptions(
                targets=list(targets) if targets is not None else None,
                keep_going=keep_going,
                force_all=force_all,
                force=list(force),
                shuffle=None if self.shuffle is None else self.shuffle + self.builds,
            ),
            FINGERPRINTER,
        )
        b.decide_batch = 1 + self.builds % 3  # rules start between small batches of decisions
        summary = b.run()
        started = [e[1] for e in events if e[0] == "start"]
        done = {e[1]: e[2] for e in events if e[0] == "done"}
        self.last_plan = plan
        self.last_ran = [specs[i].outputs[0] for i in started]

        def check(cond: bool, what: str) -> None:
            if not cond:
                raise Mismatch(f"{what}\n{self.repro()}")

        def names(ids: Iterable[int]) -> list[str]:
            return sorted(specs[i].outputs[0] for i in ids)

        counted = summary.up_to_date + len(summary.ran) + len(summary.failed) + summary.blocked
        check(counted == summary.wanted, f"the summary counts {counted} rules of {summary.wanted}")
        check(summary.blocked == 0 or bool(summary.failed) or bool(summary.interrupted),
              f"{summary.blocked} rules blocked, yet nothing failed")
        problems = [p for ex in executors for p in ex.problems]
        check(not problems, f"a rule ran with an input missing: {problems}")
        check(len(started) == len(set(started)), f"a rule ran twice: {names(started)}")
        check(all(e.shut for e in executors), "the executor was not shut down")
        interrupted = bool(interrupt_after) and finished[0] >= interrupt_after
        check(
            summary.interrupted == (signal.SIGINT if interrupted else 0),
            f"summary.interrupted is {summary.interrupted}",
        )

        if interrupted:
            outcome = self._check_partial_build(plan, events, started, done, check, None)
        elif keep_going or FAILED not in plan.outcome.values():
            outcome = plan.outcome
            check(
                set(started) == plan.ran(),
                f"ran {names(started)}, the model runs {names(plan.ran())}",
            )
        else:
            outcome = self._check_partial_build(plan, events, started, done, check, "failure")
        built = {i for i, x in outcome.items() if x == BUILT}
        failed = {i for i, x in outcome.items() if x == FAILED}
        check(
            sorted(summary.ran) == sorted(built),
            f"summary.ran {names(summary.ran)} != built {names(built)}",
        )
        check(
            sorted(i for i, _ in summary.failed) == sorted(failed),
            f"summary.failed {names(i for i, _ in summary.failed)} != {names(failed)}",
        )
        self.model.commit(specs, plan, outcome)

        # (iii) records: failed ones gone, blocked ones untouched, all as the model has them.
        for i, s in enumerate(specs):
            rid = s.outputs[0]
            got = self.store.rule(rid)
            want = self.model.records.get(rid)
            if outcome.get(i) not in (BUILT, FAILED):
                check(got == records_before[rid], f"the record of {rid} changed, yet it did not run")
            if want is None:
                check(got is None, f"{rid} has a record, the model has none ({outcome.get(i)})")
                continue
            check(got is not None, f"{rid} has no record ({outcome.get(i)})")
            assert got is not None
            check(_same_paths(got, "inputs", want.inputs), f"{rid}: recorded inputs differ")
            check(_same_paths(got, "outputs", s.outputs), f"{rid}: recorded outputs differ")
            check(
                _joined(got.input_digests) == b"".join(digest_bytes(b) for b in want.in_bytes),
                f"{rid}: recorded input digests differ from the bytes it was built from",
            )
            check(
                _joined(got.output_digests) == b"".join(digest_bytes(b) for b in want.out_bytes),
                f"{rid}: recorded output digests differ from the bytes it produced",
            )

        # (ii) files: up to date or built outputs hold clean-build bytes; temp files go exactly
        # when they should (-k); nothing else changed.
        clean = clean_build(specs, fs.read)
        deleted = self.model.temp_deleted(specs, plan, outcome)
        complete = keep_going and not interrupted  # else which temp files went is timing
        killed = {e[1] for e in events if e[0] == "killed"}
        checked: set[str] = set()
        for i in plan.wanted:
            s = specs[i]
            x = outcome[i]
            for o in s.outputs:
                checked.add(o)
                if x in (UPTODATE, BUILT):
                    check(plan.value[o] == clean[o], f"model bug: {o} differs from a clean build")
                    if i in deleted and complete:
                        check(not fs.exists(o), f"temp file {o} was not deleted")
                    elif s.temp and (not complete or i in deleted):
                        check(
                            not fs.exists(o) or fs.read(o) == clean[o],
                            f"temp file {o} ({x}) holds {fs.read(o)!r}, not {clean[o]!r}",
                        )
                    else:
                        check(
                            fs.read(o) == clean[o],
                            f"{o} ({x}) holds {fs.read(o)!r}, a clean build gives {clean[o]!r}",
                        )
                elif x in (BLOCKED, NOTRUN, DEFERRED) and i not in killed:
                    check(
                        fs.read(o) == (before[o][0] if o in before else None),
                        f"{o} ({x}) was changed",
                    )
        after = fs.snapshot()
        for p, f in before.items():
            if p not in checked:
                check(after.get(p) == f, f"{p} was touched")
        for p in fs.files:
            check(p in before or p in checked, f"{p} appeared")
        if advance:
            self.clock.advance(advance)
        return plan

    def _check_partial_build(
        self,
        plan: Plan,
        events: list[tuple[Any, ...]],
        started: list[int],
        done: dict[int, bool],
        check: Callable[[bool, str], None],
        stop: str | None,
    ) -> dict[int, str]:
        """A build that stopped early: without -k at the first failure (stop="failure"), or
        interrupted (stop=None). What ran then depends on scheduling; check what holds for any
        order: only rules the model runs, each after what it needs, none after the first
        failure was seen, and (without -k) at least one failure. Returns the outcome to record:
        what finished, as it finished; everything else keeps its record."""
        specs = self.specs
        fail_seen = False
        ok_done: set[int] = set()
        for e in events:
            if e[0] == "killed":
                check(stop is None, f"{specs[e[1]].outputs[0]} was killed")
            elif e[0] == "start":
                i = e[1]
                check(
                    not (fail_seen and stop),
                    f"{specs[i].outputs[0]} started after a failure without -k",
                )
                check(i in plan.run_all, f"{specs[i].outputs[0]} ran; the model does not run it")
                for d in plan.deps[i]:
                    if d in plan.run_all:
                        check(
                            d in ok_done,
                            f"{specs[i].outputs[0]} started before {specs[d].outputs[0]} was built",
                        )
            elif not e[2]:
                fail_seen = True
            else:
                ok_done.add(e[1])
        if stop:
            check(fail_seen, "nothing failed without -k, though the model says something must")
        outcome: dict[int, str] = {}
        for i in plan.wanted:
            if i in done:
                outcome[i] = BUILT if done[i] else FAILED
            elif i in plan.run_all:
                outcome[i] = NOTRUN
            else:
                outcome[i] = plan.outcome[i] if plan.outcome[i] != BLOCKED else NOTRUN
        if stop:
            for i in started:
                check(i in done, f"{specs[i].outputs[0]} started but never finished")
        return outcome


def _joined(digests: Any) -> bytes:
    """A record's digests as one byte string (stored as a tuple, or already concatenated)."""
    return b"".join(digests) if isinstance(digests, (tuple, list)) else bytes(digests)


def _same_paths(rec: Any, what: str, paths: tuple[str, ...]) -> bool:
    """Whether a record names these paths (stored as a tuple, or as a key of the list)."""
    if hasattr(rec, what):
        return tuple(getattr(rec, what)) == paths
    from buildpipe import store

    return bool(getattr(rec, what + "_key") == store.paths_key(paths))  # type: ignore[attr-defined]


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# -- targeted scenarios ----------------------------------------------------------------------------


def test_smoke_chain_with_temp() -> None:
    w = World(parse_spec("""
        out/a <- src/a
        tmp/t <- out/a src/t !temp
        out/x out/y <- tmp/t src/x
    """))
    w.build()
    assert w.last_ran == ["out/a", "tmp/t", "out/x"]
    assert not w.fs.exists("tmp/t")
    w.build()
    assert w.last_ran == []



def test_touch_is_free_and_stat_first() -> None:
    """No-op builds run nothing; once the racy window has passed they hash nothing either; a
    touched source is re-hashed (its stat changed) but runs nothing."""
    w = World(parse_spec("""
        out/a <- src/a
        tmp/t <- out/a src/t !temp
        out/b out/c <- tmp/t src/b
    """))
    w.build()
    w.build()  # may re-hash outputs written moments before the last build recorded them
    assert w.last_ran == []
    w.fs.hashed.clear()
    w.build()
    assert w.last_ran == [] and w.fs.hashed == []
    for p in ("src/a", "src/t", "src/b"):
        w.touch(p)
    w.advance()  # past the racy window, else the next build would rightly hash them again
    w.build()
    assert w.last_ran == []
    assert sorted(w.fs.hashed) == ["src/a", "src/b", "src/t"]
    w.fs.hashed.clear()
    w.build()
    assert w.last_ran == [] and w.fs.hashed == []


@pytest.mark.parametrize("granularity", [1, 10 * MS, SECOND, 2 * SECOND])
def test_edit_within_the_same_timestamp_tick_is_seen(granularity: int) -> None:
    """Racy timestamps: the build records a file's stat within the tick it was written in; an
    edit in that same tick keeps size, mtime, ctime and inode; the next build must still see it."""
    w = World(parse_spec("out/a <- src/a\nout/b <- out/a"), granularity=granularity)
    w.build()
    w.edit("src/a")
    w.advance(2 * MS)
    w.build(advance=2 * MS)
    assert w.last_ran == ["out/a", "out/b"]
    stat = w.fs.stat("src/a")
    w.sneaky_edit("src/a")
    assert w.fs.stat("src/a") == stat
    w.build()
    assert w.last_ran == ["out/a", "out/b"]


@pytest.mark.parametrize("granularity", [SECOND, 2 * SECOND])
def test_coarse_timestamps_same_tick_edits(granularity: int) -> None:
    """With 1 s / 2 s timestamps, ordinary edits shortly after a build keep the stat."""
    w = World(parse_spec("out/a <- src/a\nout/b <- out/a src/b"), granularity=granularity)
    w.build()
    w.clock.advance(granularity - w.clock.now() % granularity + 1)  # start of a tick
    w.edit("src/a")
    w.build(advance=10 * MS)
    assert w.last_ran == ["out/a", "out/b"]
    w.edit("src/a")  # same tick, same size: the stat does not change
    w.build(advance=10 * MS)
    assert w.last_ran == ["out/a", "out/b"]
    w.hand_edit("out/b")  # an output edited in the tick it was written in
    w.build(advance=10 * MS)
    assert w.last_ran == ["out/b"]
    w.build()
    assert w.last_ran == []


def test_output_edited_in_the_tick_it_was_written_is_seen() -> None:
    """A hand edit of an output right after the build, keeping its stat: still racy, re-hashed."""
    w = World(parse_spec("out/a <- src/a\nout/b <- out/a"))
    w.build(advance=0)
    w.sneaky_hand_edit("out/a")
    w.build(advance=5 * MS)
    assert w.last_ran == ["out/a"]
    w.sneaky_hand_edit("out/b")
    w.build()
    assert w.last_ran == ["out/b"]


def test_replaced_and_backdated_sources() -> None:
    """An editor's save (new inode) and an mtime set into the past (cp -p, tar x) are changes
    of state: the content decides."""
    w = World(parse_spec("out/a <- src/a\nout/b <- src/b"), reuse_inodes=True)
    w.build()
    w.replace_file("src/a")
    w.backdate("src/b", 3600 * SECOND)
    w.build()
    assert w.last_ran == ["out/a"]
    w.backdate("src/a", 3600 * SECOND)
    w.build()
    assert w.last_ran == []


def test_stat_is_trusted_outside_the_racy_window() -> None:
    """Stat-first: an unchanged stat recorded well after the file's mtime is not re-hashed."""
    w = World(parse_spec("out/a <- src/a"))
    w.build()
    w.build()
    w.fs.hashed.clear()
    w.build()
    assert w.fs.hashed == []


def test_early_cutoff_through_a_chain() -> None:
    w = World(parse_spec("""
        out/a <- src/a
        out/b <- out/a !const
        out/c <- out/b src/c
        out/d <- out/a
    """))
    w.build()
    w.edit("src/a")
    w.build()
    assert sorted(w.last_ran) == ["out/a", "out/b", "out/d"]  # b writes the same bytes: c is fine
    w.edit_comment("src/a")
    w.build()
    assert w.last_ran == ["out/a"]
    w.set_params(1, {"noise": 1})
    w.build()
    assert w.last_ran == ["out/b"]
    w.set_params(1, {"p": 1})
    w.build()
    assert w.last_ran == ["out/b", "out/c"]


def test_missing_temp_file_alone_runs_nothing() -> None:
    w = World(parse_spec("""
        tmp/t <- src/t !temp
        out/a <- tmp/t
        out/b <- tmp/t src/b
    """))
    w.build()
    assert not w.fs.exists("tmp/t")
    w.build()
    assert w.last_ran == []
    w.delete("out/a")
    w.build()
    assert w.last_ran == ["tmp/t", "out/a"]
    assert not w.fs.exists("tmp/t")
    w.edit("src/t")
    w.build()
    assert sorted(w.last_ran) == ["out/a", "out/b", "tmp/t"]


def test_temp_named_as_target_is_kept() -> None:
    w = World(parse_spec("""
        tmp/t <- src/t !temp
        out/a <- tmp/t
    """))
    w.build(["tmp/t"])
    assert w.last_ran == ["tmp/t"] and w.fs.exists("tmp/t")
    w.build()
    assert w.last_ran == ["out/a"] and not w.fs.exists("tmp/t")
    w.build(["tmp/t"])  # missing, and asked for by name: rebuilt and kept
    assert w.last_ran == ["tmp/t"] and w.fs.exists("tmp/t")
    w.hand_edit("tmp/t")
    w.build()
    assert w.last_ran == ["tmp/t"] and not w.fs.exists("tmp/t")


def test_subset_target_builds_only_its_closure() -> None:
    w = World(parse_spec("""
        out/a <- src/a
        out/b <- out/a
        out/c <- out/a src/c
    """))
    w.build(["out/b"])
    assert w.last_ran == ["out/a", "out/b"]
    w.edit("src/a")
    w.build(["out/c"])
    assert w.last_ran == ["out/a", "out/c"]
    w.build()
    assert w.last_ran == ["out/b"]


def test_failure_leaves_no_record_and_blocks_downstream() -> None:
    w = World(parse_spec("""
        out/a <- src/a
        out/b <- out/a
        out/x <- src/x
    """))
    w.build()
    w.edit("src/a")
    w.edit("src/x")
    w.build(fail=["out/a"])
    assert sorted(w.last_ran) == ["out/a", "out/x"]
    assert w.store.rule("out/a") is None
    assert w.fs.read("out/a") == b"partial garbage of a crashed action"
    w.build()
    assert w.last_ran == ["out/a", "out/b"]


def test_without_keep_going_nothing_starts_after_a_failure() -> None:
    w = World(parse_spec("""
        out/a <- src/a
        out/b <- src/b
        out/c <- out/a out/b
    """))
    w.build()
    w.edit("src/a")
    w.edit("src/b")
    w.build(fail=["out/a"], keep_going=False)
    assert w.last_ran == ["out/a"]
    w.build()
    assert w.last_ran == ["out/a", "out/b", "out/c"]


@pytest.mark.parametrize("slots", [1, 3])
def test_interrupted_build_records_what_finished(slots: int) -> None:
    """Ctrl-C: what finished is recorded, what was running is killed half-way and its partial
    outputs are never taken as built; the next build finishes the job."""
    w = World(parse_spec("""
        out/a <- src/a
        tmp/t <- out/a !temp
        out/b <- tmp/t src/b
        out/c <- src/c
        out/d <- out/b out/c
    """), slots=slots, order="fifo_one")
    w.build()
    for p in ("src/a", "src/b", "src/c"):
        w.edit(p)
    w.build(interrupt_after=1)
    w.build()
    assert "out/d" in w.last_ran


def test_repro_round_trip() -> None:
    """A failure message's repro replays to the same state (for bug reports)."""
    w = World(parse_spec("out/a <- src/a !p=1\ntmp/t out/u <- out/a !temp !const !noise=2"))
    w.build()
    w.edit("src/a")
    w.hand_edit("out/a", same_size=False)
    w.build(["tmp/t"], fail=["out/a"], advance=3 * MS)
    w.build(interrupt_after=1, keep_going=False)
    w2, steps = World.from_repro(w.repro())
    w2.replay(steps)
    assert w2.fs.snapshot() == w.fs.snapshot()
    assert w2.history == w.history


# -- exhaustive: every DAG up to 4 rules x rule kinds x a fixed scenario ---------------------------

KINDS = "otm"  # ordinary, temp, two outputs


def dag_specs(n: int, edges: Iterable[tuple[int, int]], kinds: str) -> list[RuleSpec]:
    """Rule j reads its own source src/j and all outputs of each i with (i, j) in edges."""
    outs = []
    for j in range(n):
        k = kinds[j]
        outs.append(
            (f"out/{j}.a", f"out/{j}.b") if k == "m" else (f"tmp/{j}",) if k == "t" else (f"out/{j}",)
        )
    specs = []
    for j in range(n):
        ins: list[str] = [f"src/{j}"]
        for i in range(j):
            if (i, j) in edges:
                ins.extend(outs[i])
        specs.append(RuleSpec(outs[j], tuple(ins), temp=kinds[j] == "t"))
    return specs


def all_dags(n: int) -> list[set[tuple[int, int]]]:
    pairs = [(i, j) for j in range(n) for i in range(j)]
    return [{p for p, bit in zip(pairs, bits) if bit} for bits in product((0, 1), repeat=len(pairs))]


def scenario(w: World, seed: int) -> None:
    """The fixed scenario, each step checked by World.build; `seed` rotates which rule is hit."""
    n = len(w.specs)
    specs = w.specs

    def pick(k: int) -> int:
        return (seed + k) % n

    srcs = [f"src/{j}" for j in range(n)]
    w.build()  # clean build
    w.build()  # no-op
    for p in srcs:
        w.touch(p)
    w.build()  # touch is free
    w.edit(srcs[pick(0)])
    w.build()
    w.edit_comment(srcs[pick(1)])
    w.build()  # early cutoff
    j = pick(2)
    for o in specs[j].outputs:  # delete an output (a temp one may be gone already)
        if w.fs.exists(o):
            w.delete(o)
            break
    w.build()
    j = pick(3)
    w.hand_edit(specs[j].outputs[-1])
    w.build()
    j = pick(4)
    w.set_params(j, {"p": 1})
    w.build()
    j = pick(5)
    w.set_params(j, {**(specs[j].params or {}), "noise": 1})
    w.build()  # params change without effect on the bytes: cutoff
    j = pick(6)
    w.bump_action(j)
    w.dry_build()
    w.build()
    j = pick(7)
    w.set_inputs(j, (*specs[j].inputs[1:], specs[j].inputs[0]))  # same inputs, another order
    w.build()
    # a subset target, then everything
    w.edit(srcs[pick(7)])
    w.build([specs[pick(8)].outputs[-1]])
    w.build()
    # a temp rule named as a target is kept, then deleted by a full build
    temps = [s for s in specs if s.temp]
    if temps:
        w.build([temps[seed % len(temps)].outputs[0]])
        w.edit(srcs[0])
        w.build()
    # failures with -k, then a build that succeeds
    for p in srcs:
        w.edit(p)
    w.build(fail=[specs[pick(9)].outputs[0]])
    w.build()
    # failures without -k
    w.edit(srcs[pick(10)])
    w.edit(srcs[pick(11)])
    w.build(fail=[specs[pick(12)].outputs[0], specs[pick(13)].outputs[0]], keep_going=False)
    w.build()
    # Ctrl-C once the first rule finished; the next build completes the work
    for p in srcs:
        w.edit(p)
    w.build(interrupt_after=1)
    w.build()
    # the racy case: an edit in the same tick as the previous write, keeping the whole stat
    p = srcs[pick(14)]
    w.edit(p)
    w.advance(3 * MS)
    w.build(advance=2 * MS)
    assert w.fs.same_tick(p)
    w.sneaky_edit(p)
    w.build()
    w.build()


# Executor set-ups the sweep cycles through: one slot; several, finishing together (fifo_all) or one
# at a time, oldest or newest first. Different orders of completion, same expected result (-k).
EXECUTORS = [(1, "fifo_all"), (2, "fifo_all"), (3, "lifo_one"), (2, "fifo_one")]


def sweep(max_n: int, kinds_for: Callable[[int, int], Iterable[str]]) -> tuple[int, int]:
    graphs = builds = 0
    for n in range(1, max_n + 1):
        for e, edges in enumerate(all_dags(n)):
            for kinds in kinds_for(n, e):
                slots, order = EXECUTORS[graphs % len(EXECUTORS)]
                w = World(dag_specs(n, edges, kinds), slots=slots, order=order)
                scenario(w, graphs)
                graphs += 1
                builds += w.builds
    return graphs, builds


def _rot(p: str, k: int) -> str:
    k %= len(p)
    return p[k:] + p[:k]


def default_kinds(n: int, e: int) -> Iterable[str]:
    """Every kind assignment up to 3 rules; for 4, all-same ones and three mixed ones, rotated
    with the DAG so that across DAGs each position gets each kind."""
    if n <= 3:
        return ("".join(k) for k in product(KINDS, repeat=n))
    return ["oooo", "tttt", "mmmm", _rot("otmt", e), _rot("tmoo", e + 1), _rot("mtto", e + 2)]


def slow_kinds(n: int, e: int) -> Iterable[str]:
    """Every kind assignment up to 4 rules; for 5, a few per DAG."""
    if n <= 4:
        return ("".join(k) for k in product(KINDS, repeat=n))
    return ["ooooo", "ttttt", _rot("otmto", e), _rot("ttmoo", e + 2)]


def test_exhaustive_small_dags(record_property: Any) -> None:
    t = time.perf_counter()
    graphs, builds = sweep(5, slow_kinds) if SLOW else sweep(4, default_kinds)
    seconds = time.perf_counter() - t
    record_property("graphs", graphs)
    record_property("builds", builds)
    print(f"exhaustive: {graphs} graphs, {builds} checked builds in {seconds:.1f}s")


def test_temp_needed_by_one_consumer_only() -> None:
    """Materialising a temp file for one consumer must not make its other consumers stale."""
    w = World(parse_spec("""
        tmp/0 <- src/0 !temp
        out/1 <- src/1 tmp/0
        out/2 <- src/2 tmp/0
    """))
    w.build()
    w.edit("src/1")
    w.build()
    assert sorted(w.last_ran) == ["out/1", "tmp/0"]


@pytest.mark.parametrize("slots", [1, 2])
def test_failed_temp_does_not_block_an_up_to_date_consumer(slots: int) -> None:
    """A temp rule materialised for c1 fails; c2 reads it too but is up to date: it is not
    affected, whatever the order in which things finish (-k)."""
    w = World(
        parse_spec("""
            tmp/m <- src/m !temp
            out/c1 <- src/c1 tmp/m
            out/x <- src/x
            out/c2 <- tmp/m out/x
            out/after <- out/c2 src/after
        """),
        slots=slots,
    )
    w.build()
    w.edit("src/c1")
    w.edit_comment("src/x")  # x reruns and writes the same bytes
    w.edit("src/after")
    w.build(fail=["tmp/m"])
    assert sorted(w.last_ran) == ["out/after", "out/x", "tmp/m"]


@pytest.mark.parametrize("slots", [1, 2])
def test_rule_reading_a_failed_temp_file_does_not_run(slots: int) -> None:
    """d1 (temp) is materialised for c1 and fails; later c3 needs d2, which reads d1: d2 must
    not run on d1's missing or half-written file, and c3 is blocked."""
    w = World(
        parse_spec("""
            tmp/d1 <- src/d1 !temp
            tmp/d2 <- tmp/d1 !temp
            out/c1 <- src/c1 tmp/d1
            out/x <- src/x
            out/c3 <- src/c3 tmp/d2 out/x
        """),
        slots=slots,
    )
    w.build()
    w.edit("src/c1")
    w.edit("src/c3")
    w.edit_comment("src/x")
    w.build(fail=["tmp/d1"])
    assert sorted(w.last_ran) == ["out/x", "tmp/d1"]
    w.build()
