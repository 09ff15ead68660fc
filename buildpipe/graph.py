"""The rule graph: validation (actions, duplicate outputs, cycles, aliases), target resolution with
suggestions, and the closure of what a build needs. Pure: it reads no file but to check that a
target naming an existing file exists."""

from __future__ import annotations

import os

from .dsl import Registry
from .errors import PipefileError
from .rules import Rule, ShAction, format_where, shown


def describe(r: Rule) -> str:
    """How messages name a rule: its first output and where it was declared."""
    return f"{shown(r.outputs[0])} ({format_where(r.where)})"


def _inside(path: str, directory: str, root: str) -> bool:
    """Whether `path` lies in reserved `directory` (never the project `root` as a whole)."""
    return directory != root and path.startswith(directory + os.sep)


def check_actions(rules: list[Rule]) -> None:
    """Every rule needs an action, and an sh() command may use only what its rule has."""
    for r in [r for r in rules if r.action is None or type(r.action) is ShAction]:
        action = r.action
        if action is None:
            raise PipefileError(
                f"rule {r.outputs[0]} has no action (pass action= or use @rule as a decorator)",
                where=format_where(r.where),
            )
        assert isinstance(action, ShAction)
        if action.uses_input and not r.inputs:
            raise PipefileError(
                f"rule {r.outputs[0]}: its sh() command uses {{input}} but the rule has no inputs",
                where=format_where(r.where),
            )
        for key in action.params_keys or ():
            if key not in (r.params or {}):
                raise PipefileError(
                    f"rule {r.outputs[0]}: its sh() command uses {{params[{key}]}} but its "
                    f"params have no key {key!r}",
                    where=format_where(r.where),
                )


class Graph:
    """Rules indexed 0..n-1 in declaration order, with producer edges (`deps`)."""

    def __init__(self, registry: Registry, proven: bool = False) -> None:
        """`proven`: the declarations are those of a proof, which a graph that passed every check
        made (see `proof.declarations`): the checks of the rules are skipped, and the producer
        edges (`deps`) are found when first needed; a build deciding from the proof needs those
        of a few rules."""
        registry.finish()
        self.root = registry.root
        self.rules: list[Rule] = registry.rules
        self.unusual = registry.unusual  # with params, temp, a name or a shape; the rest have none
        self.names: dict[str, list[Rule]] = {}
        self.aliases = {name: targets for name, (targets, _) in registry.aliases.items()}
        self.alias_where = {name: where for name, (_, where) in registry.aliases.items()}
        self.default = registry.default  # settings may replace it (see cli), after it is checked
        self.declared_default = registry.default
        self.invariants = {inv.path: inv for inv in registry.invariants}
        self._deps: list[tuple[int, ...]] | None = None
        self._in_order = True
        self.producer: dict[str, Rule] = {}
        if proven:
            for i, r in enumerate(self.rules):
                r.index = i
                if r.name is not None:
                    self.names.setdefault(r.name, []).append(r)
            self.producer = {o: r for r in self.rules for o in r.outputs}
        else:
            self._check_rules()
        # Cheap, and the Pipefile's own default() is not in a proof's digest when a setting
        # replaces it: checked either way.
        producer = self.producer
        self._check_alias_cycles()
        for name, targets in self.aliases.items():
            if name in producer:
                raise PipefileError(
                    f"alias {name!r} has the name of an output of {describe(producer[name])}",
                    where=format_where(self.alias_where[name]),
                )
            for t in targets:
                self._check_known(t, self.alias_where[name], f"alias {name!r}")
        if self.default is not None:
            for t in self.default[0]:
                self._check_known(t, self.default[1], "default()")

    def _check_rules(self) -> None:
        """Index the rules and their outputs, refusing two producers of one file, an invariant
        that a rule produces and a dependency cycle."""
        producer = self.producer
        check_actions(self.rules)
        for i, r in enumerate(self.rules):
            r.index = i
            for o in r.outputs:
                if o in producer:
                    raise PipefileError(
                        f"two rules declare the output {o}: {describe(producer[o])} and this one",
                        where=format_where(r.where),
                    )
                producer[o] = r
            if r.name is not None:
                self.names.setdefault(r.name, []).append(r)
        for path, inv in self.invariants.items():
            if path in producer:
                raise PipefileError(
                    f"{path} is declared an invariant (a source) but rule "
                    f"{describe(producer[path])} produces it",
                    where=format_where(inv.where),
                )
        self._link()
        if not self._in_order:
            self._check_cycles()

    def _link(self) -> None:
        deps: list[tuple[int, ...]] = []
        append = deps.append
        get = self.producer.get
        in_order = True  # every producer declared before its consumers: then there is no cycle
        for i, r in enumerate(self.rules):
            ins = r.inputs
            if len(ins) == 1:
                q = get(ins[0])
                if q is None:
                    append(())
                    continue
                ds: tuple[int, ...] = (q.index,)
            else:
                ds = tuple({q.index: None for p in ins if (q := get(p)) is not None})
            append(ds)
            if in_order and max(ds, default=-1) >= i:
                in_order = False
        self._deps, self._in_order = deps, in_order

    @property
    def deps(self) -> list[tuple[int, ...]]:
        """deps[i]: the indices of the rules producing rule i's inputs, each once, in input order."""
        if self._deps is None:
            self._link()
        return self._deps  # type: ignore[return-value]

    def deps_of(self, i: int) -> tuple[int, ...]:
        """deps[i], without finding every rule's if they have not been found yet."""
        if self._deps is not None:
            return self._deps[i]
        get = self.producer.get
        return tuple({q.index: None for p in self.rules[i].inputs if (q := get(p)) is not None})

    @property
    def in_order(self) -> bool:
        """Whether every rule's producers were declared before it."""
        if self._deps is None:
            self._link()
        return self._in_order

    # -- validation -------------------------------------------------------------------------------

    def _check_known(self, target: str, where: tuple[str, int], what: str) -> None:
        if self.lookup(target) is None:
            raise PipefileError(
                f"{what} names an unknown target {target!r}{self._suggest(target)}",
                where=format_where(where),
            )

    def _check_alias_cycles(self) -> None:
        """An alias may name other aliases, but never itself, directly or through others."""
        done: set[str] = set()
        for start in self.aliases:
            self._visit_alias(start, [], done)

    def _visit_alias(self, name: str, path: list[str], done: set[str]) -> None:
        if name in done:
            return
        if name in path:
            cycle = path[path.index(name) :] + [name]
            raise PipefileError(
                f"alias cycle: {' -> '.join(map(shown, cycle))}",
                where=format_where(self.alias_where[cycle[0]]),
            )
        path.append(name)
        for t in self.aliases[name]:
            if t in self.aliases:
                self._visit_alias(t, path, done)
        path.pop()
        done.add(name)

    def _check_cycles(self) -> None:
        """Iterative depth-first search; a back edge closes a cycle, reported in order."""
        deps = self.deps
        state = bytearray(len(deps))  # 0 new, 1 on the stack, 2 done
        for start in range(len(deps)):
            if state[start]:
                continue
            stack = [(start, 0)]
            state[start] = 1
            while stack:
                node, k = stack[-1]
                ds = deps[node]
                if k < len(ds):
                    stack[-1] = (node, k + 1)
                    d = ds[k]
                    if state[d] == 0:
                        state[d] = 1
                        stack.append((d, 0))
                    elif state[d] == 1:
                        path = [n for n, _ in stack]
                        cycle = path[path.index(d) :]
                        # A consumer's deps are its producers: reverse to read "a feeds b".
                        cycle.reverse()
                        names = " -> ".join(describe(self.rules[n]) for n in cycle)
                        first = self.rules[cycle[0]]
                        raise PipefileError(
                            f"dependency cycle: {names} -> {first.outputs[0]}",
                            where=format_where(first.where),
                        )
                else:
                    state[node] = 2
                    stack.pop()

    def check_reserved(self, reserved: dict[str, str]) -> None:
        """Refuse outputs that are, or lie inside, `reserved` paths (absolute path -> what it is):
        the Pipefile and the state directory must never be written or cleaned by a rule."""
        root = self.root
        exact: dict[str, str] = {}  # the reserved paths inside the project, relative like outputs
        for path, what in reserved.items():
            rel = os.path.relpath(path, root)
            if rel == ".":
                continue  # the project itself (a state-dir of "."): its files are named one by one
            if not (rel == ".." or rel.startswith(".." + os.sep)):
                exact[rel] = what
        prefixes = tuple(rel + os.sep for rel in exact)
        # Outputs are almost never reserved: one search of them all, joined, says whether any may be.
        joined = "\0" + "\0".join(self.producer) + "\0"
        if not any(f"\0{p}" in joined for p in ("/", "..", *prefixes)) and not any(
            f"\0{rel}\0" in joined for rel in exact
        ):
            return
        for r in self.rules:
            for o in r.outputs:
                if o.startswith(("/", "..")):  # declared with allow_outside: compare in full
                    full = os.path.normpath(os.path.join(root, o))
                    hit = next((w for p, w in reserved.items() if full == p or _inside(full, p, root)), None)
                elif o in exact or o.startswith(prefixes):
                    hit = exact.get(o) or next(w for p, w in exact.items() if o.startswith(p + os.sep))
                else:
                    continue
                if hit is not None:
                    raise PipefileError(
                        f"output {o} is {hit}; a rule may not write there", where=format_where(r.where)
                    )

    # -- targets ----------------------------------------------------------------------------------

    def lookup(self, target: str) -> list[Rule] | None:
        """The rules a target names (an empty list for an existing source), or None if unknown."""
        if target in self.aliases:
            out: list[Rule] = []
            for t in self.aliases[target]:
                rs = self.lookup(t)
                if rs:
                    out.extend(rs)
            return out
        path = self.normalise(target)
        r = self.producer.get(path)
        if r is not None:
            return [r]
        if target in self.names:
            return list(self.names[target])
        if path in self.invariants or os.path.isfile(os.path.join(self.root, path)):
            return []
        return None

    def declared_only(self, targets: list[str]) -> bool:
        """Whether each target names an alias, an output, a rule's name or an invariant: nothing
        that is found only because a file by that name exists."""
        for t in targets:
            p = self.normalise(t)
            if not (t in self.aliases or p in self.producer or t in self.names or p in self.invariants):
                return False
        return True

    def normalise(self, target: str) -> str:
        p = os.path.normpath(target)
        if os.path.isabs(p):
            rel = os.path.relpath(p, self.root)
            if not rel.startswith(".."):
                return rel
        return p

    def _suggest(self, target: str) -> str:
        import difflib

        candidates = list(self.aliases) + list(self.names) + list(self.producer)
        close = difflib.get_close_matches(target, candidates, n=3, cutoff=0.6)
        return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""

    def resolve(self, targets: list[str]) -> list[Rule]:
        """The rules named by `targets`, in order, each once; an unknown one is a PipefileError."""
        out: dict[int, Rule] = {}
        for t in targets:
            rs = self.lookup(t)
            if rs is None:
                raise PipefileError(f"unknown target {t!r}{self._suggest(t)}")
            for r in rs:
                out[r.index] = r
        return list(out.values())

    def default_targets(self) -> list[str] | None:
        return None if self.default is None else list(self.default[0])

    def closure(self, targets: list[Rule]) -> list[int]:
        """Indices of the targets and every rule they transitively need, in declaration order."""
        deps = self.deps
        seen = bytearray(len(deps))
        stack = [r.index for r in targets]
        for i in stack:
            seen[i] = 1
        while stack:
            i = stack.pop()
            for d in deps[i]:
                if not seen[d]:
                    seen[d] = 1
                    stack.append(d)
        return [i for i in range(len(deps)) if seen[i]]
