"""Stable fingerprints of actions and params: what "the action changed" means (contract §2 item 5).

A Python function's fingerprint covers its instructions (never line numbers), the constants they
load (so not the docstring), default values, closure values, the plain-data module-level names it reads, and -
transitively - the Pipefile functions it calls or reads from containers. Everything else (modules,
classes, other objects) is not tracked. Pure: no I/O.
"""

from __future__ import annotations

import dis
import functools
import os
import sys
import types

import xxhash

from .rules import ShAction

TYPE_CHECKING = False  # typing costs milliseconds of start-up: annotations only
if TYPE_CHECKING:
    from typing import Any

_CONST_OPS = frozenset(dis.hasconst)


class Fingerprinter:
    """Fingerprints actions, remembering each function's result for the life of one build."""

    def __init__(self, pipefile_module: str = "pipefile") -> None:
        self.pipefile_module = pipefile_module
        self._memo: dict[int, bytes] = {}  # function id -> digest of its code and what it reads
        self._actions: dict[int, bytes] = {}  # action id -> fingerprint
        self._keep: list[Any] = []  # keeps memoised objects alive so their ids stay unique

    def action(self, action: Any) -> bytes:
        if isinstance(action, ShAction):
            return xxhash.xxh3_128_digest(b"sh\0" + action.command.encode("utf-8", "surrogatepass"))
        key = id(action)
        fp = self._actions.get(key)
        if fp is None:
            h = xxhash.xxh3_128()
            self._callable(action, h, set())
            fp = h.digest()
            self._actions[key] = fp
            self._keep.append(action)
        return fp

    # -- callables --------------------------------------------------------------------------------

    def _callable(self, obj: Any, h: Any, active: set[int]) -> None:
        if isinstance(obj, types.FunctionType):
            self._function(obj, h, active)
        elif isinstance(obj, types.MethodType):
            h.update(b"method\0")
            self._callable(obj.__func__, h, active)
        elif isinstance(obj, functools.partial):
            h.update(b"partial\0")
            self._callable(obj.func, h, active)
            self._value(obj.args, h, active)
            self._value(obj.keywords, h, active)
        else:
            # Builtins and callable objects: their name, and the code of a Python __call__.
            t = obj if isinstance(obj, type) else type(obj)
            h.update(f"callable\0{t.__module__}.{t.__qualname__}\0".encode())
            if isinstance(obj, types.BuiltinFunctionType):
                h.update(f"{obj.__module__}.{obj.__qualname__}".encode())
            call = next((k.__dict__["__call__"] for k in t.__mro__ if "__call__" in k.__dict__), None)
            if isinstance(call, types.FunctionType):
                self._function(call, h, active)

    def _function(self, func: types.FunctionType, h: Any, active: set[int]) -> None:
        key = id(func)
        if key in active:  # recursion: the name stands for the code already being hashed
            h.update(f"recursive\0{func.__qualname__}\0".encode())
            return
        memo = self._memo.get(key)
        if memo is not None:
            h.update(memo)
            return
        active.add(key)
        inner = xxhash.xxh3_128()
        names: set[str] = set()
        self._code(func.__code__, inner, names)
        inner.update(b"defaults\0")
        self._value(func.__defaults__, inner, active)
        self._value(func.__kwdefaults__, inner, active)
        inner.update(b"closure\0")
        for cell in func.__closure__ or ():
            try:
                self._value(cell.cell_contents, inner, active)
            except ValueError:  # empty cell
                inner.update(b"empty\0")
        inner.update(b"globals\0")
        g = func.__globals__
        for name in sorted(names):
            if name in g:
                value = g[name]
                if self._tracked(value, func):
                    inner.update(name.encode() + b"=")
                    self._value(value, inner, active)
        active.discard(key)
        digest = inner.digest()
        self._memo[key] = digest
        self._keep.append(func)
        h.update(digest)

    def _code(self, code: types.CodeType, h: Any, names: set[str]) -> None:
        """The instructions with their arguments resolved to values, never to table positions.

        Hashing resolved values rather than co_code and co_consts makes a docstring - stored as a
        constant that no instruction loads - and the slot order of constants irrelevant, while every
        constant, name and jump the function executes still counts. Line numbers never enter.
        """
        h.update(
            f"{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount},"
            f"{code.co_flags & 0xFFFF}\0".encode()
        )
        h.update("\0".join(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]).encode())
        names.update(code.co_names)
        for ins in dis.get_instructions(code):
            h.update(ins.opname.encode() + b"\0")
            if ins.arg is None:
                continue
            value = ins.argval
            if isinstance(value, types.CodeType):
                h.update(b"code\0")
                self._code(value, h, names)
            elif ins.opcode in _CONST_OPS:
                _plain(value, h)
            else:
                h.update(repr(value).encode("utf-8", "surrogatepass") + b"\0")

    def _tracked(self, value: Any, func: types.FunctionType) -> bool:
        """Module-level names worth following: plain data, and functions of this Pipefile/module."""
        if isinstance(value, (types.FunctionType, functools.partial)):
            mod = getattr(value, "__module__", None)
            return mod == self.pipefile_module or mod == func.__module__
        if isinstance(value, (list, tuple, dict, set, frozenset)):
            return True
        return _is_plain_scalar(value)

    def _value(self, value: Any, h: Any, active: set[int]) -> None:
        """Plain data by value; functions by fingerprint; anything else by its type only."""
        if _is_plain_scalar(value):
            _plain(value, h)
        elif isinstance(value, (types.FunctionType, types.MethodType, functools.partial)):
            h.update(b"fn\0")
            self._callable(value, h, active)
        elif isinstance(value, (list, tuple)):
            h.update(b"[" if isinstance(value, list) else b"(")
            for v in value:
                self._value(v, h, active)
            h.update(b"]")
        elif isinstance(value, dict):
            h.update(b"{")
            for k in sorted(value, key=_sort_key):
                self._value(k, h, active)
                h.update(b":")
                self._value(value[k], h, active)
            h.update(b"}")
        elif isinstance(value, (set, frozenset)):
            h.update(b"<")
            for v in sorted(value, key=_sort_key):
                self._value(v, h, active)
            h.update(b">")
        else:
            h.update(f"obj\0{type(value).__module__}.{type(value).__qualname__}\0".encode())


def _is_plain_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, bytes, os.PathLike))


def _plain(value: Any, h: Any) -> None:
    """Constants and plain scalars, tagged by type so that 1, 1.0, True and "1" all differ."""
    if isinstance(value, (str, bytes)):
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        h.update(f"{type(value).__name__}{len(data)}:".encode())
        h.update(data)
    elif isinstance(value, (tuple, frozenset)):  # constant tuples and frozensets in bytecode
        h.update(b"(" if isinstance(value, tuple) else b"<")
        items = value if isinstance(value, tuple) else sorted(value, key=_sort_key)
        for v in items:
            _plain(v, h)
        h.update(b")")
    elif isinstance(value, os.PathLike):
        h.update(b"path:" + str(os.fspath(value)).encode("utf-8", "surrogatepass") + b"\0")
    elif isinstance(value, types.CodeType):
        h.update(value.co_code)
    else:
        h.update(f"{type(value).__name__}:{value!r}\0".encode("utf-8", "surrogatepass"))


def _sort_key(value: Any) -> tuple[str, str]:
    return (type(value).__name__, repr(value))


def params_fingerprint(params: dict[str, Any] | None) -> bytes:
    """Fingerprint of plain-data params (validated when declared); b"" for none."""
    if not params:
        return b""
    h = xxhash.xxh3_128()
    Fingerprinter()._value(params, h, set())
    return h.digest()


def python_tag() -> str:
    """Bytecode is comparable only within one Python minor version; stored with every record."""
    return f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
