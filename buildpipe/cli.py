"""The command line: the command table, settings, and exit statuses decided in one place.

Exit status: 0 success; 1 a rule failed; 2 a usage error or an invalid Pipefile; 128+N killed by
signal N (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import time

from . import __version__
from .errors import BuildpipeError, Interrupted, PipefileError, UsageError

TYPE_CHECKING = False  # typing costs milliseconds of start-up: annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from .graph import Graph

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _targets(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("targets", nargs="*", metavar="TARGET")


def _run_options(sp: argparse.ArgumentParser) -> None:
    _targets(sp)
    sp.add_argument("-j", "--jobs", type=int, metavar="N", help="run N rules at once")
    sp.add_argument(
        "-k", "--keep-going", action="store_true", help="build all that does not depend on a failure"
    )
    sp.add_argument("-v", "--verbose", action="store_true", help="say why each rule runs; show its output")
    sp.add_argument("-q", "--quiet", action="store_true", help="print only failures")


def _build_options(sp: argparse.ArgumentParser) -> None:
    _run_options(sp)
    sp.add_argument("-n", "--dry-run", action="store_true", help="say what would run and why; run nothing")
    sp.add_argument("-B", "--always-make", action="store_true", help="run every needed rule")
    sp.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="TARGET",
        help="run this target's rule(s) even if up to date",
    )
    sp.add_argument(
        "--shuffle",
        nargs="?",
        type=int,
        const=-1,
        metavar="SEED",
        help="start ready rules in a random order, to expose missing dependencies",
    )


def _graph_options(sp: argparse.ArgumentParser) -> None:
    _targets(sp)
    sp.add_argument("--format", choices=["text", "dot"], default="text")


# name -> (one-line help, what adds its options)
SYNTAX = {
    "build": ("build targets and what they need", _build_options),
    "watch": ("build, then rebuild whenever a tracked input or the Pipefile changes", _run_options),
    "status": ("what is stale and why; exit 1 if anything is", _targets),
    "list": ("the targets, aliases and rules, with where each was declared", lambda sp: None),
    "graph": ("the dependency graph", _graph_options),
    "clean": ("delete outputs and their records (never sources)", _targets),
}


def _columns() -> int:
    """The terminal width as shutil.get_terminal_size tells it: $COLUMNS, the terminal, or 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _parser(command: str | None) -> argparse.ArgumentParser:
    """The command line; only `command`'s own options are declared (argparse is slow to build)."""
    import argparse

    class _Formatter(argparse.HelpFormatter):
        """argparse's help layout, sized without importing shutil (and the archive modules it
        pulls in: 4 ms of every start, for help text that is rarely printed)."""

        def __init__(
            self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
        ) -> None:
            if width is None:
                width = _columns() - 2
            super().__init__(prog, indent_increment, max_help_position, width)

    p = argparse.ArgumentParser(
        prog="pipe",
        description="A make-like build system whose build files are Python.",
        formatter_class=_Formatter,
    )
    p.add_argument("--version", action="version", version=f"buildpipe {__version__}")
    p.add_argument("-C", dest="directory", metavar="DIR", help="change to DIR before anything else")
    p.add_argument("-f", dest="file", metavar="FILE", help="the Pipefile (default: Pipefile.py)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (text, options) in SYNTAX.items():
        sp = sub.add_parser(name, help=text, description=text, formatter_class=_Formatter)
        if name == command:
            options(sp)
    return p


def _command_in(argv: list[str]) -> str | None:
    """The command word of `argv`, skipping the global options and their values."""
    words = iter(argv)
    for word in words:
        if word in ("-C", "-f"):
            next(words, None)
        elif not word.startswith("-"):
            return word if word in SYNTAX else None
    return None


def main(argv: list[str] | None = None) -> int:
    """The `pipe` command. Run as a program (no `argv`), it ends the process itself once done."""
    # One command, then exit: the cyclic garbage collector would only walk the ever-growing graph
    # again and again (a third of a no-op at 100,000 rules). Workers and `pipe watch` turn it back
    # on for what runs long (see executor and watch).
    gc.disable()
    if argv is not None:  # called from Python: leave the caller's process as it was
        try:
            return _main(argv)
        finally:
            gc.enable()
    code = _main(sys.argv[1:])
    # Everything is written and closed: skip freeing the graph object by object (0.2 s at 100,000
    # rules), as a C program would. What the Pipefile registered with atexit still runs.
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        return code  # let the interpreter report it as usual
    os._exit(code)


class _Args:
    """The parsed command line, as argparse's Namespace has it."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


_FLAGS = {
    "-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose",
    "-k": "keep_going", "--keep-going": "keep_going", "-n": "dry_run", "--dry-run": "dry_run",
    "-B": "always_make", "--always-make": "always_make",
}


def _quick(argv: list[str]) -> _Args | None:
    """`pipe [-C DIR] [-f FILE] [build] [-q -v -k -n -B -j N ...] [TARGET ...]`, the common line,
    parsed without argparse (importing and setting it up costs as much as a small no-op build);
    None for anything else, which argparse parses, or explains. Both give the same values."""
    values: dict[str, Any] = {"directory": None, "file": None}
    i = 0
    while i < len(argv) and argv[i] in ("-C", "-f"):
        if i + 1 == len(argv) or argv[i + 1].startswith("-"):
            return None
        values["directory" if argv[i] == "-C" else "file"] = argv[i + 1]
        i += 2
    rest = argv[i + 1 :] if argv[i:i + 1] == ["build"] else argv[i:]
    if rest and i < len(argv) and argv[i] != "build":
        return None
    values.update(
        command="build", targets=[], jobs=None, keep_going=False, verbose=False, quiet=False,
        dry_run=False, always_make=False, force=[], shuffle=None,
    )
    targets: list[str] = values["targets"]
    ended = False  # an option came after the targets: no more may follow (as argparse has it)
    words = iter(rest)
    for word in words:
        if not word.startswith("-"):
            if ended:
                return None
            targets.append(word)
            continue
        ended = bool(targets)
        if word in _FLAGS:
            values[_FLAGS[word]] = True
            continue
        if word in ("-j", "--jobs"):
            number = next(words, "")
        elif word.startswith("--jobs="):
            number = word[len("--jobs=") :]
        elif word.startswith("-j") and not word.startswith("--"):
            number = word[2:]
        else:
            return None
        if not (number.isascii() and number.isdigit()):
            return None
        values["jobs"] = int(number)
    return _Args(**values)


def _main(argv: list[str]) -> int:
    args: Any = _quick(argv)
    if args is None:
        command = _command_in(argv)
        args = _parser(command).parse_args(argv)
        if args.command is None:  # plain `pipe` builds the default targets, like make
            args = _parser("build").parse_args([*argv, "build"])
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
    from .rules import safe_text

    sys.stdout.flush()
    sys.stderr.write(f"pipe: {safe_text(text)}\n")
    sys.stderr.flush()


class Project:
    """The loaded Pipefile, its graph and settings, with the process in the Pipefile's directory."""

    def __init__(self, args: argparse.Namespace, proof: bool = False) -> None:
        from .config import load_settings

        self.settings = load_settings(os.getcwd())
        self.config_dir = os.getcwd()
        name = args.file or self.settings.get("pipefile") or "Pipefile.py"
        path = os.path.abspath(name)
        if not os.path.isfile(path):
            raise UsageError(
                f"no Pipefile: {path} does not exist (use -f FILE or -C DIR)"
                if not args.file
                else f"-f {args.file}: no such file"
            )
        self.root = os.path.dirname(path)
        self.pipefile = path
        state_dir = self.settings.get("state-dir")
        self.state_dir = os.path.abspath(state_dir) if state_dir else os.path.join(self.root, ".buildpipe")
        os.chdir(self.root)
        # A build may rest on the proof its last success left (see `proof`): its files are checked
        # by forked helpers while the Pipefile runs.
        # It is checked under the build's lock: no other build may change those files meanwhile.
        self.proof_key: str | None = None
        self.proof_check: Any = None
        if proof:
            from .proof import request_key

            self.proof_key = request_key(path, self.state_dir, args.targets)
            if not (args.always_make or args.force):
                self._start_proof_check()
        try:
            self._load(path)
        except BaseException:
            self.close()
            raise

    def _start_proof_check(self) -> None:
        """Check the stored proof's files under the lock, held by the checking helper alone: it
        lets go when done, so the Pipefile never runs holding the lock (it may start `pipe`
        itself). The build takes the lock again afterwards, and rests on the proof only if nobody
        held it in between (the lock's epoch)."""
        from .proof import read

        proof = read(self.state_dir, self.proof_key or "")
        if proof is None:
            return
        from .proof import INLINE, Check

        if proof.count <= INLINE:  # checked by the build itself, under its lock
            self.proof_check = Check(proof, inline=True)
            return
        from .console import warn
        from .proof import watch_writes
        from .store import Lock

        lock = Lock(self.state_dir)
        try:
            lock.acquire(lambda holder: warn(_waiting_text(holder, self.state_dir)))
        except OSError:
            return  # the build takes the lock later, and reports what is wrong
        try:
            if lock.epoch:
                self.proof_check = Check(proof, holds=lock.fd)
                self.proof_check.epoch = lock.epoch
                if not self.proof_check.watching:  # no inotify: Python's own reports only
                    watch_writes(True)
        finally:
            lock.hand_over()

    def _load(self, path: str) -> None:
        from .pipefile import load

        try:
            self.registry = load(path)
        finally:
            if self.proof_check is not None and not self.proof_check.watching:
                from .proof import watch_writes

                if watch_writes(False):  # the Pipefile wrote files or started processes
                    self.proof_check.close()
                    self.proof_check = None
        self._graph: Graph | None = None
        # The declarations digest, when it is the one the stored proof holds for: the graph is the
        # one that proof was made with, so it is built (and checked) only if the build needs it.
        self.declared = self._declared_as_proven()
        if self.declared is None:
            self._make_graph()

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            self._make_graph()
        return self._graph  # type: ignore[return-value]

    def _make_graph(self) -> None:
        from .graph import Graph
        from .store import state_files

        # Declared as a proof's were, the graph passed every check then (see _declared_as_proven).
        proven = self.declared is not None
        graph = Graph(self.registry, proven=proven)
        if not proven:
            reserved = {self.pipefile: "the Pipefile", self.state_dir: "in the state directory"}
            reserved.update((f, "a state file") for f in state_files(self.state_dir))
            graph.check_reserved(reserved)
        if "default" in self.settings:
            for target in self.settings["default"]:
                if graph.lookup(target) is None:
                    raise UsageError(
                        f"{self.settings_file('default')}: setting 'default' names an unknown target "
                        f"{target!r}{graph._suggest(target)}"
                    )
            graph.default = (list(self.settings["default"]), (self.pipefile, 0))
        self._graph = graph

    def _declared_as_proven(self) -> bytes | None:
        """The declarations digest, if it equals the one of the proof being checked, which was made
        from a graph that passed every check (see `proof.Proof.wanted`); else None."""
        check = self.proof_check
        wanted = check.proof.wanted if check is not None else None
        if wanted is None:
            return None
        from .fingerprint import Fingerprinter, params_fingerprint
        from .graph import check_actions
        from .proof import declarations

        registry = self.registry
        try:
            check_actions(registry.rules)  # the digest covers the wanted rules' actions only
        except PipefileError:
            return None  # the graph will say so
        if "default" in self.settings:
            default: list[str] | None = list(self.settings["default"])
        else:
            default = None if registry.default is None else list(registry.default[0])
        digest = declarations(
            registry.rules, registry.unusual, {name: ts for name, (ts, _) in registry.aliases.items()},
            {inv.path for inv in registry.invariants}, default, wanted, Fingerprinter().action,
            params_fingerprint,
        )
        return digest if digest == check.proof.graph else None

    def close(self) -> None:
        """Stop checking the proof, if the build did not take the answer."""
        if self.proof_check is not None:
            self.proof_check.close()
            self.proof_check = None

    def settings_file(self, key: str) -> str:
        """Which settings file a key came from (pipe.toml wins over pyproject.toml)."""
        from .config import source_of

        return source_of(self.config_dir, key)


def _seed(shuffle: int | None) -> int | None:
    """--shuffle without a seed picks one and says so, so that an order can be replayed."""
    if shuffle != -1:
        return shuffle
    seed = int.from_bytes(os.urandom(4), "little")
    sys.stderr.write(f"pipe: shuffling with seed {seed} (replay: --shuffle {seed})\n")
    return seed


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
    summary = run_build(Project(args, proof=not args.dry_run), args)
    if summary.interrupted:
        raise Interrupted(summary.interrupted)
    return EXIT_OK if summary.ok else EXIT_FAILED


def run_build(project: Project, args: argparse.Namespace) -> Any:
    """One build of the loaded project as the command line asks; returns the BuildSummary."""
    from .build import Build, BuildOptions, MissingSourceError
    from .console import make_reporter, warn
    from .executor import ForkExecutor
    from .filesystem import RealFileSystem
    from .rules import format_where

    dry_run = getattr(args, "dry_run", False)
    verbosity = -1 if args.quiet else 1 if args.verbose else 0

    def waiting(holder: str) -> None:
        warn(_waiting_text(holder, project.state_dir))

    try:
        jobs = _jobs(args, project.settings)
        if project.proof_check is not None and not project.proof_check.inline:
            project.proof_check.result()  # its helper holds the lock until it has looked
        store, lock = _open_state(project, waiting, lock=not dry_run, load=project.proof_key is None)
    except BaseException:
        project.close()
        raise
    check = project.proof_check
    project.proof_check = None  # the build's now
    if check is not None and not check.inline and lock.seen != check.epoch:  # another build held it
        check.close()
        check = None
    proof = (project.proof_key, check) if project.proof_key is not None else None
    try:
        if project.declared is not None and check is not None:  # the graph is the proven one
            from .build import holds, settled

            changes, t0 = check.result(), time.perf_counter()
            if changes is not None and not changes.changed and holds(store, check.proof):
                reporter = make_reporter(project.registry.rules, verbosity, dry_run)
                wanted = len(check.proof.wanted or ())
                return settled(store, project.proof_key or "", check.proof, changes, wanted, reporter, t0)
        graph = project.graph
        build = Build(
            graph,
            store,
            RealFileSystem(),
            lambda: ForkExecutor(
                graph.rules, jobs, close_fds=lock.fds(), stop_on_failure=not args.keep_going
            ),
            make_reporter(graph.rules, verbosity, dry_run),
            BuildOptions(
                targets=args.targets or None,
                keep_going=args.keep_going,
                dry_run=dry_run,
                force_all=getattr(args, "always_make", False),
                force=getattr(args, "force", []),
                shuffle=_seed(getattr(args, "shuffle", None)),
            ),
            proof=proof,
            declared=project.declared,
        )
        try:
            return build.run()
        except MissingSourceError as e:
            raise PipefileError(str(e), where=format_where(e.where))
    finally:
        if proof is not None and proof[1] is not None:
            proof[1].close()  # if the build stopped before taking the answer
        store.close()
        lock.release()


def _waiting_text(holder: str, state_dir: str) -> str:
    return f"waiting for another pipe (pid {holder}) to finish with {state_dir} ..."


def _open_state(project: Project, waiting: Any, lock: bool, load: bool = True) -> Any:
    """The store and lock, saying once if the state had to be started afresh."""
    from .console import warn
    from .store import open_state

    store, the_lock = open_state(project.state_dir, waiting, lock=lock, load=load)
    if store.note:
        warn(store.note)
    return store, the_lock


def _wanted(project: Project, targets: list[str]) -> list[int]:
    g = project.graph
    if targets:
        return g.closure(g.resolve(targets))
    default = g.default_targets()
    if default is not None:
        return g.closure(g.resolve(default))
    return list(range(len(g.rules)))


def cmd_status(args: argparse.Namespace) -> int:
    from .build import Build, BuildOptions, MissingSourceError
    from .console import summary_text
    from .filesystem import RealFileSystem
    from .rules import format_where, shown

    project = Project(args)
    graph = project.graph
    store, lock = _open_state(project, None, lock=False)
    try:
        build = Build(
            graph,
            store,
            RealFileSystem(),
            lambda: None,  # type: ignore[arg-type,return-value]
            _Silent(),
            BuildOptions(targets=args.targets or None, dry_run=True),
        )
        try:
            summary = build.run()
        except MissingSourceError as e:
            raise PipefileError(str(e), where=format_where(e.where))
    finally:
        store.db.close()
    for i, why in summary.would_run:
        r = graph.rules[i]
        print(f"stale {shown(r.outputs[0])} ({format_where(r.where)}): {', '.join(map(str, why))}")
    print(summary_text(summary, graph.rules, dry_run=True).replace("would run", "stale"))
    return EXIT_FAILED if summary.would_run else EXIT_OK


class _Silent:
    def begin(self, total: int) -> None: ...
    def started(self, rule: Any, why: Any) -> None: ...
    def finished(self, rule: Any, result: Any, seconds: float, done: int) -> None: ...
    def progress(self, done: int, total: int, running: Any) -> None: ...
    def end(self, summary: Any) -> None: ...


def cmd_list(args: argparse.Namespace) -> int:
    from .describe import list_text

    print(list_text(Project(args).graph))
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    from .describe import dot_text, tree_text

    project = Project(args)
    g = project.graph
    wanted = _wanted(project, args.targets)
    if args.format == "dot":
        print(dot_text(g, wanted))
    else:
        if args.targets:
            tops = g.resolve(args.targets)
        else:
            consumed = {p for i in wanted for p in g.rules[i].inputs}
            tops = [g.rules[i] for i in wanted if not any(o in consumed for o in g.rules[i].outputs)]
        print(tree_text(g, tops))
    return EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    from .clean import clean
    from .console import plural, warn
    from .rules import shown

    project = Project(args)
    g = project.graph
    wanted = _wanted(project, args.targets) if args.targets else list(range(len(g.rules)))

    def waiting(holder: str) -> None:
        warn(_waiting_text(holder, project.state_dir))

    store, lock = _open_state(project, waiting, lock=True)
    try:
        from .store import state_files

        protected = [project.pipefile, project.state_dir, *state_files(project.state_dir)]
        deleted, refused = clean(g, store, wanted, protected)
    finally:
        store.close()
        lock.release()
    for path in refused:
        warn(f"refused to delete {shown(path)}: it lies outside the project, or is a source or the state")
    print(f"removed {plural(len(deleted), 'file')}")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    from .watch import watch

    return watch(args, Project, run_build)


COMMANDS = {
    "build": cmd_build,
    "watch": cmd_watch,
    "status": cmd_status,
    "list": cmd_list,
    "graph": cmd_graph,
    "clean": cmd_clean,
}
