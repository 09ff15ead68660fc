"""The graph built for declarations a proof vouches for (`Graph(..., proven=True)`) skips the
checks and finds producer edges only when asked: it must give the very edges, order flag and
producers that the checked graph gives, rule by rule or all at once."""

from __future__ import annotations

from fakes import RuleSpec, build_graph
from hypothesis import given, settings
from hypothesis import strategies as st


@st.composite
def declarations(draw: st.DrawFn) -> list[RuleSpec]:
    """Up to 8 rules of one or two outputs, each reading sources and any other rules' outputs
    (acyclic, but declared in any order)."""
    n = draw(st.integers(min_value=1, max_value=8))
    outs = [(f"out/{j}",) if draw(st.booleans()) else (f"out/{j}.a", f"out/{j}.b") for j in range(n)]
    specs = []
    for j in range(n):
        reads = draw(st.lists(st.integers(min_value=0, max_value=j - 1), max_size=3)) if j else []
        ins = [f"src/{j}"] + [o for i in reads for o in draw(st.sampled_from([outs[i], outs[i][:1]]))]
        specs.append(RuleSpec(outs[j], tuple(draw(st.permutations(ins)))))
    return draw(st.permutations(specs))


@given(declarations(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_a_proven_graph_has_the_edges_of_the_checked_one(specs: list[RuleSpec], whole_first: bool) -> None:
    checked = build_graph(specs)
    proven = build_graph(specs, proven=True)
    def producers(g):
        return {o: r.index for o, r in g.producer.items()}

    assert producers(proven) == producers(checked)
    if whole_first:
        assert proven.deps == checked.deps and proven.in_order == checked.in_order
    assert [proven.deps_of(i) for i in range(len(specs))] == checked.deps
    assert proven.deps == checked.deps and proven.in_order == checked.in_order
