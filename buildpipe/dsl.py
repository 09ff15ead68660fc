"""Declaring rules: the DSL functions a Pipefile calls, and the registry they fill."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence

from .errors import PipefileError
from .rules import Invariant, Rule, ShAction, format_where

TYPE_CHECKING = False  # typing costs milliseconds of start-up: annotations only
if TYPE_CHECKING:
    from typing import Any

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PLAIN_SCALARS = (type(None), bool, int, float, str, bytes, os.PathLike)  # PathLike: Path


class Registry:
    """Everything one run of a Pipefile declared, in declaration order."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.rules: list[Rule] = []
        self.unusual: list[Rule] = []  # the rules with params, temp, a name or an output shape
        self.invariants: list[Invariant] = []
        self.aliases: dict[str, tuple[list[str], tuple[str, int]]] = {}
        self.default: tuple[list[str], tuple[str, int]] | None = None
        self.checked = 0  # rules[:checked] have normal paths; `finish` checks those declared since

    def finish(self) -> None:
        """Check and normalise the paths of the rules declared since the last call, as `rule()`
        would have: its common case leaves that to this one pass over all of them at once (one
        string scanned instead of thirty small ones per rule). Run once the Pipefile has run, and
        before another declaration takes such a Rule's outputs (as inputs or targets)."""
        fresh = [r for r in self.rules[self.checked :] if r.index < 0]  # declared unchecked
        self.checked = len(self.rules)
        if not fresh:
            return
        outs = [r.outputs[0] for r in fresh]
        ins = [p for r in fresh for p in r.inputs]
        # Plain str only (a Path, a Rule, an Invariant or a str subclass is normalised one by one).
        if set(map(type, ins)) <= {str} and _normal_joined("\0".join(outs + ins), len(outs) + len(ins)):
            return
        root = self.root
        for r in fresh:
            if _all_normal(r.outputs[0], r.inputs):
                continue
            where = r.where
            out = _norm(r.outputs[0], root, where, "an output")
            _check_inside(out, root, where, False)
            r.outputs = (out,)
            r.inputs = _inputs(list(r.inputs), root, where)


_current: list[Registry] = [Registry(os.getcwd())]


def current_registry() -> Registry:
    return _current[0]


def fresh_registry(root: str) -> Registry:
    """Start declaring into an empty registry rooted at `root` (the Pipefile's directory)."""
    _current[0] = Registry(root)
    return _current[0]


def _caller() -> tuple[str, int]:
    """file and line of the first frame outside buildpipe: where the user declared something."""
    f = sys._getframe(2)
    while f.f_back is not None and f.f_code.co_filename.startswith(_PACKAGE_DIR):
        f = f.f_back
    return (f.f_code.co_filename, f.f_lineno)


def _is_normal(path: str) -> bool:
    """A relative path already in normal form with no `.`/`..` part: inside the project as it is.

    The common case, decided with a few C-level string scans instead of normpath."""
    return bool(
        path
        and path[0] not in "/."
        and path[-1] != "/"
        and "//" not in path
        and "/." not in path
        and "\0" not in path
    )


def _all_normal(first: Any, paths: Sequence[Any]) -> bool:
    """`_is_normal` for `first` and every path in `paths`, all plain str."""
    if type(first) is not str:
        return False
    for p in paths:
        if type(p) is not str:
            return False
    return _normal_joined("\0".join((first, *paths)), 1 + len(paths))


def _normal_joined(j: str, count: int) -> bool:
    """`_is_normal` for each of `count` paths joined by NUL (which no path may hold): the same
    checks as a few scans of one string."""
    return (
        count > 0
        and j != ""
        and j.count("\0") == count - 1
        and j[0] not in "/.\0"
        and j[-1] not in "/\0"
        and "//" not in j
        and "/." not in j
        and "\0/" not in j
        and "\0." not in j
        and "/\0" not in j
        and "\0\0" not in j
    )


def _norm(path: Any, root: str, where: tuple[str, int], what: str) -> str:
    if type(path) is str and _is_normal(path):
        return path
    if isinstance(path, str):
        p = path
    elif isinstance(path, os.PathLike) and isinstance(os.fspath(path), str):
        p = os.fspath(path)
    else:
        raise PipefileError(
            f"{what} must be a path (str or Path), not {type(path).__name__}: {path!r}",
            where=format_where(where),
        )
    if not p:
        raise PipefileError(f"{what} is an empty path", where=format_where(where))
    if "\0" in p:
        raise PipefileError(f"{what} contains a NUL byte: {p!r}", where=format_where(where))
    if os.path.isabs(p):
        rel = os.path.relpath(p, root)
        if rel == ".." or rel.startswith(".." + os.sep):
            return os.path.normpath(p)
        return rel
    return os.path.normpath(p)


def _outside(p: str) -> bool:
    return os.path.isabs(p) or p == ".." or p.startswith(".." + os.sep) or p == "."


def _check_inside(output: str, root: str, where: tuple[str, int], allow_outside: bool) -> None:
    if _outside(output) and not (allow_outside and output not in ("..", ".")):
        raise PipefileError(
            f"output {output} lies outside the project directory {root} "
            "(pass allow_outside=True to write it there all the same)",
            where=format_where(where),
        )


def _inputs(inputs: Any, root: str, where: tuple[str, int]) -> tuple[str, ...]:
    if isinstance(inputs, (str, os.PathLike, Rule, Invariant)):
        inputs = [inputs]
    elif not isinstance(inputs, Iterable) or isinstance(inputs, (dict, bytes)):
        raise PipefileError(
            f"inputs must be a list of paths and rules, not {type(inputs).__name__}",
            where=format_where(where),
        )
    out: list[str] = []
    for item in inputs:
        if type(item) is str:
            out.append(_norm(item, root, where, "an input"))
        elif isinstance(item, Rule):
            if item.index < 0:  # declared by the common form: its paths may not be checked yet
                _current[0].finish()
            out.extend(item.outputs)
        elif isinstance(item, Invariant):
            out.append(item.path)
        else:
            out.append(_norm(item, root, where, "an input"))
    return tuple(out)


def check_plain(value: Any, where: tuple[str, int], what: str, depth: int = 0) -> None:
    """Refuse params that are not plain data (they could not be fingerprinted reliably)."""
    if depth > 50:
        raise PipefileError(f"{what} is nested too deeply", where=format_where(where))
    if isinstance(value, PLAIN_SCALARS):
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            check_plain(v, where, what, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            check_plain(k, where, what, depth + 1)
            check_plain(v, where, what, depth + 1)
        return
    raise PipefileError(
        f"{what} holds a {type(value).__name__} ({value!r:.60}); params must be plain data: "
        "None, bool, int, float, str, bytes, Path and lists, tuples, dicts and sets of these",
        where=format_where(where),
    )


def rule(
    outputs: Any,
    inputs: Any = (),
    action: Callable[..., Any] | ShAction | None = None,
    *,
    params: dict[str, Any] | None = None,
    temp: bool = False,
    name: str | None = None,
    allow_outside: bool = False,
) -> Rule:
    """Declare a rule producing `outputs` from `inputs` by `action`; returns the Rule.

    With `action=None`, the returned Rule is a decorator that takes the action.
    """
    reg = _current[0]
    # The common declaration - one normal output, a list of normal input paths, an action, no
    # options - takes this path: it is what a Pipefile with many rules spends its time on.
    if (
        type(outputs) is str
        and type(inputs) is list
        and action is not None
        and params is None
        and temp is False
        and name is None
        and allow_outside is False
        and (callable(action) or isinstance(action, ShAction))
    ):  # the paths are checked by Registry.finish once the Pipefile has run
        f = sys._getframe(1)
        code = f.f_code
        if code.co_filename.startswith(_PACKAGE_DIR):
            r = Rule((outputs,), tuple(inputs), action, None, False, _caller(), None, None)
        else:  # the line is found from the instruction when needed (see Rule.where)
            r = Rule((outputs,), tuple(inputs), action, None, False, (code, f.f_lasti), None, None)
        reg.rules.append(r)
        return r
    where = _caller()
    root = reg.root
    shape: None | str | tuple[str, ...]
    if isinstance(outputs, (str, os.PathLike)):
        outs: tuple[str, ...] = (_norm(outputs, root, where, "an output"),)
        shape = None
    elif isinstance(outputs, dict):
        keys = tuple(outputs)
        for k in keys:
            if not isinstance(k, str):
                raise PipefileError(
                    f"output dict keys must be strings, not {type(k).__name__}",
                    where=format_where(where),
                )
        outs = tuple(_norm(outputs[k], root, where, "an output") for k in keys)
        shape = keys
    elif isinstance(outputs, (list, tuple)):
        outs = tuple(_norm(o, root, where, "an output") for o in outputs)
        shape = "list"
    else:
        raise PipefileError(
            f"outputs must be a path, a list of paths or a dict of paths, not {type(outputs).__name__}",
            where=format_where(where),
        )
    if not outs:
        raise PipefileError("a rule needs at least one output", where=format_where(where))
    if not isinstance(allow_outside, bool):
        raise PipefileError(
            f"allow_outside must be True or False, not {type(allow_outside).__name__}",
            where=format_where(where),
        )
    for o in outs:
        _check_inside(o, root, where, allow_outside)
    if len(set(outs)) != len(outs):
        raise PipefileError(f"rule {outs[0]} names an output twice", where=format_where(where))
    ins = _inputs(inputs, root, where)
    if action is not None and not (callable(action) or isinstance(action, ShAction)):
        raise PipefileError(
            f"action must be a function or sh(...), not {type(action).__name__}",
            where=format_where(where),
        )
    if params is not None:
        if not isinstance(params, dict):
            raise PipefileError(
                f"params must be a dict, not {type(params).__name__}", where=format_where(where)
            )
        for k, v in params.items():
            if not isinstance(k, str):
                raise PipefileError(
                    f"params keys must be strings, not {type(k).__name__} ({k!r})",
                    where=format_where(where),
                )
            check_plain(v, where, f"params[{k!r}]")
    if not isinstance(temp, bool):
        raise PipefileError(
            f"temp must be True or False, not {type(temp).__name__}", where=format_where(where)
        )
    if name is not None and not isinstance(name, str):
        raise PipefileError(f"name must be a string, not {type(name).__name__}", where=format_where(where))
    r = Rule(outs, ins, action, params, temp, where, shape, name)
    r.index = len(reg.rules)  # as the graph will have it (the declarations digest needs it sooner)
    reg.rules.append(r)
    if params is not None or temp or name is not None or shape is not None:
        reg.unusual.append(r)
    return r


def invariant(path: str | os.PathLike[str]) -> Invariant:
    """Track `path` explicitly as a source; the handle can stand in `inputs=`."""
    reg = _current[0]
    where = _caller()
    inv = Invariant(_norm(path, reg.root, where, "an invariant"), where)
    reg.invariants.append(inv)
    return inv


def _targets(targets: Any, where: tuple[str, int], what: str) -> list[str]:
    if isinstance(targets, (str, os.PathLike, Rule, Invariant)):
        targets = [targets]
    out: list[str] = []
    try:
        items = list(targets)
    except TypeError:
        raise PipefileError(
            f"{what} takes targets (names, paths or rules), not {type(targets).__name__}",
            where=format_where(where),
        )
    for t in items:
        if isinstance(t, Rule):
            if t.index < 0:  # as in _inputs
                _current[0].finish()
            out.append(t.outputs[0])
        elif isinstance(t, Invariant):
            out.append(t.path)
        elif isinstance(t, (str, os.PathLike)):
            out.append(os.fspath(t))
        else:
            raise PipefileError(
                f"{what} takes targets (names, paths or rules), not {type(t).__name__}",
                where=format_where(where),
            )
    return out


def alias(name: str, targets: Any) -> str:
    """Name a group of targets: `pipe build NAME` builds them all."""
    reg = _current[0]
    where = _caller()
    if not isinstance(name, str) or not name:
        raise PipefileError("alias() needs a non-empty string name", where=format_where(where))
    if name in reg.aliases:
        raise PipefileError(
            f"alias {name!r} is already declared at {format_where(reg.aliases[name][1])}",
            where=format_where(where),
        )
    reg.aliases[name] = (_targets(targets, where, "alias()"), where)
    return name


def default(*targets: Any) -> None:
    """The targets `pipe build` builds when none is named."""
    reg = _current[0]
    where = _caller()
    flat: list[str] = []
    for t in targets:
        flat.extend(_targets(t, where, "default()"))
    reg.default = (flat, where)


SH_FIELDS = frozenset({"output", "input", "outputs", "inputs", "params"})


def sh(command: str) -> ShAction:
    """A shell action run by `/bin/sh -c` in the Pipefile's directory.

    `{output}`, `{input}` (the first), `{outputs}`, `{inputs}` (all, space-separated) and
    `{params[k]}` are replaced by shell-quoted values; write `{{` and `}}` for literal braces.
    """
    import string

    where = _caller()
    if not isinstance(command, str):
        raise PipefileError(
            f"sh() takes a command string, not {type(command).__name__}", where=format_where(where)
        )
    try:
        fields = [(f, conv, spec) for _, f, spec, conv in string.Formatter().parse(command) if f is not None]
    except ValueError as e:
        raise PipefileError(
            f"sh() command {command!r}: {e} (write {{{{ and }}}} for literal braces)",
            where=format_where(where),
        )
    keys = []
    for f, conv, spec in fields:
        base = f.split("[", 1)[0].split(".", 1)[0]
        if base not in SH_FIELDS or (base == "params") != ("[" in f) or "." in f:
            raise PipefileError(
                f"sh() command {command!r} uses {{{f}}}; it knows {{output}}, {{input}}, "
                "{outputs}, {inputs} and {params[NAME]} (write {{ and }} for literal braces)",
                where=format_where(where),
            )
        if conv or spec:
            # A conversion or format spec would apply to the already shell-quoted value and could
            # undo the quoting: refuse it rather than risk an injection.
            raise PipefileError(
                f"sh() command {command!r}: {{{f}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} "
                "has a conversion or format spec; placeholders are plain, e.g. {input}",
                where=format_where(where),
            )
        if base == "params":
            keys.append(f[len("params[") : -1])
    action = ShAction(command, where)
    action.params_keys = tuple(keys)
    action.uses_input = any(f[0] == "input" for f in fields)
    return action
