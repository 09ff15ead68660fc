"""Finding and running the Pipefile, turning whatever it raises into one file:line message."""

from __future__ import annotations

import os
import sys
import types

from .dsl import _PACKAGE_DIR, Registry, fresh_registry
from .errors import PipefileError
from .rules import format_where, set_location_root

MODULE_NAME = "pipefile"


def load(path: str) -> Registry:
    """Run the Pipefile at `path` (absolute) and return what it declared."""
    root = os.path.dirname(path)
    set_location_root(root)
    try:
        with open(path, "rb") as f:
            source = f.read()
    except FileNotFoundError:
        raise PipefileError(f"no Pipefile at {path}")
    except OSError as e:
        raise PipefileError(f"cannot read {path}: {e.strerror}")
    registry = fresh_registry(root)
    try:
        code = compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as e:
        line = (e.text or "").rstrip("\n")
        detail = f"\n    {line.strip()}" if line.strip() else ""
        lineno = e.lineno or _nul_line(source)
        where = format_where((path, lineno))
        raise PipefileError(f"SyntaxError: {e.msg}{detail}", where=where)
    except ValueError as e:  # e.g. source with NUL bytes
        raise PipefileError(f"cannot compile: {e}", where=format_where((path, _nul_line(source))))
    module = types.ModuleType(MODULE_NAME)
    module.__file__ = path
    sys.modules[MODULE_NAME] = module
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        exec(code, module.__dict__)
        registry.finish()
    except PipefileError:
        raise
    except SystemExit as e:
        error = user_error(e)
        error.message = f"the Pipefile called exit({e.code!r})"
        raise error from None
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        raise user_error(e) from None
    return registry


def _nul_line(source: bytes) -> int:
    """The line of the first NUL byte, which Python reports without a line number."""
    return source.count(b"\n", 0, source.index(b"\0")) + 1 if b"\0" in source else 0


def user_error(e: BaseException) -> PipefileError:
    """A PipefileError for an exception raised by user code: the user's frames only, newest last."""
    import traceback

    frames = [
        fs
        for fs in traceback.extract_tb(e.__traceback__)
        if not fs.filename.startswith(_PACKAGE_DIR) and fs.filename != "<frozen runpy>"
    ]
    # Drop frames of the standard library or site-packages below the last user frame.
    where = None
    if frames:
        last = frames[-1]
        where = format_where((last.filename, last.lineno or 0))
    if isinstance(e, ImportError) and e.name == "buildpipe":
        import buildpipe

        message = f"ImportError: {e.msg.split(' (', 1)[0]}; buildpipe provides {', '.join(buildpipe.__all__)}"
    else:
        message = "".join(traceback.format_exception_only(type(e), e)).strip()
    if len(frames) > 1:
        shown = "".join(traceback.format_list(frames)).rstrip()
        message += "\nTraceback (most recent call last):\n" + shown
    return PipefileError(message, where=where)
