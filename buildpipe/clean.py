"""`pipe clean`: delete rules' outputs and records - never a source, never anything outside the project."""

from __future__ import annotations

import os

from .graph import Graph
from .store import Store


def inside(root: str, path: str) -> bool:
    """Whether `path`, with every symlink resolved, lies inside `root`."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, path))
    return real == real_root or real.startswith(real_root + os.sep)


def clean(g: Graph, store: Store, wanted: list[int]) -> tuple[list[str], list[str]]:
    """Delete the outputs of the `wanted` rules and forget their records.

    Returns (deleted paths, refused paths). A path is refused when it resolves outside the project
    (through a symlinked directory, say) or is a declared invariant.
    """
    deleted: list[str] = []
    refused: list[str] = []
    for i in wanted:
        r = g.rules[i]
        for o in r.outputs:
            full = os.path.join(g.root, o)
            if o in g.invariants or not inside(g.root, os.path.dirname(o) or "."):
                refused.append(o)
                continue
            try:
                if os.path.islink(full) or os.path.isfile(full):
                    os.unlink(full)
                    deleted.append(o)
            except FileNotFoundError:
                pass
            store.drop_file(o)
        store.drop_rule(r.outputs[0])
    store.flush()
    return deleted, refused
