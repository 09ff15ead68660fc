"""The command line: the command table, settings, and exit statuses decided in one place.

Exit status: 0 success; 1 a rule failed; 2 a usage error or an invalid Pipefile; 128+N killed by
signal N (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import __version__
from .errors import BuildpipeError, Interrupted, PipefileError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pipe", description="A make-like build system whose build files are Python."
    )
    p.add_argument("--version", action="version", version=f"buildpipe {__version__}")
    p.add_argument("-C", dest="directory", metavar="DIR", help="change to DIR before anything else")
    p.add_argument("-f", dest="file", metavar="FILE", help="the Pipefile (default: Pipefile.py)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def targets(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("targets", nargs="*", metavar="TARGET")

    b = sub.add_parser("build", help="build targets and what they need")
    targets(b)
    b.add_argument("-j", "--jobs", type=int, metavar="N", help="run N rules at once")
    b.add_argument("-k", "--keep-going", action="store_true", help="build all that does not depend on a failure")
    b.add_argument("-n", "--dry-run", action="store_true", help="say what would run and why; run nothing")
    b.add_argument("-B", "--always-make", action="store_true", help="run every needed rule")
    b.add_argument("--force", action="append", default=[], metavar="TARGET", help="run this target's rule(s) even if up to date")
    b.add_argument("-v", "--verbose", action="store_true", help="say why each rule runs; show its output")
    b.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.command is None:  # plain `pipe` builds the default targets, like make
        args = _parser().parse_args([*argv, "build"])
    try:
        if args.directory:
            try:
                os.chdir(args.directory)
            except OSError as e:
                raise UsageError(f"-C {args.directory}: {e.strerror}")
        return COMMANDS[args.command](args)
    except Interrupted as e:
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except PipefileError as e:
        _error(str(e))
        return EXIT_USAGE
    except BuildpipeError as e:
        _error(str(e))
        return e.exit_code


def _error(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"pipe: {text}\n")
    sys.stderr.flush()


class Project:
    """The loaded Pipefile, its graph and settings, with the process in the Pipefile's directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        from .config import load_settings

        self.settings = load_settings(os.getcwd())
        name = args.file or self.settings.get("pipefile") or "Pipefile.py"
        path = os.path.abspath(name)
        if not os.path.isfile(path):
            raise UsageError(
                f"no Pipefile: {path} does not exist (use -f FILE or -C DIR)"
                if not args.file
                else f"-f {args.file}: no such file"
            )
        self.root = os.path.dirname(path)
        state_dir = self.settings.get("state-dir")
        self.state_dir = (
            os.path.abspath(state_dir) if state_dir else os.path.join(self.root, ".buildpipe")
        )
        os.chdir(self.root)
        from .graph import Graph
        from .pipefile import load

        self.graph = Graph(load(path))
        if "default" in self.settings:
            self.graph.default = (list(self.settings["default"]), (path, 0))


def _jobs(args: argparse.Namespace, settings: dict[str, Any]) -> int:
    if args.jobs is not None:
        if args.jobs < 1:
            raise UsageError(f"-j takes a number >= 1, not {args.jobs}")
        return args.jobs
    if "jobs" in settings:
        return int(settings["jobs"])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def cmd_build(args: argparse.Namespace) -> int:
    from .build import Build, BuildOptions, MissingSourceError
    from .console import make_reporter, warn
    from .executor import ForkExecutor
    from .filesystem import RealFileSystem
    from .rules import format_where
    from .store import open_state

    project = Project(args)
    jobs = _jobs(args, project.settings)
    verbosity = -1 if args.quiet else 1 if args.verbose else 0
    graph = project.graph

    def waiting(holder: str) -> None:
        warn(f"waiting for another pipe (pid {holder}) to finish with {project.state_dir} ...")

    store, lock = open_state(project.state_dir, None if args.dry_run else waiting, lock=not args.dry_run)
    try:
        reporter = make_reporter(graph.rules, verbosity, args.dry_run)
        build = Build(
            graph,
            store,
            RealFileSystem(),
            lambda: ForkExecutor(graph.rules, jobs, close_fds=lock.fds()),
            reporter,
            BuildOptions(
                targets=args.targets or None,
                keep_going=args.keep_going,
                dry_run=args.dry_run,
                force_all=args.always_make,
                force=args.force,
            ),
        )
        try:
            summary = build.run()
        except MissingSourceError as e:
            raise PipefileError(str(e), where=format_where(e.where))
    finally:
        store.close()
        lock.release()
    if summary.interrupted:
        raise Interrupted(summary.interrupted)
    return EXIT_OK if summary.ok else EXIT_FAILED


COMMANDS = {"build": cmd_build}
