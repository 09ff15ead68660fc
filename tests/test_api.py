"""The public API is the Pipefile DSL, and only that: pinned so that a change to it is deliberate."""

from __future__ import annotations

import buildpipe


def test_the_public_names_are_exactly_the_dsl_and_sorted():
    assert buildpipe.__all__ == ["Invariant", "Rule", "alias", "default", "invariant", "rule", "sh"]
    assert buildpipe.__all__ == sorted(buildpipe.__all__)
    for name in buildpipe.__all__:
        assert getattr(buildpipe, name) is not None


def test_importing_buildpipe_loads_no_heavy_module():
    # The Pipefile imports buildpipe on every run: it must stay cheap to import.
    import subprocess
    import sys

    heavy = ("rich", "sqlite3", "watchdog", "typing")
    code = f"import sys, buildpipe; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
