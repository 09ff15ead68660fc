"""Where a no-op build's time goes: the phases of `pipe build all`, timed in one process.

Run it in a benchmark tree that has been built (see bench.py --keep, or ../shared/bench/peers.py
--keep): `python benchmarks/phases.py [TARGET ...]` from that tree's directory, with the buildpipe
to measure importable. The cyclic garbage collector is off, as in `pipe` itself.
"""

from __future__ import annotations

import gc
import os
import sys
import time


def main() -> None:
    gc.disable()
    t0 = time.perf_counter()
    from buildpipe.build import Build, BuildOptions
    from buildpipe.cli import _Silent
    from buildpipe.filesystem import RealFileSystem
    from buildpipe.graph import Graph
    from buildpipe.pipefile import load
    from buildpipe.store import open_state

    t1 = time.perf_counter()
    registry = load(os.path.abspath("Pipefile.py"))
    t2 = time.perf_counter()
    graph = Graph(registry)
    t3 = time.perf_counter()
    reserved = {os.path.abspath("Pipefile.py"): "the Pipefile", os.path.abspath(".buildpipe"): "the state"}
    graph.check_reserved(reserved)
    t4 = time.perf_counter()
    store, lock = open_state(os.path.abspath(".buildpipe"), None, lock=True)
    t5 = time.perf_counter()
    build = Build(graph, store, RealFileSystem(), None, _Silent(), BuildOptions(targets=sys.argv[1:] or None))
    summary = build.run()
    t6 = time.perf_counter()
    store.close()
    lock.release()
    ms = [round(1000 * (b - a)) for a, b in zip((t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6))]
    names = ["imports", "pipefile", "graph", "protected", "state", "stat+decide"]
    print(" ".join(f"{n} {m}" for n, m in zip(names, ms)), f"total {sum(ms)} ms, ran {len(summary.ran)}")


if __name__ == "__main__":
    main()
