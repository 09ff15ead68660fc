"""The reference model (test_model.Model) against the real `pipe` command on a real filesystem.

A random sample of the cases test_model_failures.py sweeps in memory: a DAG of up to 5 rules
(`test_model.dag_specs`) with rule kinds (ordinary, temp, two outputs) and a set of failing rules.
The spec becomes a real Pipefile.py whose actions compute the very bytes `fakes.produce` gives (so
the model knows every output), log their start to ran.log (conftest's HEADER) and, when named in
$E2E_FAIL, write half an output and raise. `python -m buildpipe build -k -j N --shuffle SEED` then
runs through a sequence of edits, touches, deleted and hand-edited outputs, action and params
changes (the Pipefile rewritten) and target subsets. After every build:
  - the rules that ran (the action-side log) are exactly the model's, each once; exit 1 iff a
    rule failed;
  - every output of a rule that is up to date or was built has clean-build bytes, temp files are
    gone exactly when the model says, and nothing else changed;
  - the records in .buildpipe/state.db match the model: none for a failed rule, the unchanged old
    one (or none) for a blocked consumer, and for every other rule the input and output bytes of
    its last successful run;
and without -k (-j1) what holds for any order: only rules the model runs, dependencies first,
nothing after the first failure. Each sample ends with a real clean build of the same Pipefile
and sources in a fresh directory, whose outputs must equal the incremental ones byte for byte.

The default run takes DEFAULT_SAMPLES samples; BUILDPIPE_SLOW=1 (or `pytest --slow`) SLOW_SAMPLES.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fakes import RuleSpec, format_spec
from test_model import (
    BLOCKED,
    BUILT,
    DEFERRED,
    FAILED,
    KINDS,
    NOTRUN,
    SLOW,
    UPTODATE,
    Model,
    Plan,
    _joined,
    _same_paths,
    clean_build,
    dag_specs,
)

from buildpipe.filesystem import digest_bytes
from buildpipe.store import DB_NAME, Store

DEFAULT_SAMPLES = 6
SLOW_SAMPLES = 120
SAMPLES = int(os.environ.get("BUILDPIPE_E2E_SAMPLES", "0")) or (SLOW_SAMPLES if SLOW else DEFAULT_SAMPLES)

ACTIONS = '''
import xxhash


def make(version, mode):
    """The action of a rule: the bytes fakes.produce gives; fails when named in $E2E_FAIL."""

    def action(output, inputs, params):
        outs = output if isinstance(output, list) else [output]
        names = [os.path.relpath(str(o)) for o in outs]
        log(names[0])
        if names[0] in os.environ.get("E2E_FAIL", "").split(","):
            Path(names[0]).write_bytes(b"partial garbage of a crashed action")
            raise RuntimeError("failing on purpose: " + names[0])
        datas = [p.read_bytes() for p in inputs]
        basis = b"" if mode == "const" else b"\\0".join(d.split(b"#", 1)[0] for d in datas)
        h = xxhash.xxh3_64_hexdigest(basis)
        p = ",".join(f"{k}={params[k]!r}" for k in sorted(params) if k != "noise")
        for name, o in zip(names, outs):
            o.write_bytes(f"{name}|v{version}|{p}|{h}\\n".encode())

    return action

'''


def pipefile_body(specs: Sequence[RuleSpec]) -> str:
    lines = [ACTIONS]
    for s in specs:
        outs: Any = s.outputs[0] if len(s.outputs) == 1 else list(s.outputs)
        lines.append(
            f"rule({outs!r}, inputs={list(s.inputs)!r}, action=make({s.version}, {s.mode!r}),"
            f" params={s.params!r}, temp={s.temp})"
        )
    return "\n".join(lines) + "\n"


class Mismatch(AssertionError):
    pass


class E2EWorld:
    """A project driven through `pipe` and predicted by the model."""

    def __init__(self, project: Any, specs: Sequence[RuleSpec], jobs: int, seed: int) -> None:
        self.p = project
        self.specs = [s.copy() for s in specs]
        self.initial = format_spec(self.specs)
        self.jobs = jobs
        self.seed = seed
        self.model = Model()
        self.history: list[str] = []
        self.src: dict[str, list[int]] = {}
        self.builds = 0
        self.last_ran: list[str] = []
        produced = {o for s in self.specs for o in s.outputs}
        for s in self.specs:
            for i in s.inputs:
                if i not in produced and i not in self.src:
                    self.src[i] = [0, 0]
                    self._write_src(i)
        self.write_pipefile()

    # -- helpers ----------------------------------------------------------------------------------

    def _write_src(self, p: str) -> None:
        v, c = self.src[p]
        self.p.write(p, f"{p}:{v:04d}#{c:04d}".encode())

    def read(self, p: str) -> bytes | None:
        try:
            return self.p.path(p).read_bytes()
        except FileNotFoundError:
            return None

    def files(self) -> dict[str, bytes]:
        return self.p.snapshot("out", "tmp", "src")

    def write_pipefile(self) -> None:
        self.p.pipefile(pipefile_body(self.specs))

    def repro(self) -> str:
        steps = "\n".join("    " + h for h in self.history)
        graph = "\n".join("    " + line for line in self.initial.splitlines())
        return f"e2e: -j{self.jobs}, --shuffle {self.seed}+k for build k\ngraph:\n{graph}\nsteps:\n{steps}"

    # -- what a user does -------------------------------------------------------------------------

    def edit(self, p: str, comment: bool = False) -> None:
        self.src[p][1 if comment else 0] += 1
        self._write_src(p)
        self.history.append(f"edit {'comment of ' if comment else ''}{p}")

    def touch(self, p: str) -> None:
        t = time.time_ns() + 1_000_000_000
        os.utime(self.p.path(p), ns=(t, t))
        self.history.append(f"touch {p}")

    def delete(self, p: str) -> None:
        self.p.remove(p)
        self.history.append(f"rm {p}")

    def hand_edit(self, p: str) -> None:
        old = self.p.path(p).read_bytes()
        self.p.write(p, b"edited by hand: " + old)
        self.history.append(f"hand-edit {p}")

    def bump_action(self, j: int) -> None:
        self.specs[j].version += 1
        self.write_pipefile()
        self.history.append(f"change the action of {self.specs[j].outputs[0]}")

    def set_params(self, j: int, params: dict[str, Any]) -> None:
        self.specs[j].params = params
        self.write_pipefile()
        self.history.append(f"params of {self.specs[j].outputs[0]} = {params}")

    # -- a build, checked -------------------------------------------------------------------------

    def build(
        self,
        targets: Sequence[str] | None = None,
        fail: Sequence[str] = (),
        keep_going: bool = True,
    ) -> None:
        self.builds += 1
        jobs = self.jobs if keep_going else 1
        shuffle = self.seed + self.builds
        args = ["build", f"-j{jobs}", "--shuffle", str(shuffle)]
        if keep_going:
            args.append("-k")
        args += list(targets or [])
        self.history.append("pipe " + " ".join(args) + (f"  (failing: {', '.join(fail)})" if fail else ""))
        specs = self.specs
        plan = self.model.plan(specs, self.read, targets, fail)
        before = self.files()
        records_before = self.records()
        env = self.p.env(E2E_FAIL=",".join(fail))
        run = self.p.run(*args, rc=None, env=env)
        ran = run.ran
        self.last_ran = ran

        def check(cond: bool, what: str) -> None:
            if not cond:
                raise Mismatch(f"{what}\n{self.repro()}\n{run}")

        index = {s.outputs[0]: i for i, s in enumerate(specs)}
        check(all(r in index for r in ran), "an unknown rule ran")
        started = [index[r] for r in ran]
        check(len(started) == len(set(started)), "a rule ran twice")
        failing = {index[f] for f in fail}
        will_fail = FAILED in plan.outcome.values()

        def names(ids: Any) -> list[str]:
            return sorted(specs[i].outputs[0] for i in ids)

        if keep_going or not will_fail:
            outcome = plan.outcome
            check(
                set(started) == plan.ran(),
                f"ran {names(started)}, the model runs {names(plan.ran())}",
            )
        else:
            outcome = self._partial(plan, started, failing, check)
        failed = any(x == FAILED for x in outcome.values())
        check(run.rc == (1 if failed else 0), f"exit status {run.rc}")
        self.model.commit(specs, plan, outcome)
        complete = keep_going or not will_fail

        # records
        got_records = self.records()
        for i, s in enumerate(specs):
            rid = s.outputs[0]
            got = got_records[rid]
            want = self.model.records.get(rid)
            if outcome.get(i) not in (BUILT, FAILED):
                check(got == records_before[rid], f"the record of {rid} changed, yet it did not run")
            if want is None:
                check(got is None, f"{rid} has a record, the model has none ({outcome.get(i)})")
                continue
            check(got is not None, f"{rid} has no record ({outcome.get(i)})")
            assert got is not None
            check(_same_paths(got, "inputs", want.inputs), f"{rid}: recorded inputs differ")
            check(
                _joined(got.input_digests) == b"".join(digest_bytes(b) for b in want.in_bytes),
                f"{rid}: recorded input digests differ from the bytes it was built from",
            )
            check(
                _joined(got.output_digests) == b"".join(digest_bytes(b) for b in want.out_bytes),
                f"{rid}: recorded output digests differ from the bytes it produced",
            )

        # files
        clean = clean_build(specs, self.read)
        deleted = self.model.temp_deleted(specs, plan, outcome)
        after = self.files()
        checked: set[str] = set()
        for i in plan.wanted:
            s = specs[i]
            x = outcome[i]
            for o in s.outputs:
                checked.add(o)
                now = after.get(o)
                if x in (UPTODATE, BUILT):
                    if i in deleted and complete:
                        check(now is None, f"temp file {o} was not deleted")
                    elif s.temp and (not complete or i in deleted):
                        check(now in (None, clean[o]), f"temp file {o} holds {now!r}")
                    else:
                        check(now == clean[o], f"{o} ({x}) holds {now!r}, clean: {clean[o]!r}")
                elif x in (BLOCKED, NOTRUN, DEFERRED):
                    check(now == before.get(o), f"{o} ({x}) was changed")
        for p in set(before) | set(after):
            if p not in checked:
                check(before.get(p) == after.get(p), f"{p} was touched")

    def _partial(self, plan: Plan, started: list[int], failing: set[int], check: Any) -> dict:
        """-j1 without -k: the last rule started is the first failure, nothing started after it;
        only rules the model runs, each after the rules it needs that run."""
        specs = self.specs
        check(bool(started) and started[-1] in failing, "the build did not stop at a failure")
        for k, i in enumerate(started):
            check(i in plan.run_all, f"{specs[i].outputs[0]} ran; the model does not run it")
            check(k == len(started) - 1 or i not in failing, "a rule started after a failure")
            for d in plan.deps[i]:
                if d in plan.run_all:
                    check(d in started[:k], f"{specs[i].outputs[0]} ran before {specs[d].outputs[0]}")
        outcome: dict[int, str] = {}
        for i in plan.wanted:
            if i in started:
                outcome[i] = FAILED if i == started[-1] else BUILT
            elif i in plan.run_all:
                outcome[i] = NOTRUN
            else:
                outcome[i] = plan.outcome[i] if plan.outcome[i] != BLOCKED else NOTRUN
        return outcome

    def records(self) -> dict[str, Any]:
        db = self.p.path(".buildpipe") / DB_NAME
        if not db.exists():
            return {s.outputs[0]: None for s in self.specs}
        store = Store(str(db), readonly=True)
        try:
            return {s.outputs[0]: store.rule(s.outputs[0]) for s in self.specs}
        finally:
            store.close()

    def check_against_a_clean_build(self) -> None:
        """The same Pipefile and sources built from scratch by `pipe` in a fresh directory."""
        fresh = self.p.scratch / "clean"
        if fresh.exists():
            shutil.rmtree(fresh)
        fresh.mkdir()
        shutil.copy(self.p.path("Pipefile.py"), fresh / "Pipefile.py")
        for s in self.src:
            (fresh / s).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.p.path(s), fresh / s)
        self.p.run("build", f"-j{self.jobs}", cwd=fresh, env=self.p.env(E2E_FAIL=""))
        # what `pipe build` builds: every non-temp rule and what it needs (a temp rule no one
        # reads, asked for by name earlier, may have been left behind half-written by a failure)
        wanted = self.model.plan(self.specs, self.read).wanted
        outs = [o for i in wanted for o in self.specs[i].outputs]

        def read(root: Path, o: str) -> bytes | None:
            return (root / o).read_bytes() if (root / o).exists() else None

        got = {o: read(self.p.root, o) for o in outs}
        want = {o: read(fresh, o) for o in outs}
        assert got == want, f"incremental != clean build\n{self.repro()}"


# -- the sample ------------------------------------------------------------------------------------


def sample_case(k: int) -> tuple[list[RuleSpec], list[int], int, int]:
    """A fixed pseudo-random case: specs, failing rules, -j, shuffle seed."""
    rng = random.Random(7_000_003 * (k + 1))
    n = rng.choice([2, 3, 4, 5, 5, 5])
    pairs = [(i, j) for j in range(n) for i in range(j)]
    density = rng.choice([0.3, 0.5, 0.8])
    edges = {p for p in pairs if rng.random() < density}
    kinds = "".join(rng.choice(KINDS) for _ in range(n))
    failing = sorted(rng.sample(range(n), rng.randint(1, min(3, n))))
    return dag_specs(n, edges, kinds), failing, rng.choice([1, 2, 4]), rng.randrange(1 << 30)


def consumers_of(specs: Sequence[RuleSpec], j: int) -> list[int]:
    outs = set(specs[j].outputs)
    return [i for i, s in enumerate(specs) if outs & set(s.inputs)]


@pytest.mark.parametrize("k", range(SAMPLES))
def test_model_end_to_end(project: Any, k: int) -> None:
    specs, failing, jobs, seed = sample_case(k)
    w = E2EWorld(project, specs, jobs, seed)
    n = len(specs)
    srcs = sorted(w.src)
    fail = [specs[i].outputs[0] for i in failing]
    j = failing[k % len(failing)]

    w.build()  # clean
    w.build()  # no-op
    assert w.last_ran == []
    for p in srcs:
        w.touch(p)
    w.build()  # touch is free
    assert w.last_ran == []
    for p in srcs:  # everything runs; the failures and their consumers are not recorded
        w.edit(p)
    w.build(fail=fail)
    w.build()  # the failed and blocked rules, nothing else
    # an output deleted and another edited by hand (of non-temp rules), a comment-only edit
    plain = [i for i in range(n) if not specs[i].temp]
    if plain:
        w.delete(specs[plain[k % len(plain)]].outputs[-1])
        edited = specs[plain[(k + 1) % len(plain)]].outputs[0]
        if w.read(edited) is not None:
            w.hand_edit(edited)
    w.edit(f"src/{(k + 2) % n}", comment=True)
    w.build(fail=fail)
    # the action of a failing rule changes, the params of another, the sources of a consumer;
    # a target subset
    w.bump_action(j)
    w.set_params((j + 1) % n, {"p": k})
    cons = consumers_of(specs, j)
    if cons:
        w.edit(f"src/{cons[0]}")
    target = specs[cons[-1] if cons else j].outputs[-1]
    w.build([target], fail=fail)
    w.build()
    # without -k, one job: stops at the first failure
    for p in srcs:
        w.edit(p)
    w.build(fail=fail, keep_going=False)
    w.build()
    w.build()
    assert w.last_ran == []
    w.check_against_a_clean_build()


def test_pipefile_actions_match_the_fake_actions(project: Any) -> None:
    """The generated Pipefile's actions write what fakes.produce says (the model relies on it)."""
    specs = dag_specs(3, {(0, 1), (1, 2), (0, 2)}, "mto")
    specs[2].params = {"p": 3, "noise": 1}
    specs[1].mode = "const"
    specs[0].version = 2
    w = E2EWorld(project, specs, 2, 0)
    w.build()
    assert sorted(w.last_ran) == ["out/0.a", "out/2", "tmp/1"]
    want = clean_build(specs, w.read)
    assert w.read("out/0.a") == want["out/0.a"]
    assert w.read("out/2") == want["out/2"]
    assert w.read("tmp/1") is None
    assert Path(project.path("out/2")).read_bytes().startswith(b"out/2|v0|p=3|")
