"""Frozen data the Pipefile declares: rules, shell actions, tracked sources, and where each was declared."""

from __future__ import annotations

import os
from collections.abc import Callable

TYPE_CHECKING = False  # typing costs milliseconds of start-up: annotations only
if TYPE_CHECKING:
    from typing import Any


class ShAction:
    """A shell command template; see `buildpipe.sh`."""

    __slots__ = ("command", "where", "params_keys", "uses_input")

    def __init__(self, command: str, where: tuple[str, int] | None = None) -> None:
        self.command = command
        self.where = where
        self.params_keys: tuple[str, ...] = ()  # the NAMEs of {params[NAME]}
        self.uses_input = False

    def __repr__(self) -> str:
        return f"sh({self.command!r})"


class Invariant:
    """A file tracked by content with no rule producing it: a source."""

    __slots__ = ("path", "where")

    def __init__(self, path: str, where: tuple[str, int]) -> None:
        self.path = path
        self.where = where

    def __repr__(self) -> str:
        return f"invariant({self.path!r})"


class Rule:
    """A file-generating rule. Named in messages by its first output.

    outputs/inputs are normalised paths relative to the Pipefile's directory (inputs outside the
    project stay absolute). `shape` says how the action receives its outputs: None for one Path,
    "list" for a list, or a tuple of keys for a dict.
    """

    __slots__ = ("outputs", "inputs", "action", "params", "temp", "_where", "shape", "name", "index")

    def __init__(
        self,
        outputs: tuple[str, ...],
        inputs: tuple[str, ...],
        action: Callable[..., Any] | ShAction | None,
        params: dict[str, Any] | None,
        temp: bool,
        where: tuple[str, int] | tuple[Any, int],
        shape: None | str | tuple[str, ...],
        name: str | None,
    ) -> None:
        self.outputs = outputs
        self.inputs = inputs
        self.action = action
        self.params = params
        self.temp = temp
        self._where = where  # or (code object, instruction offset): see `where`
        self.shape = shape
        self.name = name
        self.index = -1

    def __call__(self, func: Callable[..., Any]) -> Rule:
        """Decorator form: `@rule(outputs, ...)` binds the decorated function as the action."""
        if self.action is not None:
            from .errors import PipefileError

            raise PipefileError(
                f"rule {self.outputs[0]} already has an action", where=format_where(self.where)
            )
        if not callable(func):
            from .errors import PipefileError

            raise PipefileError(
                f"@rule must decorate a function, not {type(func).__name__}",
                where=format_where(self.where),
            )
        self.action = func
        if self.name is None:
            self.name = getattr(func, "__name__", None)
        return self

    @property
    def where(self) -> tuple[str, int]:
        """The file and line that declared the rule. rule() may give the code and the offset of
        the instruction instead: finding the line costs more than the rest of a declaration, and
        it is needed only when a rule is shown."""
        w: Any = self._where
        if type(w[0]) is not str:
            code, offset = w
            w = self._where = (code.co_filename, _line_at(code, offset))
        return w

    @property
    def id(self) -> str:
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"<Rule {self.outputs[0]}>"


_line_tables: dict[Any, tuple[list[int], list[tuple[int, int, int | None]]]] = {}


def _line_at(code: Any, offset: int) -> int:
    """The line of the instruction at `offset` in `code` (its table read once per code object:
    a generated Pipefile may declare thousands of rules, one a line)."""
    table = _line_tables.get(code)
    if table is None:
        ranges = list(code.co_lines())
        table = _line_tables[code] = ([start for start, _, _ in ranges], ranges)
    from bisect import bisect_right

    k = bisect_right(table[0], offset) - 1
    if k >= 0:
        start, end, line = table[1][k]
        if offset < end and line is not None:
            return line
    return int(code.co_firstlineno)


_root: list[str] = [""]

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL_BUT_LINES = {c: e for c, e in _CONTROL.items() if c not in (0x09, 0x0A)}


def shown(name: str) -> str:
    """A file name as printed: control characters escaped, so that no name in a Pipefile can move
    the cursor, retitle or clear the user's terminal; undecodable bytes show as \\udcXX."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def safe_text(text: str) -> str:
    """A message as printed: like `shown`, but keeping its newlines and tabs."""
    return text.translate(_CONTROL_BUT_LINES)


def set_location_root(root: str) -> None:
    """Declarations are shown relative to this directory (the Pipefile's)."""
    _root[0] = root


def format_where(where: tuple[str, int] | None) -> str:
    """`Pipefile.py:12` for a declaration; relative to the Pipefile's directory when inside it."""
    if where is None:
        return "?"
    filename, line = where
    root = _root[0]
    if root and filename.startswith(root + os.sep):
        filename = filename[len(root) + 1 :]
    return f"{filename}:{line}"
