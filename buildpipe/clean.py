"""`pipe clean`: delete rules' outputs and records - never a source, never anything outside the project."""

from __future__ import annotations

import os

from .graph import Graph
from .store import Store


def clean(
    g: Graph, store: Store, wanted: list[int], protected: tuple[str, ...] | list[str] = ()
) -> tuple[list[str], list[str]]:
    """Delete the outputs of the `wanted` rules and forget their records.

    Returns (deleted paths, refused paths). A path is refused when, with symlinks resolved, it lies
    outside the project, is a source (an input no rule produces, or an invariant), or is one of
    `protected` (the Pipefile, the state directory and its files) or inside it (but for the project
    directory itself, which a state directory of "." is).
    """
    root = os.path.realpath(g.root)
    sources = {os.path.realpath(os.path.join(g.root, p)) for p in g.invariants}
    for r in g.rules:
        for p in r.inputs:
            if p not in g.producer:
                sources.add(os.path.realpath(os.path.join(g.root, p)))
    guarded = [os.path.realpath(p) for p in protected]
    deleted: list[str] = []
    refused: list[str] = []
    for i in wanted:
        r = g.rules[i]
        for o in r.outputs:
            full = os.path.join(g.root, o)
            # The file itself may be a symlink: it is the link that goes, so resolve its directory.
            real = os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
            if (
                not real.startswith(root + os.sep)
                or real in sources
                or any(real == p or (p != root and real.startswith(p + os.sep)) for p in guarded)
            ):
                if os.path.lexists(full):
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
