"""Text for `pipe list` and `pipe graph`: what the Pipefile declares and how it hangs together."""

from __future__ import annotations

from .graph import Graph
from .rules import Rule, ShAction, format_where, shown


def _action_name(r: Rule) -> str:
    if isinstance(r.action, ShAction):
        return f"sh: {r.action.command}"
    return getattr(r.action, "__qualname__", type(r.action).__name__)


def list_text(g: Graph) -> str:
    """Rules, aliases and the default, each with where it was declared."""
    lines = []
    if g.rules:
        lines.append("rules:")
        width = min(40, max(len(shown(r.outputs[0])) for r in g.rules))
        for r in g.rules:
            more = len(r.outputs) - 1
            extra = f" (+{more} output{'s' if more > 1 else ''})" if more else ""
            flags = " [temp]" if r.temp else ""
            lines.append(
                f"  {shown(r.outputs[0]):<{width}}  {format_where(r.where)}  "
                f"{shown(_action_name(r))}{extra}{flags}"
            )
    if g.aliases:
        lines.append("aliases:")
        for name, targets in g.aliases.items():
            members = " ".join(map(shown, targets))
            lines.append(f"  {shown(name)} -> {members}  {format_where(g.alias_where[name])}")
    if g.invariants:
        lines.append("invariants:")
        for path, inv in g.invariants.items():
            lines.append(f"  {shown(path)}  {format_where(inv.where)}")
    if g.default is not None:
        lines.append(f"default: {' '.join(map(shown, g.default[0]))}")
    else:
        lines.append("default: every rule")
    return "\n".join(lines)


def tree_text(g: Graph, targets: list[Rule]) -> str:
    """Each target with what it is built from, as a tree; a rule shown once is referred back to."""
    lines: list[str] = []
    seen: set[int] = set()

    def walk(path: str, prefix: str, last: bool, top: bool) -> None:
        r = g.producer.get(path)
        label = shown(path)
        if r is None:
            label += "  (source)"
        elif r.temp:
            label += "  [temp]"
        again = r is not None and r.index in seen and len(r.inputs) > 0
        if again:
            label += "  (see above)"
        if top:
            lines.append(label)
            child_prefix = ""
        else:
            lines.append(prefix + ("└── " if last else "├── ") + label)
            child_prefix = prefix + ("    " if last else "│   ")
        if r is None or again:
            return
        seen.add(r.index)
        for k, p in enumerate(r.inputs):
            walk(p, child_prefix, k == len(r.inputs) - 1, False)

    for r in targets:
        walk(r.outputs[0], "", True, True)
    return "\n".join(lines)


def dot_text(g: Graph, wanted: list[int]) -> str:
    """Graphviz: files as nodes, an edge from each input to each output of the rule reading it."""

    def q(s: str) -> str:
        return '"' + shown(s).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph buildpipe {", "  rankdir=LR;", "  node [shape=box];"]
    sources: set[str] = set()
    for i in wanted:
        r = g.rules[i]
        for o in r.outputs:
            style = ", style=dashed" if r.temp else ""
            lines.append(f"  {q(o)} [tooltip={q(format_where(r.where))}{style}];")
        for p in r.inputs:
            if p not in g.producer:
                sources.add(p)
            for o in r.outputs:
                lines.append(f"  {q(p)} -> {q(o)};")
    for s in sorted(sources):
        lines.append(f"  {q(s)} [shape=note];")
    lines.append("}")
    return "\n".join(lines)
