"""Helpers for the end-to-end tests: a project directory on the real filesystem driven through the
real `pipe` command (a subprocess), and a way to know exactly which rules ran.

Every Pipefile written with `Project.pipefile()` starts with HEADER, whose `log(name)` appends a line
to `ran.log`; the test actions call it, and `Run.ran` lists those lines for one `pipe` invocation.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import buildpipe

PACKAGE_DIR = os.path.dirname(os.path.abspath(buildpipe.__file__))
PIPE = [sys.executable, "-m", "buildpipe"]
ANSI = re.compile(r"\x1b[\[\]()]")
TIMEOUT = 60  # seconds any single `pipe` invocation may take before the test fails

HEADER = '''\
import os
import sys
import time
from pathlib import Path

from buildpipe import alias, default, invariant, rule, sh


def log(name):
    with open("ran.log", "a") as f:
        f.write(f"{name}\\n")


def cat(output, inputs):
    log(output)
    output.write_bytes(b"".join(p.read_bytes() for p in inputs))


def upper(output, inputs):
    log(output)
    output.write_text(inputs[0].read_text().upper())


def gate(name):
    """Tell the test this action started (pid in NAME.started), then wait for NAME.go."""
    Path(f"{name}.started").write_text(str(os.getpid()))
    for _ in range(3000):
        if Path(f"{name}.go").exists():
            return
        time.sleep(0.01)
'''


@dataclass
class Run:
    """One finished `pipe` invocation."""

    args: tuple[str, ...]
    rc: int
    out: str
    err: str
    ran: list[str]  # the lines the actions logged, in the order they were written

    @property
    def text(self) -> str:
        return self.out + self.err

    def __str__(self) -> str:
        return (
            f"pipe {' '.join(self.args)} -> exit {self.rc}\n--- stdout ---\n{self.out}"
            f"--- stderr ---\n{self.err}--- ran ---\n{self.ran}"
        )


class Spawned:
    """A `pipe` running in the background, in its own session (so a signal can go to its group)."""

    def __init__(self, project: Project, args: tuple[str, ...], env: dict[str, str]) -> None:
        self.project = project
        self.args = args
        n = len(project.spawned)
        self.out_path = project.scratch / f"spawn{n}.out"
        self.err_path = project.scratch / f"spawn{n}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*PIPE, *args],
                cwd=project.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.pid = self.proc.pid

    def signal(self, signum: int, group: bool = False) -> None:
        if group:
            os.killpg(self.pid, signum)
        else:
            os.kill(self.pid, signum)

    def err_text(self) -> str:
        return self.err_path.read_text()

    def wait(self, timeout: float = TIMEOUT) -> Run:
        rc = self.proc.wait(timeout)
        return Run(self.args, rc, self.out_path.read_text(), self.err_path.read_text(), [])


class Project:
    """A project directory `root`, and `scratch`, a directory outside it for the tests' own files."""

    def __init__(self, root: Path, scratch: Path) -> None:
        self.root = root
        self.scratch = scratch
        self.spawned: list[Spawned] = []
        self.gates: set[str] = set()

    # -- files ------------------------------------------------------------------------------------

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write(self, rel: str, text: str | bytes) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)
        return p

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink()

    def mtime_ns(self, rel: str) -> int:
        return (self.root / rel).stat().st_mtime_ns

    def pipefile(self, body: str, name: str = "Pipefile.py", header: bool = True) -> Path:
        """Write a Pipefile: HEADER (the log/cat/upper/gate helpers) followed by `body`."""
        text = textwrap.dedent(body).lstrip("\n")
        return self.write(name, (HEADER + "\n\n" + text) if header else text)

    def line_of(self, needle: str, name: str = "Pipefile.py") -> int:
        """The line number of the one line of the Pipefile containing `needle`."""
        lines = [n for n, line in enumerate(self.read(name).splitlines(), 1) if needle in line]
        assert len(lines) == 1, f"{needle!r} is on lines {lines} of {name}"
        return lines[0]

    def where(self, needle: str, name: str = "Pipefile.py") -> str:
        """How messages cite the declaration on the line containing `needle`: `Pipefile.py:N`."""
        return f"{name}:{self.line_of(needle, name)}"

    def snapshot(self, *dirs: str) -> dict[str, bytes]:
        """Every file under `dirs` (default: out and tmp), by path relative to the root."""
        found = {}
        for d in dirs or ("out", "tmp"):
            base = self.root / d
            if base.is_dir():
                for p in sorted(base.rglob("*")):
                    if p.is_file():
                        found[str(p.relative_to(self.root))] = p.read_bytes()
        return found

    def stats(self, *dirs: str) -> dict[str, tuple[int, int]]:
        """(mtime_ns, inode) of every file under `dirs`: proof that nothing was rewritten."""
        found = {}
        for rel in self.snapshot(*dirs):
            st = (self.root / rel).stat()
            found[rel] = (st.st_mtime_ns, st.st_ino)
        return found

    # -- running pipe -----------------------------------------------------------------------------

    def env(self, **extra: str | None) -> dict[str, str]:
        """The environment for `pipe`: plain output (NO_COLOR), plus `extra` (None removes)."""
        env = {k: v for k, v in os.environ.items() if k not in ("CI", "FORCE_COLOR", "NO_COLOR")}
        env["NO_COLOR"] = "1"
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def take_log(self, directory: Path | None = None) -> list[str]:
        log = (directory or self.root) / "ran.log"
        try:
            lines = log.read_text().splitlines()
        except FileNotFoundError:
            return []
        log.unlink()
        return lines

    def run(
        self,
        *args: str,
        rc: int | None = 0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Run:
        """Run `pipe ARGS` in the project (or `cwd`); check the exit status unless rc is None."""
        self.take_log()
        proc = subprocess.run(
            [*PIPE, *args],
            cwd=cwd or self.root,
            env=env or self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        result = Run(args, proc.returncode, proc.stdout, proc.stderr, self.take_log())
        if rc is not None:
            assert result.rc == rc, f"expected exit {rc}\n{result}"
        return result

    def build(self, *args: str, rc: int | None = 0) -> Run:
        return self.run("build", *args, rc=rc)

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> Spawned:
        s = Spawned(self, args, env or self.env())
        self.spawned.append(s)
        return s

    # -- waiting ----------------------------------------------------------------------------------

    def wait_started(self, name: str, spawned: Spawned | None = None, timeout: float = 20) -> int:
        """Wait until the action called gate(name) has started; returns its pid."""
        self.gates.add(name)
        marker = self.root / f"{name}.started"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker.exists():
                text = marker.read_text().strip()
                if text:
                    return int(text)
            if spawned is not None and spawned.proc.poll() is not None:
                raise AssertionError(f"pipe exited before {name} started\n{spawned.wait()}")
            time.sleep(0.01)
        raise AssertionError(f"the action gated on {name!r} did not start within {timeout}s")

    def open_gate(self, name: str) -> None:
        self.write(f"{name}.go", "")


def process_gone(pid: int, timeout: float = 5) -> bool:
    """Whether process `pid` is gone (or a zombie) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                return True
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def wait_until(predicate, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def assert_no_internal_traceback(text: str, root: Path) -> None:
    """Nothing of buildpipe's own code shows: no path into the package, only the user's frames."""
    assert PACKAGE_DIR not in text, text
    assert not re.search(r"(?<![.\w])buildpipe/", text), text
    for m in re.finditer(r'File "([^"]+)"', text):
        assert m.group(1).startswith(str(root)), f"a frame outside the project in:\n{text}"


# Two leaves and a consumer of both; upper() logs its output and writes the upper-cased input.
CHAIN = """
rule("out/a.txt", ["src/a.txt"], upper)
rule("out/b.txt", ["src/b.txt"], upper)
rule("out/ab.txt", ["out/a.txt", "out/b.txt"], cat)
"""


@pytest.fixture
def chain(project: Project) -> Project:
    project.pipefile(CHAIN)
    project.write("src/a.txt", "hello\n")
    project.write("src/b.txt", "world\n")
    return project


@pytest.fixture
def built(chain: Project) -> Project:
    chain.build()
    return chain


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow",
        action="store_true",
        default=False,
        help="also run the long sweeps (tests marked slow; sets BUILDPIPE_SLOW=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--slow"):
        os.environ.setdefault("BUILDPIPE_SLOW", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="a long sweep: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def project(tmp_path: Path):
    root = tmp_path / "proj"
    scratch = tmp_path / "scratch"
    root.mkdir()
    scratch.mkdir()
    p = Project(root, scratch)
    yield p
    for name in p.gates:  # release any action still waiting, whatever happened
        try:
            p.open_gate(name)
        except OSError:
            pass
    for s in p.spawned:
        if s.proc.poll() is None:
            try:
                os.killpg(s.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            s.proc.wait(10)
