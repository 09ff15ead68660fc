"""Random DAGs and random edit/build sequences, engine vs reference model (see test_model.py).

The default run keeps to modest graphs and example counts; BUILDPIPE_SLOW=1 draws bigger graphs,
longer sequences and many more examples.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from fakes import MS, SECOND, RuleSpec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_model import SLOW, World

MAX_RULES = 50 if SLOW else 20
MAX_STEPS = 30 if SLOW else 14
EXAMPLES = int(os.environ.get("BUILDPIPE_MODEL_EXAMPLES", "0")) or (1500 if SLOW else 200)


@st.composite
def graphs(draw: Any, max_rules: int = MAX_RULES) -> list[RuleSpec]:
    n = draw(st.integers(1, max_rules))
    density = draw(st.sampled_from([0.0, 0.1, 0.25, 0.5]))
    shared = [f"src/shared{k}" for k in range(draw(st.integers(0, 3)))]
    specs: list[RuleSpec] = []
    for j in range(n):
        kind = draw(st.sampled_from(["o", "o", "o", "t", "t", "m", "tm"]))
        k = draw(st.integers(2, 3)) if "m" in kind else 1
        outs = tuple(f"{'tmp' if 't' in kind else 'out'}/{j}" + (f".{c}" if k > 1 else "")
                     for c in "abc"[:k])
        ins: list[str] = []
        srcs = draw(st.integers(0, 2))
        if srcs >= 1:
            ins.append(f"src/{j}")
        if srcs >= 2 and shared:
            ins.append(draw(st.sampled_from(shared)))
        for i in range(j):
            if draw(st.floats(0, 1)) < density:
                dep = specs[i].outputs
                if len(dep) > 1 and draw(st.booleans()):
                    ins.append(draw(st.sampled_from(dep)))  # only one of its outputs
                else:
                    ins.extend(dep)
        ins = list(dict.fromkeys(ins))
        if ins and draw(st.integers(0, 9)) == 0:
            ins.append(ins[0])  # the same input twice
        ins = draw(st.permutations(ins))
        specs.append(
            RuleSpec(
                outs,
                tuple(ins),
                temp="t" in kind,
                mode=draw(st.sampled_from(["hash", "hash", "hash", "const"])),
                params=draw(st.sampled_from([None, {"p": 0}])),
            )
        )
    return specs


OPS = [
    "build", "build", "build", "edit", "edit", "edit_comment", "touch", "sneaky", "delete",
    "hand_edit", "params", "noise", "action", "advance", "dry", "inputs", "graph", "replace",
    "backdate", "sneaky_out",
]


@st.composite
def steps(draw: Any, specs: list[RuleSpec]) -> list[tuple[Any, ...]]:
    srcs = sorted({p for s in specs for p in s.inputs} - {o for s in specs for o in s.outputs})
    outs = [o for s in specs for o in s.outputs]
    firsts = [s.outputs[0] for s in specs]
    firsts += [s.outputs[0] for s in specs if s.temp] * 2  # temp rules failing are interesting
    out: list[tuple[Any, ...]] = [("build", None, (), True, False, (), SECOND + 7, None)]
    for _ in range(draw(st.integers(1, MAX_STEPS))):
        op = draw(st.sampled_from(OPS))
        if op == "build":
            targets = None
            if draw(st.integers(0, 3)) == 0:
                targets = draw(st.lists(st.sampled_from(outs), min_size=1, max_size=3))
            fail: list[str] = []
            if draw(st.integers(0, 2)) == 0:
                fail = draw(st.lists(st.sampled_from(firsts), min_size=1, max_size=4))
            keep_going = draw(st.integers(0, 4)) > 0
            force_all = draw(st.integers(0, 15)) == 0
            force = draw(st.lists(st.sampled_from(outs), max_size=2)) if draw(
                st.integers(0, 10)) == 0 else []
            adv = draw(st.sampled_from([SECOND + 7, 2 * MS + 3, 0]))
            stop = draw(st.integers(1, 6)) if draw(st.integers(0, 7)) == 0 else None
            out.append(
                ("build", targets, tuple(fail), keep_going, force_all, tuple(force), adv, stop)
            )
        elif op in ("edit", "edit_comment", "touch", "sneaky", "replace", "backdate"):
            if srcs:
                out.append((op, draw(st.sampled_from(srcs))))
        elif op == "sneaky_out":
            out.append((op, draw(st.sampled_from(outs))))
        elif op in ("delete", "hand_edit"):
            out.append((op, draw(st.sampled_from(outs)), draw(st.booleans())))
        elif op in ("params", "noise", "action"):
            out.append((op, draw(st.integers(0, 99)), draw(st.integers(0, 2))))
        elif op == "advance":
            out.append((op, draw(st.sampled_from([1 * MS + 1, 30 * MS + 1, SECOND + 7]))))
        elif op == "dry":
            targets = None
            if draw(st.booleans()):
                targets = draw(st.lists(st.sampled_from(outs), min_size=1, max_size=2))
            out.append((op, targets))
        elif op == "inputs":
            how = draw(st.sampled_from(["rotate", "drop", "add_source", "add_dep"]))
            out.append((op, draw(st.integers(0, 99)), how, draw(st.integers(0, 99))))
        elif op == "graph":
            how = draw(st.sampled_from(["add", "remove", "temp"]))
            ins = draw(st.lists(st.sampled_from(outs + srcs[:1]), max_size=3, unique=True))
            out.append((op, how, draw(st.integers(0, 99)), ins, draw(st.booleans())))
    out.append(("build", None, (), True, False, (), SECOND + 7, None))  # always end by converging
    return out


def _known(world: World, targets: list[str] | None) -> list[str] | None:
    """The targets still declared (the graph may have changed since they were drawn)."""
    if targets is None:
        return None
    outs = {o for s in world.specs for o in s.outputs}
    return [t for t in targets if t in outs] or None


def _upstream(world: World, j: int) -> set[int]:
    """The rules rule j needs, transitively (a new input from any other rule keeps a DAG)."""
    producer = {o: i for i, s in enumerate(world.specs) for o in s.outputs}
    seen: set[int] = set()
    stack = [j]
    while stack:
        for p in world.specs[stack.pop()].inputs:
            q = producer.get(p)
            if q is not None and q not in seen:
                seen.add(q)
                stack.append(q)
    return seen


def run(world: World, plan: list[tuple[Any, ...]]) -> None:
    for step in plan:
        op = step[0]
        if op == "build":
            _, targets, fail, keep_going, force_all, force, adv, stop = step
            force = _known(world, list(force)) or []
            world.build(_known(world, targets), fail=fail, keep_going=keep_going,
                        force_all=force_all, force=force, advance=adv, interrupt_after=stop)
        elif op == "edit":
            world.edit(step[1])
        elif op == "edit_comment":
            world.edit_comment(step[1])
        elif op == "touch":
            world.touch(step[1])
        elif op == "sneaky":
            # Only an edit within the racy window is guaranteed to be seen (contract §2).
            if world.fs.same_tick(step[1]):
                world.sneaky_edit(step[1])
            else:
                world.edit(step[1])
        elif op == "replace":
            world.replace_file(step[1])
        elif op == "backdate":
            world.backdate(step[1], 3600 * SECOND)
        elif op == "sneaky_out":
            if world.fs.exists(step[1]) and world.fs.same_tick(step[1]):
                world.sneaky_hand_edit(step[1])
            elif world.fs.exists(step[1]):
                world.hand_edit(step[1])
        elif op == "delete":
            if world.fs.exists(step[1]):
                world.delete(step[1])
        elif op == "hand_edit":
            world.hand_edit(step[1], same_size=step[2])
        elif op == "params":
            i = step[1] % len(world.specs)
            world.set_params(i, {**(world.specs[i].params or {}), "p": step[2] + 10})
        elif op == "noise":
            i = step[1] % len(world.specs)
            world.set_params(i, {**(world.specs[i].params or {}), "noise": step[2]})
        elif op == "action":
            world.bump_action(step[1] % len(world.specs))
        elif op == "advance":
            world.advance(step[1])
        elif op == "dry":
            world.dry_build(_known(world, step[1]))
        elif op == "graph":
            _, how, k, ins, flag = step
            specs = world.specs
            if how == "add":
                produced = {o for s in specs for o in s.outputs}
                outs = (f"out/new{k}",) if flag else (f"tmp/new{k}",)
                if outs[0] not in produced:
                    world.add_rule(RuleSpec(outs, tuple(p for p in ins if p in produced
                                                        or p.startswith("src/")), temp=not flag))
            elif how == "remove":
                read = {p for s in specs for p in s.inputs}
                sinks = [i for i, s in enumerate(specs) if not read & set(s.outputs)]
                if len(specs) > 1 and sinks:
                    world.remove_rule(sinks[k % len(sinks)])
            else:
                i = k % len(specs)
                world.set_temp(i, not specs[i].temp)
        elif op == "inputs":
            _, i, how, k = step
            i %= len(world.specs)
            ins = list(world.specs[i].inputs)
            if how == "rotate" and len(ins) > 1:
                ins = ins[1:] + ins[:1]
            elif how == "drop" and ins:
                del ins[k % len(ins)]
            elif how == "add_source":
                ins.insert(k % (len(ins) + 1), f"src/extra{k % 3}")
            elif how == "add_dep":
                ok = [j for j in range(len(world.specs)) if i not in _upstream(world, j) | {j}]
                if ok:
                    ins.extend(o for o in world.specs[ok[k % len(ok)]].outputs if o not in ins)
            world.set_inputs(i, ins)


@st.composite
def worlds(draw: Any) -> tuple[list[RuleSpec], dict[str, Any], list[tuple[Any, ...]]]:
    specs = draw(graphs())
    if draw(st.integers(0, 3)) == 0:  # declared out of dependency order: a consumer first
        specs = draw(st.permutations(specs))
    options = {
        "granularity": draw(st.sampled_from([1, 1, 10 * MS, SECOND, 2 * SECOND])),
        "reuse_inodes": draw(st.booleans()),
        "slots": draw(st.sampled_from([1, 1, 2, 3, 8])),
        "order": draw(st.sampled_from(["fifo_all", "fifo_one", "lifo_one"])),
        "reopen": draw(st.integers(0, 4)) == 0,
        # slow actions: the build outlives the racy window of what it wrote
        "rule_ns": draw(st.sampled_from([100_003, 100_003, 20 * MS + 1])),
    }
    return specs, options, draw(steps(specs))


# Shrinking a failing sequence takes minutes (each example is dozens of builds), and the failure
# message already holds a full repro (World.repro: options, graph, steps; replay it with
# World.from_repro + World.replay). BUILDPIPE_SHRINK=1 asks Hypothesis for a minimal one.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + (
    [Phase.shrink] if os.environ.get("BUILDPIPE_SHRINK") else []
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
@given(worlds())
def test_random_graphs_and_edits(case: tuple[list[RuleSpec], dict[str, Any], list[Any]]) -> None:
    specs, options, plan = case
    with tempfile.TemporaryDirectory() as d:
        if options.pop("reopen"):
            options.update(store_path=os.path.join(d, "state.db"), reopen=True)
        w = World(specs, **options)
        try:
            run(w, plan)
        finally:
            w.store.close()
