"""Settings from `pipe.toml` (top-level keys) and `pyproject.toml` (`[tool.buildpipe]`).

Precedence: command line, then pipe.toml, then pyproject.toml, then the Pipefile. An unknown key or
a wrong type is a usage error naming the file and the key.
"""

from __future__ import annotations

import os
import sys

from .errors import UsageError

TYPE_CHECKING = False  # typing costs milliseconds of start-up: annotations only
if TYPE_CHECKING:
    from typing import Any

KEYS: dict[str, type] = {"jobs": int, "pipefile": str, "state-dir": str, "default": list}


def _toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: invalid TOML: {e}")
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}")


def _check(table: dict[str, Any], source: str) -> dict[str, Any]:
    for key, value in table.items():
        want = KEYS.get(key)
        if want is None:
            raise UsageError(f"{source}: unknown setting {key!r} (known: {', '.join(sorted(KEYS))})")
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if ok and want is int and value < 1:
            ok = False
        if ok and want is list and not all(isinstance(v, str) for v in value):
            ok = False
        if not ok:
            kind = {int: "an integer >= 1", str: "a string", list: "a list of strings"}[want]
            raise UsageError(f"{source}: setting {key!r} must be {kind}, not {value!r}")
    return table


def load_settings(directory: str) -> dict[str, Any]:
    """Merged settings for a run in `directory`; pipe.toml wins over pyproject.toml."""
    merged: dict[str, Any] = {}
    pyproject = os.path.join(directory, "pyproject.toml")
    if os.path.isfile(pyproject):
        tool = _toml(pyproject).get("tool", {}).get("buildpipe")
        if tool is not None:
            if not isinstance(tool, dict):
                raise UsageError(f"{pyproject}: [tool.buildpipe] must be a table")
            merged.update(_check(tool, f"{pyproject} [tool.buildpipe]"))
    pipe_toml = os.path.join(directory, "pipe.toml")
    if os.path.isfile(pipe_toml):
        merged.update(_check(_toml(pipe_toml), pipe_toml))
    return merged


def source_of(directory: str, key: str) -> str:
    """The settings file in `directory` that sets `key`, for messages."""
    pipe_toml = os.path.join(directory, "pipe.toml")
    if os.path.isfile(pipe_toml) and key in _toml(pipe_toml):
        return pipe_toml
    return os.path.join(directory, "pyproject.toml") + " [tool.buildpipe]"
