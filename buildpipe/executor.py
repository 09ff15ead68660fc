"""Running actions: a pool of forked worker processes, each running one rule at a time.

Workers are forked from the build process after the Pipefile was loaded, so they already hold every
rule; the parent sends a rule's index down the worker's job pipe and reads back one result record:
the outputs' stat and digest (hashed in the worker, in parallel), the captured stdout/stderr and the
error, if any. Once a rule has failed without -k, a worker hands back a rule it was sent but has not
started (NOT_STARTED) instead of running it: the failure may not have reached the parent yet.
A worker runs one rule at a time. It is sent a second one to start as soon as the first ends only
while the first is brief (its action's last STREAK runs in this build each took under BRIEF seconds): a
trivial rule's round trip through the build process then costs the worker no idle time, and a rule
queued behind a long one, which could not move to an idle worker, is not a risk worth taking.
A worker that dies (signal, `os._exit`, out of memory) fails only the rule it was running and is
replaced. Workers sit in their own process group and die with the parent (PR_SET_PDEATHSIG), so an
interrupted or killed build leaves no action running.
"""

from __future__ import annotations

import errno
import gc
import marshal
import os
import signal
import struct
import sys
import time
from collections import deque, namedtuple
from collections.abc import Sequence
from types import FunctionType

from .filesystem import RealFileSystem, digest_path, file_record, stat_path
from .rules import Rule, ShAction, shown

BRIEF = 0.002  # seconds: an action this quick may have the next rule queued behind it (see above)
STREAK = 8
LOG_LIMIT = 256 * 1024  # captured output kept per rule (the tail)
NOT_STARTED = "not started: the build is stopping"  # the error of a rule handed back unrun
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_HEADER = struct.Struct("<I")


# A finished rule: its index, whether it succeeded, its outputs' file records (filesystem.file_record),
# the captured stdout and stderr, why it failed (a traceback, an exit status, missing outputs;
# NOT_STARTED for a rule handed back unrun), its inputs' packed stats read right after it ran (None:
# not read, the build stats them itself), and the seconds it ran (None: not measured).
Result = namedtuple("Result", "rule ok outputs log error inputs seconds", defaults=(None, None))

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Executor(Protocol):
        slots: int

        def start(self, rule: Rule) -> None: ...
        def running(self) -> int: ...
        def has_room(self) -> bool: ...
        def wait(self, timeout: float | None) -> list[Result]: ...
        def shutdown(self, kill: bool) -> None: ...


# -- what a worker does for one rule ---------------------------------------------------------------


def _path_arg(p: str) -> str:
    return "./" + p if p.startswith("-") else p


class _Quoted(dict):
    def __getitem__(self, key: str) -> str:
        from shlex import quote

        value = dict.__getitem__(self, key)
        return quote(value if isinstance(value, str) else str(value))


def sh_command(rule: Rule, action: ShAction) -> str:
    """The command line with every substitution shell-quoted."""
    from shlex import quote as q  # imported by ForkExecutor before it forks (not by a no-op)

    outs = [q(_path_arg(o)) for o in rule.outputs]
    ins = [q(_path_arg(i)) for i in rule.inputs]
    fields: dict[str, Any] = {
        "output": outs[0],
        "outputs": " ".join(outs),
        "input": ins[0] if ins else "",
        "inputs": " ".join(ins),
        "params": _Quoted(rule.params or {}),
    }
    return action.command.format_map(fields)


_wants_params: dict[int, bool] = {}


def _call(rule: Rule) -> None:
    action = rule.action
    if isinstance(action, ShAction):
        cmd = sh_command(rule, action)
        sys.stdout.flush()
        rc = _spawn_sh(cmd)
        if rc != 0:
            how = f"killed by {_signame(-rc)}" if rc < 0 else f"exit status {rc}"
            raise _ShellFailed(f"command failed ({how}): {cmd}")
        return
    from pathlib import Path

    assert action is not None  # the graph refuses rules without one
    outs = [Path(o) for o in rule.outputs]
    shape = rule.shape
    output: Any = outs[0] if shape is None else outs if shape == "list" else dict(zip(shape, outs))
    inputs = [Path(i) for i in rule.inputs]
    key = id(action)
    wants = _wants_params.get(key)
    if wants is None:
        wants = _takes_params(action)
        _wants_params[key] = wants
    if wants:
        action(output, inputs, params=dict(rule.params or {}))
    else:
        action(output, inputs)


def _spawn_sh(cmd: str) -> int:
    """Run `cmd` by /bin/sh with no input; its exit code (negative: the signal that ended it).

    posix_spawn (vfork and exec, as ninja does) costs the same whatever the worker's size, and
    none of subprocess's machinery per rule. The shell gets the worker's stdout and stderr (the
    capture file) and its environment, and no other descriptor: the worker made every other one
    close-on-exec when it started (see `_keep_to_itself`), as Python opens its own."""
    if signal.getsignal(signal.SIGCHLD) is not signal.SIG_DFL:  # ignored by an earlier action,
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the shell's exit status would be lost
    pid = os.posix_spawn(
        "/bin/sh",
        ["/bin/sh", "-c", cmd],
        os.environ,
        file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
        setsigmask=(),
        setsigdef=_DEFAULT_SIGNALS,
    )
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


_DEFAULT_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGPIPE", "SIGXFSZ", "SIGINT", "SIGTERM", "SIGCHLD")
    if hasattr(signal, name)
)


def _takes_params(action: Any) -> bool:
    """Whether `action` has a parameter named params. A plain function's code says so; anything else
    (a method, a partial, a decorated function, a callable object) asks inspect, whose import would
    cost a rule run alone in a new worker more than the rule (10-20 ms)."""
    if type(action) is FunctionType and not hasattr(action, "__wrapped__") \
            and not hasattr(action, "__signature__"):
        code = action.__code__  # its parameters' names come first: positional, keyword-only,
        star = bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)  # *args, **kwargs
        return "params" in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount + star]
    import inspect

    try:
        return "params" in inspect.signature(action).parameters
    except (TypeError, ValueError):
        return False


class _ShellFailed(Exception):
    pass


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def run_rule(rule: Rule) -> tuple[bool, list[Any] | None, str]:
    """Delete the old outputs, run the action, then stat and hash what it produced."""
    # Look before touching: unlink and mkdir lock the directory for writing even when there is
    # nothing to do, and so queue behind every other worker creating a file there; a stat does not.
    for o in rule.outputs:
        try:
            try:
                os.lstat(o)  # its errors (a symlink loop above it, say) are the output's
            except FileNotFoundError:
                pass
            else:
                try:
                    os.unlink(o)
                except FileNotFoundError:
                    pass
            d = os.path.dirname(o)
            if d and not os.path.isdir(d):
                try:
                    os.mkdir(d)
                except FileExistsError:
                    if not os.path.isdir(d):
                        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), d)
                except FileNotFoundError:
                    os.makedirs(d, exist_ok=True)
        except IsADirectoryError:
            return False, None, f"output {shown(o)} is a directory; remove it or choose another name"
        except OSError as e:
            return False, None, f"cannot prepare the output {shown(o)}: {e.strerror}"
    try:
        _call(rule)
    except _ShellFailed as e:
        return False, None, str(e)
    except SystemExit as e:
        return False, None, f"the action called sys.exit({e.code!r})"
    except BaseException as e:
        return False, None, _user_traceback(e)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        if _home and os.getcwd() != _home:  # an action that changed directory moves nothing else
            os.chdir(_home)
    states = []
    missing = []
    for o in rule.outputs:
        recorded = time.time_ns()
        st = stat_path(o)
        if st is None or st[0] < 0:
            missing.append(o)
            continue
        try:
            states.append(file_record(st, digest_path(o), recorded))
        except OSError as e:
            return False, None, f"cannot read the output {o}: {e.strerror}"
    if missing:
        return False, None, "the action did not create " + ", ".join(missing)
    return True, states, ""


def _user_traceback(e: BaseException) -> str:
    import traceback

    tb = traceback.extract_tb(e.__traceback__)
    frames = [f for f in tb if not f.filename.startswith(_PACKAGE_DIR)]
    text = "".join(traceback.format_exception_only(type(e), e)).rstrip()
    if frames:
        text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames)) + text
    return text


# -- the worker process ----------------------------------------------------------------------------


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        b = os.read(fd, n)
        if not b:
            raise EOFError
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _die_with_group(signum: int, frame: object) -> None:
    os.killpg(0, signal.SIGKILL)  # the worker, its shell commands and everything they started


def _die_with_parent() -> None:
    """When the build process dies, however it dies, this worker's whole process group dies too.

    PR_SET_PDEATHSIG alone would kill the worker but orphan a running shell command, which could
    then write into an output that the next build is producing."""
    signal.signal(signal.SIGUSR2, _die_with_group)
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGUSR2, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_home = ""  # the Pipefile's directory: every action starts there


def _keep_to_itself() -> None:
    """Descriptors beyond 0-2 that `pipe` was started with (a shell's `9>file`, say) are not passed
    on to shell commands, as subprocess would not either."""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def _capture_file() -> int:
    """An unnamed temporary file for a worker's stdout and stderr. O_TMPFILE spares each worker
    importing tempfile (8 ms, on the path of a build that runs one rule)."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        for directory in (os.environ.get("TMPDIR"), "/tmp", "/var/tmp"):
            if directory:
                try:
                    return os.open(directory, tmpfile | os.O_RDWR | os.O_CLOEXEC, 0o600)
                except OSError:
                    pass
    import tempfile

    return os.dup(tempfile.TemporaryFile().fileno())


def _worker_main(
    rules: Sequence[Rule], job_fd: int, result_fd: int, parent: int, stop: Any, stop_on_failure: bool
) -> None:
    global _home
    os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before that was armed
        os._exit(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    cfd = _capture_file()
    os.dup2(cfd, 1)
    os.dup2(cfd, 2)
    _home = os.getcwd()
    _keep_to_itself()
    packed_stats = RealFileSystem.packed_stats
    # Actions may make cyclic garbage: collect it, but never walk (and so copy) the inherited heap.
    gc.freeze()
    gc.enable()
    while True:
        try:
            (index,) = _HEADER.unpack(_read_exact(job_fd, 4))
        except EOFError:
            os._exit(0)
        if stop[0]:
            payload = marshal.dumps((index, False, None, "", NOT_STARTED))
            try:
                _write_all(result_fd, _HEADER.pack(len(payload)) + payload)
            except BrokenPipeError:
                os._exit(1)
            continue
        if os.lseek(cfd, 0, os.SEEK_END):  # left by a background process of an earlier rule
            os.ftruncate(cfd, 0)
            os.lseek(cfd, 0, os.SEEK_SET)
        rule = rules[index]
        t0 = time.perf_counter()
        ok, states, error = run_rule(rule)
        seconds = time.perf_counter() - t0
        if not ok and stop_on_failure:
            stop[0] = 1  # before anyone takes another rule: no new rule starts after a failure
        # Read at once whether an input changed while it ran (the build compares): here, in parallel.
        inputs = packed_stats(rule.inputs) if ok else None
        log = ""
        size = os.lseek(cfd, 0, os.SEEK_END)
        if size:  # what the action printed
            start = max(0, size - LOG_LIMIT)
            log = os.pread(cfd, size - start, start).decode("utf-8", "replace")
            if start:
                log = f"[... {start} bytes cut ...]\n" + log
        payload = marshal.dumps((index, ok, states, log, error, inputs, seconds))
        try:
            _write_all(result_fd, _HEADER.pack(len(payload)) + payload)
        except BrokenPipeError:
            os._exit(1)


class _Worker:
    __slots__ = ("pid", "job_w", "result_r", "buf", "sent", "since")

    def __init__(self, pid: int, job_w: int, result_r: int) -> None:
        self.pid = pid
        self.job_w = job_w
        self.result_r = result_r
        self.buf = b""
        self.sent: deque[int] = deque()  # the rules it was sent and has not answered, in order
        self.since = 0.0  # when the first of them started (as far as the build process can tell)


class ForkExecutor:
    """Up to `slots` rules at once, each in a pre-forked worker process.

    With `stop_on_failure` (no -k), the first failure stops every worker from starting another rule:
    one sent meanwhile comes back as NOT_STARTED. A worker that dies hands the rules queued behind
    the one it was running to the other workers (see `_resend`)."""

    def __init__(
        self,
        rules: Sequence[Rule],
        slots: int,
        close_fds: Sequence[int] = (),
        stop_on_failure: bool = True,
    ) -> None:
        import mmap

        self.rules = rules
        self.slots = max(1, slots)
        self.close_fds = list(close_fds)
        self.stop_on_failure = stop_on_failure
        self.stop = mmap.mmap(-1, 1)  # shared with the workers: 1 once the build is stopping
        self.workers: list[_Worker] = []
        import selectors
        import shlex  # noqa: F401 - once, for every worker (see sh_command)

        self.selector = selectors.DefaultSelector()
        self._running = 0
        self._chosen: _Worker | None = None  # found by has_room() for the next start()
        self._backlog: deque[int] = deque()  # sent to a worker that died before starting them
        self._brief: dict[int, int] = {}  # id(action) -> how many of its last runs were brief

    def _spawn(self) -> _Worker:
        from selectors import EVENT_READ

        job_r, job_w = os.pipe()
        result_r, result_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the build loop
            try:
                os.close(job_w)
                os.close(result_r)
                for w in self.workers:
                    os.close(w.job_w)
                    os.close(w.result_r)
                for fd in self.close_fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                _worker_main(self.rules, job_r, result_w, parent, self.stop, self.stop_on_failure)
            finally:
                os._exit(1)
        os.close(job_r)
        os.close(result_w)
        w = _Worker(pid, job_w, result_r)
        self.workers.append(w)
        self.selector.register(result_r, EVENT_READ, w)
        return w

    def running(self) -> int:
        return self._running

    def has_room(self) -> bool:
        self._chosen = self._worker()
        return self._chosen is not None

    def _worker(self) -> _Worker | None:
        """The worker the next rule goes to: an idle one, a new one, else one whose only rule is
        brief and not overdue; None if there is none."""
        workers = self.workers
        for w in workers:
            if not w.sent:
                return w
        if len(workers) < self.slots:
            return self._spawn()
        if self._backlog:
            return None
        now = time.perf_counter()
        for w in workers:
            if len(w.sent) == 1 and now - w.since < BRIEF:
                if self._brief.get(id(self.rules[w.sent[0]].action), 0) >= STREAK:
                    return w
        return None

    def start(self, rule: Rule) -> None:
        """Give `rule` to a worker (the one `has_room` found), forking one if fewer than `slots`
        exist."""
        w, self._chosen = self._chosen or self._worker(), None
        if w is None or w not in self.workers:
            raise RuntimeError("no free worker")
        self._running += 1
        self._send(w, rule.index)

    def _send(self, w: _Worker, index: int) -> None:
        if not w.sent:
            w.since = time.perf_counter()
        w.sent.append(index)
        try:
            _write_all(w.job_w, _HEADER.pack(index))
        except BrokenPipeError:
            pass  # it died already: its death is reported by wait()

    def _resend(self) -> None:
        """Rules a dead worker never started go to idle workers (new ones if need be)."""
        while self._backlog:
            w = self._worker()  # idle or new only, while there is a backlog
            if w is None:
                return
            self._send(w, self._backlog.popleft())

    def wait(self, timeout: float | None) -> list[Result]:
        """Results of finished rules; [] when `timeout` passed first."""
        results: list[Result] = []
        events = self.selector.select(timeout)
        if not events:
            # A worker whose action forked keeps its result pipe open through the grandchild
            # even after it died: look for dead busy workers by pid as well.
            for w in list(self.workers):
                if w.sent:
                    pid, status = os.waitpid(w.pid, os.WNOHANG)
                    if pid == w.pid:
                        self._drain(w, results)  # what it answered before it died
                        results.extend(self._died(w, status))
        for key, _ in events:
            w = key.data
            try:
                data = os.read(w.result_r, 1 << 16)
            except OSError:
                data = b""
            if not data:
                results.extend(self._died(w))
                continue
            self._take(w, data, results)
        if self._backlog:
            self._resend()
        return results

    def _take(self, w: _Worker, data: bytes, results: list[Result]) -> None:
        """The whole results among what `w` has sent so far."""
        w.buf += data
        while len(w.buf) >= 4:
            (n,) = _HEADER.unpack_from(w.buf)
            if len(w.buf) < 4 + n:
                break
            payload, w.buf = w.buf[4 : 4 + n], w.buf[4 + n :]
            res = Result(*marshal.loads(payload))
            w.sent.popleft()
            w.since = time.perf_counter()  # the next one, if any, starts now
            self._running -= 1
            if res.seconds is not None:
                action = id(self.rules[res.rule].action)
                self._brief[action] = self._brief.get(action, 0) + 1 if res.seconds < BRIEF else 0
            results.append(res)

    def _drain(self, w: _Worker, results: list[Result]) -> None:
        """Take what a dead worker left in its pipe, without waiting for more (a process it
        started may still hold the pipe open)."""
        os.set_blocking(w.result_r, False)
        while True:
            try:
                data = os.read(w.result_r, 1 << 16)
            except OSError:  # BlockingIOError included: nothing more for now
                return
            if not data:
                return
            self._take(w, data, results)

    def _died(self, w: _Worker, status: int | None = None) -> list[Result]:
        # Whatever the worker started (a shell command, its children) dies with it: left running,
        # it could write into an output that a later rule or build is producing. While the worker
        # is a zombie, or any member of its group lives, its pid cannot name another group.
        try:
            os.killpg(w.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.selector.unregister(w.result_r)
        os.close(w.result_r)
        os.close(w.job_w)
        self.workers.remove(w)
        if status is None:
            status = os.waitpid(w.pid, 0)[1]
        if not w.sent:
            return []
        index = w.sent.popleft()
        self._backlog.extend(w.sent)  # queued behind it, never started
        self._running -= 1
        if self.stop_on_failure:
            self.stop[0] = 1
        if os.WIFSIGNALED(status):
            how = f"killed by {_signame(os.WTERMSIG(status))}"
        else:
            how = f"exited with status {os.waitstatus_to_exitcode(status)} (os._exit?)"
        return [Result(index, False, None, "", f"the worker running this rule died: {how}")]

    def shutdown(self, kill: bool) -> None:
        """Stop every worker: idle ones by closing their pipe, busy ones (when `kill`) by SIGKILL."""
        for w in self.workers:
            if kill and w.sent:
                try:
                    os.killpg(w.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            os.close(w.job_w)
        for w in self.workers:
            try:
                os.waitpid(w.pid, 0)
            except ChildProcessError:
                pass
            try:
                self.selector.unregister(w.result_r)
            except (KeyError, ValueError):
                pass
            os.close(w.result_r)
        self.workers = []
        self._running = 0
        self.selector.close()
        self.stop.close()
