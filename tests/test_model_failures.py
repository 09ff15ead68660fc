"""Model checking with failures: every DAG x rule kinds x every set of failing rules.

Each case is a DAG over a fixed topological order (rule j reads src/j and every output of each
earlier rule i with an edge (i, j); `test_model.dag_specs`), a kind per rule (ordinary, temp,
two outputs) and an executor set-up (slots, completion order, a `--shuffle` seed). One World (the
real engine on the in-memory filesystem, checked after every build against the reference model:
the rules that ran are exactly the model's, every output holds clean-build bytes, failed rules
have no record and blocked consumers keep the one they had) then goes through EVERY set F of
failing rules, each with:

  (a) edit every source, `build -k` with F failing: every rule wants to run, so the failures
      that are not downstream of another one happen and block their consumers; then a build
      with nothing failing, which must run exactly the failed and blocked rules;
  (b) a change aimed at a member of F (or at a consumer of it, for a temp rule whose files are
      gone): a source edit, a comment-only edit (early cutoff), an output deleted or edited by
      hand, an action, params or input-order change, a forced rule, a target subset, touches;
      then `build -k` with F failing (only what that change makes run can fail), and a build
      with nothing failing;
  (c) for every fourth F, edit every source and build *without* -k with F failing: what ran
      depends on scheduling, so World checks what holds for any order (nothing starts after the
      first failure, dependencies first, only what the model runs, records of what finished).

The default run is a deterministic slice (about 30 s): every DAG up to 3 rules x every kind
assignment, every 4-rule DAG x ordinary rules and two mixed kind assignments (rotated so that each
position gets each kind), and a fixed pseudo-random sample of 5-rule cases; every failing set for
each. BUILDPIPE_SLOW=1 (or `pytest --slow`) sweeps every DAG up to 4 rules x every kind assignment,
and every 5-rule DAG x SLOW_KINDS_5 kind assignments per DAG, again with every failing set, in
parallel processes (one per CPU).

A hypothesis test draws random graphs up to 50 rules with edits, failures, targets and a
`--shuffle` seed (same checks, any start order).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator, Sequence
from itertools import combinations, product
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
    parse_spec,
    sources,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_model import EXECUTORS, KINDS, SLOW, World, all_dags, dag_specs
from test_model_random import graphs, run, steps

from buildpipe.build import Build, BuildOptions, BuildSummary
from buildpipe.store import Store

# Kind assignments per 5-rule DAG in the slow sweep (all 243 for each of the 1024 DAGs times 32
# failing sets would take hours): all-ordinary, all-temp, and rotated mixes.
SLOW_KINDS_5 = 6
# The fixed sample of 5-rule cases in the default run.
DEFAULT_SAMPLE_5 = 20

Case = tuple[int, tuple[tuple[int, int], ...], str]  # n, edges, kinds


def failing_sets(n: int) -> list[tuple[int, ...]]:
    """Every subset of the n rules, smallest first."""
    return [c for k in range(n + 1) for c in combinations(range(n), k)]


def _rot(p: str, k: int) -> str:
    k %= len(p)
    return p[k:] + p[:k]


def _consumers(w: World, j: int) -> list[int]:
    outs = set(w.specs[j].outputs)
    return [i for i, s in enumerate(w.specs) if outs & set(s.inputs)]


MUTATIONS = "edit delete comment action hand_edit target params inputs force noise touch".split()


def mutate(w: World, j: int, k: int) -> tuple[list[str] | None, list[str]]:
    """Apply mutation number k aimed at rule j. Returns the targets and --force list for the
    next build. A change to a temp rule's files goes to a consumer instead (they are gone once
    the consumers are built): the consumer then has to run, and materialises the temp rule."""
    specs = w.specs
    n = len(specs)
    what = MUTATIONS[k % len(MUTATIONS)]
    src = f"src/{j}"
    cons = _consumers(w, j)
    # the rule whose files a file-level change hits: j, or a consumer when j is temp
    hit = j
    if specs[j].temp:
        hit = cons[k % len(cons)] if cons else j
    if what == "edit":
        w.edit(src)
    elif what == "comment":
        w.edit_comment(src)  # j reruns, writes the same bytes: its consumers do not
        w.edit(f"src/{(j + 1 + k) % n}")
    elif what in ("delete", "hand_edit"):
        outs = [o for o in specs[hit].outputs if w.fs.exists(o)]
        if not outs:  # a temp rule with no consumer: ask for it by name
            return [specs[hit].outputs[0]], []
        o = outs[k % len(outs)]
        if what == "delete":
            w.delete(o)
        else:
            w.hand_edit(o, same_size=k % 2 == 0)
    elif what == "action":
        w.bump_action(j)
    elif what == "params":
        w.set_params(j, {**(specs[j].params or {}), "p": w.builds})
    elif what == "noise":
        w.set_params(j, {**(specs[j].params or {}), "noise": w.builds})
        w.edit(f"src/{(j + k) % n}")
    elif what == "inputs":
        ins = specs[j].inputs
        if len(ins) > 1:
            w.set_inputs(j, (*ins[1:], ins[0]))
        else:
            w.edit(src)
    elif what == "force":
        return None, [specs[j].outputs[-1]]
    elif what == "touch":
        for p in sorted(w.src):
            w.touch(p)
        w.edit(src)
    elif what == "target":
        w.edit(src)
        w.edit(f"src/{(j + k) % n}")
        # a target subset: j's consumer (or j), so j is in its closure; others may be too
        t = cons[k % len(cons)] if cons else j
        return [specs[t].outputs[-1]], []
    return None, []


def failure_scenario(w: World, fsets: Sequence[tuple[int, ...]], seed: int) -> int:
    """(a), (b), (c) of the module docstring for every failing set; returns scenarios run."""
    specs = w.specs
    n = len(specs)
    srcs = [f"src/{j}" for j in range(n)]
    w.build()  # clean
    for k, F in enumerate(fsets):
        fail = [specs[i].outputs[0] for i in F]
        # (a) everything runs
        for p in srcs:
            w.edit(p)
        w.build(fail=fail)
        w.build()
        # (b) a change aimed at a member of F
        j = F[(seed + k) % len(F)] if F else (seed + k) % n
        targets, force = mutate(w, j, seed + k)
        w.build(targets, fail=fail, force=force)
        w.build()
        # (c) without -k
        if F and k % 4 == 3:
            for p in srcs:
                w.edit(p)
            w.build(fail=fail, keep_going=False)
            w.build()
    return len(fsets)


def run_case(index: int, case: Case) -> tuple[int, int]:
    """One World through every failing set. Returns (scenarios, builds)."""
    n, edges, kinds = case
    slots, order = EXECUTORS[index % len(EXECUTORS)]
    shuffle = None if index % 4 == 0 else index  # mostly shuffled; the default order too
    w = World(dag_specs(n, set(edges), kinds), slots=slots, order=order, shuffle=shuffle)
    scenarios = failure_scenario(w, failing_sets(n), index)
    return scenarios, w.builds


def _dags(n: int) -> list[tuple[tuple[int, int], ...]]:
    return [tuple(sorted(e)) for e in all_dags(n)]


def default_cases() -> Iterator[Case]:
    for n in (1, 2, 3):
        for edges in _dags(n):
            for kinds in product(KINDS, repeat=n):
                yield n, edges, "".join(kinds)
    for e, edges in enumerate(_dags(4)):
        for kinds in ("oooo", _rot("otmt", e), _rot("ttmo", e + 1)):
            yield 4, edges, kinds
    rng = random.Random(20261122)
    dags5 = _dags(5)
    fixed = [(5, dags5[-1], "ooooo"), (5, dags5[-1], "ttttt"), (5, dags5[-1], "otmto")]
    yield from fixed
    for _ in range(DEFAULT_SAMPLE_5 - len(fixed)):
        yield 5, rng.choice(dags5), "".join(rng.choice(KINDS) for _ in range(5))


def slow_cases() -> Iterator[Case]:
    for n in (1, 2, 3, 4):
        for edges in _dags(n):
            for kinds in product(KINDS, repeat=n):
                yield n, edges, "".join(kinds)
    mixes = ["ooooo", "ttttt", "mmmmm", "otmto", "ttmoo", "mtoot", "tmtmt", "oottm"]
    for e, edges in enumerate(_dags(5)):
        for m, kinds in enumerate(mixes[:SLOW_KINDS_5]):
            yield 5, edges, kinds if m < 3 else _rot(kinds, e + m)


def _run_chunk(chunk: list[tuple[int, Case]]) -> tuple[int, int, int, str | None]:
    worlds = scenarios = builds = 0
    for index, case in chunk:
        try:
            s, b = run_case(index, case)
        except AssertionError as e:
            return worlds, scenarios, builds, f"case {case}: {e}"
        worlds += 1
        scenarios += s
        builds += b
    return worlds, scenarios, builds, None


def sweep(cases: list[Case], processes: int) -> tuple[int, int, int]:
    indexed = list(enumerate(cases))
    if processes <= 1:
        w, s, b, err = _run_chunk(indexed)
        if err:
            raise AssertionError(err)
        return w, s, b
    import multiprocessing

    chunks = [indexed[k::64] for k in range(64)]
    ctx = multiprocessing.get_context("fork")
    totals = [0, 0, 0]
    errors = []
    with ctx.Pool(processes) as pool:
        for w, s, b, err in pool.imap_unordered(_run_chunk, chunks):
            totals[0] += w
            totals[1] += s
            totals[2] += b
            if err:
                errors.append(err)
    if errors:
        raise AssertionError(f"{len(errors)} chunks failed; the first:\n{errors[0]}")
    return totals[0], totals[1], totals[2]


def test_every_dag_kinds_and_failing_set(record_property: Any) -> None:
    t = time.perf_counter()
    if SLOW:
        cases = list(slow_cases())
        worlds, scenarios, builds = sweep(cases, os.cpu_count() or 1)
    else:
        cases = list(default_cases())
        worlds, scenarios, builds = sweep(cases, 1)
    seconds = time.perf_counter() - t
    record_property("graphs", worlds)
    record_property("scenarios", scenarios)
    record_property("builds", builds)
    print(
        f"failures: {worlds} graphs (DAG x kinds), {scenarios} graph x failing-set scenarios, "
        f"{builds} checked builds in {seconds:.1f}s"
    )
    assert worlds == len(cases)


# -- targeted cases --------------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [None, 1, 2, 3])
def test_every_failing_set_of_a_diamond_with_temp(shuffle: int | None) -> None:
    """A diamond through a temp rule with a two-output rule on one side."""
    specs = parse_spec("""
        out/0 <- src/0
        tmp/1 <- src/1 out/0 !temp
        out/2.a out/2.b <- src/2 out/0
        out/3 <- src/3 tmp/1 out/2.a out/2.b
    """)
    w = World(specs, slots=2, shuffle=shuffle)
    failure_scenario(w, failing_sets(4), 0)


@pytest.mark.parametrize("seed", range(8))
def test_keep_going_outcome_does_not_depend_on_the_start_order(seed: int) -> None:
    """With -k the same rules run, fail and are blocked whatever order ready rules start in."""
    specs = dag_specs(5, {(0, 2), (1, 2), (0, 3), (2, 4), (3, 4)}, "otmoo")
    w = World(specs, slots=1 + seed % 3, shuffle=seed * 7919)
    w.build()
    for p in sorted(w.src):
        w.edit(p)
    w.build(fail=["out/0"])
    assert sorted(w.last_ran) == ["out/0", "tmp/1"]
    w.build()
    assert sorted(w.last_ran) == ["out/0", "out/2.a", "out/3", "out/4"]  # tmp/1 was kept


# -- random graphs up to 50 rules, shuffled --------------------------------------------------------

EXAMPLES = int(os.environ.get("BUILDPIPE_MODEL_EXAMPLES", "0")) or (1000 if SLOW else 25)


@st.composite
def shuffled_worlds(draw: Any) -> tuple[list[RuleSpec], dict[str, Any], list[tuple[Any, ...]]]:
    specs = draw(graphs(max_rules=50))
    if draw(st.integers(0, 3)) == 0:
        specs = draw(st.permutations(specs))
    options = {
        "granularity": draw(st.sampled_from([1, 10 * MS, SECOND])),
        "slots": draw(st.sampled_from([1, 2, 3, 8])),
        "order": draw(st.sampled_from(["fifo_all", "fifo_one", "lifo_one"])),
        "shuffle": draw(st.integers(0, 2**32 - 1)),
        "rule_ns": draw(st.sampled_from([100_003, 20 * MS + 1])),
    }
    return specs, options, draw(steps(specs))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate]
    + ([Phase.shrink] if os.environ.get("BUILDPIPE_SHRINK") else []),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
@given(shuffled_worlds())
def test_random_graphs_up_to_50_rules_shuffled(
    case: tuple[list[RuleSpec], dict[str, Any], list[Any]],
) -> None:
    specs, options, plan = case
    w = World(specs, **options)
    try:
        run(w, plan)
    finally:
        w.store.close()


@pytest.mark.parametrize("slots", [1, 2])
def test_a_failure_before_every_rule_was_decided_blocks_none_of_the_up_to_date_ones(slots: int) -> None:
    """Rules start between batches of decisions; once one fails (no -k), the rest are still
    decided, so the report says they were up to date rather than "not run because of it"."""
    n = 12
    specs = parse_spec("\n".join(f"out/{k} <- src/{k}" for k in range(n)))
    clock = Clock()
    fs = FakeFS(clock)
    for p in sources(specs):
        fs.write(p, p.encode())
    clock.advance(SECOND)
    store = Store(":memory:")

    def build(fail: list[str]) -> BuildSummary:
        graph = build_graph(specs)
        ex = FakeExecutor(graph.rules, fs, slots=slots, fail=fail)
        b = Build(graph, store, fs, lambda: ex, NullReporter(), BuildOptions())
        b.decide_batch = 2
        clock.advance(SECOND)
        return b.run()

    assert len(build([]).ran) == n
    fs.write("src/0", b"edited")
    summary = build(["out/0"])
    assert [i for i, _ in summary.failed] == [0]
    assert (summary.blocked, summary.up_to_date) == (0, n - 1)
