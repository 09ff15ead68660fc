"""In-memory stand-ins for the engine's FileSystem and Executor, and graphs from a tiny spec.

- `Clock`: fake nanosecond time the tests move forward explicitly.
- `FakeFS`: path -> bytes with a fake stat (size, mtime_ns, ctime_ns, inode). Timestamps come from
  the clock, optionally rounded down to a coarse granularity (1 s like ext3, 2 s like FAT), so that
  an edit within one timestamp tick leaves the stat unchanged: the racy-timestamp case.
- `FakeExecutor`: `start()` queues a rule, `wait()` runs queued ones in-process and returns
  `executor.Result`s shaped exactly like the real worker's; it can fail chosen rules and logs what ran.
- Actions are pure functions of their input bytes (`make_action`), called with `FakePath`s.
- `RuleSpec`, `parse_spec`, `build_graph`: a `Graph` from a list of specs, without any Pipefile.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from buildpipe import dsl
from buildpipe.executor import Result
from buildpipe.filesystem import DIRECTORY, Hashed, Stat, digest_bytes, file_record, pack_stat
from buildpipe.graph import Graph
from buildpipe.rules import Rule

# A start time that is not a whole millisecond: `is_racy` uses the fine (50 ms) window for it.
T0 = 1_700_000_000_000_000_000 + 123_457
MS = 1_000_000
SECOND = 1_000_000_000
ROOT = "/nonexistent-buildpipe-model-root"


class Clock:
    def __init__(self, start: int = T0) -> None:
        self.t = start

    def now(self) -> int:
        return self.t

    def advance(self, ns: int) -> None:
        assert ns >= 0
        self.t += ns


@dataclass
class FakeFile:
    data: bytes
    mtime: int
    ctime: int
    ino: int


class FakeFS:
    """The FileSystem protocol (stat, packed_stats, hash_files, digest, remove, now_ns) over a dict, plus
    test-side editing."""

    def __init__(
        self, clock: Clock | None = None, granularity: int = 1, reuse_inodes: bool = False
    ) -> None:
        self.clock = clock or Clock()
        self.granularity = granularity
        self.reuse_inodes = reuse_inodes
        self.files: dict[str, FakeFile] = {}
        self.dirs: set[str] = set()
        self._next_ino = 1000
        self._free_inos: list[int] = []
        self.hashed: list[str] = []  # every path the engine hashed, in order

    # -- the FileSystem protocol ------------------------------------------------------------------

    def stat(self, path: str) -> Stat | None:
        f = self.files.get(path)
        if f is None:
            return DIRECTORY if path in self.dirs else None
        return (len(f.data), f.mtime, f.ctime, f.ino)

    def packed_stats(self, paths: list[str]) -> list[bytes | None]:
        return [None if (st := self.stat(p)) is None or st[0] < 0 else pack_stat(*st) for p in paths]

    def hash_files(self, paths: list[str]) -> list[Hashed]:
        return [(st, None if st is None or st[0] < 0 else self.digest(p)) for p in paths
                for st in [self.stat(p)]]

    def digest(self, path: str) -> bytes:
        f = self.files.get(path)
        if f is None:
            raise FileNotFoundError(path)
        self.hashed.append(path)
        return digest_bytes(f.data)

    def remove(self, path: str) -> None:
        f = self.files.pop(path, None)
        if f is not None and self.reuse_inodes:
            self._free_inos.append(f.ino)

    def now_ns(self) -> int:
        return self.clock.now()

    # -- what users (and actions) do --------------------------------------------------------------

    def stamp(self) -> int:
        """The timestamp a file written now gets: the clock rounded down to the granularity."""
        t = self.clock.now()
        g = self.granularity
        return t - t % g if g > 1 else t

    def _inode(self) -> int:
        if self._free_inos:
            return self._free_inos.pop()
        self._next_ino += 1
        return self._next_ino

    def read(self, path: str) -> bytes | None:
        f = self.files.get(path)
        return None if f is None else f.data

    def exists(self, path: str) -> bool:
        return path in self.files

    def write(self, path: str, data: bytes) -> None:
        """Edit in place (same inode if it exists), like `open(path, "wb").write(data)`."""
        t = self.stamp()
        f = self.files.get(path)
        if f is None:
            self.files[path] = FakeFile(bytes(data), t, t, self._inode())
        else:
            f.data, f.mtime, f.ctime = bytes(data), t, t

    def create(self, path: str, data: bytes) -> None:
        """A new file (a fresh inode), as after unlink + open: what actions do."""
        self.remove(path)
        t = self.stamp()
        self.files[path] = FakeFile(bytes(data), t, t, self._inode())

    def replace(self, path: str, data: bytes) -> None:
        """Write a temporary file and rename it over `path` (editors do this): a new inode."""
        self.create(path, data)

    def touch(self, path: str) -> None:
        """Change the timestamps only (as touch(1) does, ctime moves with mtime)."""
        f = self.files[path]
        f.mtime = f.ctime = self.stamp()

    def set_times(self, path: str, mtime: int, ctime: int | None = None) -> None:
        f = self.files[path]
        f.mtime = mtime
        if ctime is not None:
            f.ctime = ctime

    def sneaky_write(self, path: str, data: bytes) -> None:
        """Change the bytes but keep size, mtime, ctime and inode: an edit within the same
        timestamp tick. Only detectable while the file's stat is racy (see `may_edit_unseen`)."""
        f = self.files[path]
        assert len(data) == len(f.data), "a same-stat edit must keep the size"
        f.data = bytes(data)

    def same_tick(self, path: str, window: int = 40 * MS) -> bool:
        """Whether an edit now keeping the stat must still be noticed: the file was stamped so
        recently that any stat the engine took of it since is racy (contract §2, racy timestamp).
        With coarse timestamps (whole milliseconds) `is_racy` widens its window to 2 s."""
        f = self.files[path]
        if f.mtime % MS == 0:
            window = 2 * SECOND - 10 * MS
        return self.clock.now() - f.mtime < window

    def snapshot(self) -> dict[str, tuple[bytes, int, int, int]]:
        return {p: (f.data, f.mtime, f.ctime, f.ino) for p, f in self.files.items()}


class FakePath:
    """The bit of `pathlib.Path` an action uses, reading and writing a FakeFS."""

    __slots__ = ("fs", "path")

    def __init__(self, fs: FakeFS, path: str) -> None:
        self.fs = fs
        self.path = path

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def read_bytes(self) -> bytes:
        data = self.fs.read(self.path)
        if data is None:
            raise FileNotFoundError(self.path)
        return data

    def write_bytes(self, data: bytes) -> None:
        self.fs.create(self.path, data)

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"FakePath({self.path!r})"


# -- actions: pure functions of the input bytes ----------------------------------------------------


def strip_comment(data: bytes) -> bytes:
    """What the hashing actions read of an input: everything before the first '#'."""
    return data.split(b"#", 1)[0]


def produce(
    output_names: Sequence[str], inputs: Sequence[bytes], params: dict[str, Any], version: int,
    mode: str,
) -> list[bytes]:
    """Output bytes of an action. `hash`: from the inputs (ignoring '#' comments);
    `const`: from nothing but version and params. The param named `noise` is ignored, so changing
    it reruns the rule but gives the same bytes (early cutoff)."""
    if mode == "const":
        basis = b""
    else:
        basis = b"\0".join(strip_comment(d) for d in inputs)
    h = xxhash.xxh3_64_hexdigest(basis)
    p = ",".join(f"{k}={params[k]!r}" for k in sorted(params) if k != "noise")
    return [f"{name}|v{version}|{p}|{h}\n".encode() for name in output_names]


def _make_action(version: int, mode: str) -> Callable[..., None]:
    def action(output: Any, inputs: list[FakePath], params: dict[str, Any]) -> None:
        outs = output if isinstance(output, list) else [output]
        datas = [i.read_bytes() for i in inputs]
        for o, data in zip(outs, produce([o.path for o in outs], datas, params, version, mode)):
            o.write_bytes(data)

    return action


_ACTIONS: dict[tuple[int, str], Callable[..., None]] = {}


def make_action(version: int = 0, mode: str = "hash") -> Callable[..., None]:
    """The action function for (version, mode); one object per pair, so fingerprints are memoised.
    A different version is a different closure value: "the action changed" (contract §2 item 5)."""
    key = (version, mode)
    a = _ACTIONS.get(key)
    if a is None:
        a = _ACTIONS[key] = _make_action(version, mode)
    return a


def call_action(rule: Rule, fs: FakeFS) -> None:
    """Call a rule's action the way `executor._call` does, with FakePaths."""
    outs = [FakePath(fs, o) for o in rule.outputs]
    output: Any = outs[0] if rule.shape is None else outs
    inputs = [FakePath(fs, i) for i in rule.inputs]
    rule.action(output, inputs, params=dict(rule.params or {}))  # type: ignore[operator,misc]


# -- the executor ----------------------------------------------------------------------------------


class FakeExecutor:
    """Deferred in-process execution: start() queues, wait() runs queued rules and returns Results.

    order: "fifo_all" runs every queued rule per wait(); "fifo_one" / "lifo_one" one per wait().
    on_result(result) returning True stops a wait() there (the test interrupts the build then);
    shutdown(kill=True) kills what is still queued, leaving partial outputs.
    fail: first outputs of rules whose action fails (after deleting the old outputs; with
    `partial`, a failing action leaves a half-written first output behind, as a crash would).
    Everything that happens is appended to `events`: ("start", i) and ("done", i, ok).
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        fs: FakeFS,
        *,
        slots: int = 1,
        fail: Iterable[str] = (),
        order: str = "fifo_all",
        per_rule_ns: int = 100_003,
        partial: bool = True,
        events: list[tuple[Any, ...]] | None = None,
        on_result: Callable[[Result], bool] | None = None,
    ) -> None:
        self.rules = rules
        self.fs = fs
        self.slots = slots
        self.fail = set(fail)
        self.order = order
        self.per_rule_ns = per_rule_ns
        self.partial = partial
        self.events: list[tuple[Any, ...]] = [] if events is None else events
        self.queue: list[int] = []
        self.problems: list[str] = []  # things a real worker would show as a failed action
        self.shut = False
        self.on_result = on_result  # returns True to stop handing out results (an interrupt)
        self.killed: list[int] = []

    def start(self, rule: Rule) -> None:
        assert not self.shut, "start() after shutdown()"
        assert len(self.queue) < self.slots, "start() with no free slot"
        assert rule.index not in self.queue, f"{rule.outputs[0]} started twice"
        self.queue.append(rule.index)
        self.events.append(("start", rule.index))

    def running(self) -> int:
        return len(self.queue)

    def has_room(self) -> bool:
        return len(self.queue) < self.slots

    def wait(self, timeout: float | None) -> list[Result]:
        if not self.queue:
            return []
        if self.order == "fifo_all":
            batch, self.queue = self.queue, []
        elif self.order == "fifo_one":
            batch = [self.queue.pop(0)]
        elif self.order == "lifo_one":
            batch = [self.queue.pop()]
        else:
            raise ValueError(self.order)
        results = []
        for k, i in enumerate(batch):
            res = self.run_one(i)
            self.events.append(("done", i, res.ok))
            results.append(res)
            if self.on_result is not None and self.on_result(res):
                self.queue[:0] = batch[k + 1 :]  # still running when the signal came
                break
        return results

    def run_one(self, i: int) -> Result:
        """What `executor.run_rule` does: delete the outputs, run, then stat + hash each output."""
        rule = self.rules[i]
        fs = self.fs
        for o in rule.outputs:
            fs.remove(o)
        fs.clock.advance(self.per_rule_ns)
        if rule.outputs[0] in self.fail:
            if self.partial:
                fs.create(rule.outputs[0], b"partial garbage of a crashed action")
            return Result(i, False, None, "", "fake failure")
        try:
            call_action(rule, fs)
        except FileNotFoundError as e:
            self.problems.append(f"{rule.outputs[0]} ran with its input {e} missing")
            return Result(i, False, None, "", f"FileNotFoundError: {e}")
        states = []
        missing = []
        for o in rule.outputs:
            recorded = fs.now_ns()
            st = fs.stat(o)
            if st is None or st[0] < 0:
                missing.append(o)
                continue
            states.append(file_record(st, digest_bytes(fs.files[o].data), recorded))
        if missing:
            return Result(i, False, None, "", "the action did not create " + ", ".join(missing))
        return Result(i, True, states, "", "")

    def shutdown(self, kill: bool) -> None:
        """With `kill`, rules still running die half-way: old outputs gone, a partial one left."""
        self.shut = True
        if kill:
            for i in self.queue:
                outs = self.rules[i].outputs
                for o in outs:
                    self.fs.remove(o)
                if self.partial:
                    self.fs.create(outs[0], b"partial output of a killed action")
                self.killed.append(i)
                self.events.append(("killed", i))
        self.queue = []


class NullReporter:
    """Says nothing; tolerant of the Reporter protocol growing arguments."""

    def begin(self, *args: Any) -> None:
        pass

    def started(self, *args: Any) -> None:
        pass

    def finished(self, *args: Any) -> None:
        pass

    def progress(self, *args: Any) -> None:
        pass

    def end(self, *args: Any) -> None:
        pass


# -- graphs from specs -----------------------------------------------------------------------------


@dataclass
class RuleSpec:
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]  # source paths and other rules' outputs, in order
    temp: bool = False
    version: int = 0  # the action's closure value: bumping it changes the action
    mode: str = "hash"  # "hash" or "const", see `produce`
    params: dict[str, Any] | None = None

    def copy(self) -> RuleSpec:
        return copy.deepcopy(self)


def parse_spec(text: str) -> list[RuleSpec]:
    """One rule a line: `OUTPUT [OUTPUT...] <- [INPUT...] [!temp] [!const] [!v=N] [!p=N] [!noise=N]`.

    Example:
        out/a <- src/a
        tmp/t <- out/a src/t !temp
        out/x out/y <- tmp/t !const
    """
    specs = []
    for line in text.strip().splitlines():
        line = line.split("//", 1)[0].strip()
        if not line:
            continue
        left, _, right = line.partition("<-")
        flags = [w for w in right.split() if w.startswith("!")]
        ins = tuple(w for w in right.split() if not w.startswith("!"))
        s = RuleSpec(tuple(left.split()), ins)
        for f in flags:
            if f == "!temp":
                s.temp = True
            elif f == "!const":
                s.mode = "const"
            elif f.startswith("!v="):
                s.version = int(f[3:])
            elif f.startswith(("!p=", "!noise=")):
                key, _, value = f[1:].partition("=")
                s.params = {**(s.params or {}), key: int(value)}
            else:
                raise ValueError(f"unknown flag {f}")
        specs.append(s)
    return specs


def format_spec(specs: Sequence[RuleSpec]) -> str:
    lines = []
    for s in specs:
        flags = []
        if s.temp:
            flags.append("!temp")
        if s.mode != "hash":
            flags.append("!" + s.mode)
        if s.version:
            flags.append(f"!v={s.version}")
        params = dict(s.params or {})
        for k in ("p", "noise"):
            if isinstance(params.get(k), int):
                flags.append(f"!{k}={params.pop(k)}")
        line = " ".join(s.outputs) + " <- " + " ".join(s.inputs + tuple(flags))
        if params:
            line += f"   // params={params}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def sources(specs: Sequence[RuleSpec]) -> list[str]:
    """Inputs that no rule produces, in first-use order."""
    produced = {o for s in specs for o in s.outputs}
    out: dict[str, None] = {}
    for s in specs:
        for p in s.inputs:
            if p not in produced:
                out[p] = None
    return list(out)


def build_graph(specs: Sequence[RuleSpec], root: str = ROOT, proven: bool = False) -> Graph:
    """Declare the specs through the real DSL into a fresh registry and build the Graph."""
    reg = dsl.fresh_registry(root)
    for s in specs:
        outputs: Any = s.outputs[0] if len(s.outputs) == 1 else list(s.outputs)
        dsl.rule(
            outputs,
            inputs=list(s.inputs),
            action=make_action(s.version, s.mode),
            params=copy.deepcopy(s.params),
            temp=s.temp,
        )
    return Graph(reg, proven=proven)
