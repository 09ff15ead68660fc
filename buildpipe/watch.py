"""`pipe watch`: build, then rebuild each time a tracked input or the Pipefile changes.

It drives the same build loop as `pipe build`; it has no engine of its own. The watchdog observer
runs only between builds: workers are forked during a build, and forking beside a running thread is
unsafe. A change made while a build ran is caught by comparing the watched files' stat with what it
was when that build started.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from collections.abc import Callable

from watchdog.events import FileSystemEventHandler

from .errors import BuildpipeError, Interrupted

TYPE_CHECKING = False  # typing costs milliseconds of start-up: annotations only
if TYPE_CHECKING:
    from typing import Any

DEBOUNCE = 0.15  # seconds of quiet after a change before rebuilding


def _stats(paths: set[str]) -> dict[str, tuple[int, int, int] | None]:
    out: dict[str, tuple[int, int, int] | None] = {}
    for p in paths:
        try:
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            out[p] = None
    return out


def _watched(project: Any, pipefile: str) -> set[str]:
    """Absolute paths whose change triggers a rebuild: the Pipefile, settings, every source."""
    root = project.root
    paths = {pipefile, os.path.join(root, "pipe.toml"), os.path.join(root, "pyproject.toml")}
    g = project.graph
    for r in g.rules:
        for p in r.inputs:
            if p not in g.producer:
                paths.add(os.path.normpath(os.path.join(root, p)))
    for p in g.invariants:
        paths.add(os.path.normpath(os.path.join(root, p)))
    return paths


class _Trigger(FileSystemEventHandler):
    """Set by the observer thread when a watched path changes."""

    def __init__(self, paths: set[str]) -> None:
        super().__init__()
        self.paths = paths
        self.event = threading.Event()
        self.last = 0.0

    def dispatch(self, event: Any) -> None:
        for attr in ("src_path", "dest_path"):
            p = getattr(event, attr, None)
            if isinstance(p, bytes):
                p = os.fsdecode(p)
            if p and os.path.normpath(p) in self.paths:
                self.last = time.monotonic()
                self.event.set()


def _wait_for_change(paths: set[str], before: dict[str, Any]) -> None:
    from watchdog.observers import Observer

    trigger = _Trigger(paths)
    observer = Observer()
    dirs = set()
    for p in paths:
        d = os.path.dirname(p)
        while d and not os.path.isdir(d):
            d = os.path.dirname(d)
        if d:
            dirs.add(d)
    for d in dirs:
        observer.schedule(trigger, d, recursive=False)
    observer.start()
    try:
        if _stats(paths) == before:  # nothing changed while the last build ran
            while not trigger.event.wait(0.5):
                pass
        while time.monotonic() - trigger.last < DEBOUNCE:
            time.sleep(DEBOUNCE / 3)
    finally:
        observer.stop()
        observer.join()


def watch(
    args: argparse.Namespace,
    make_project: Callable[[argparse.Namespace], Any],
    run_build: Callable[[Any, argparse.Namespace], Any],
) -> int:
    """Build, wait for a change, build again, until Ctrl-C (exit 0)."""
    pipefile = os.path.abspath(args.file or "Pipefile.py")
    args.file = pipefile
    cwd = os.getcwd()
    try:
        while True:
            os.chdir(cwd)
            before: dict[str, Any]
            try:
                project = make_project(args)
            except BuildpipeError as e:
                _say(f"pipe: {e}")
                paths = {pipefile}
                before = _stats(paths)
            else:
                paths = _watched(project, pipefile)
                before = _stats(paths)
                try:
                    summary = run_build(project, args)
                except BuildpipeError as e:
                    _say(f"pipe: {e}")
                else:
                    if summary.interrupted:
                        return 0
            _say("watching for changes (Ctrl-C to stop)")
            project = None
            gc.collect()  # the last Pipefile's module and graph, between builds (main disabled gc)
            _wait_for_change(paths, before)
    except (KeyboardInterrupt, Interrupted):
        return 0


def _say(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
