"""Reporting: what the user sees while a build runs and when it ends.

Two faces behind one Reporter: plain lines (not a terminal, NO_COLOR set, or CI) and a rich live
display on a terminal. Both update at a fixed rate, never per rule, so the display stays off the
hot path; rich is imported only when it is used.
"""

from __future__ import annotations

import os
import sys

from .build import BuildSummary
from .executor import Result
from .graph import describe
from .rebuilder import Reason
from .rules import Rule, safe_text, shown

TYPE_CHECKING = False  # typing costs milliseconds of start-up: annotations only
if TYPE_CHECKING:
    from typing import TextIO


def fancy_output(stream: TextIO) -> bool:
    """A live, coloured display only on a terminal, and never with NO_COLOR or in CI."""
    if os.environ.get("NO_COLOR") or os.environ.get("CI"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def failure_text(rule: Rule, result: Result) -> str:
    lines = [f"FAILED {describe(rule)}"]
    if result.log.strip():
        lines.append("  output:")
        lines.append(_indent(result.log, "    "))
    if result.error:
        lines.append(_indent(result.error))
    return "\n".join(lines)


def summary_text(s: BuildSummary, rules: list[Rule], dry_run: bool) -> str:
    """The closing line of a build."""
    if dry_run:
        if not s.would_run:
            return f"nothing to do: {plural(s.wanted, 'rule')} up to date"
        return f"{plural(len(s.would_run), 'rule')} would run, {s.up_to_date} up to date"
    if s.interrupted:
        return f"interrupted: {plural(len(s.ran), 'rule')} finished and recorded, {s.blocked} not run"
    if s.failed:
        names = ", ".join(shown(rules[i].outputs[0]) for i, _ in s.failed)
        text = f"{plural(len(s.failed), 'rule')} failed ({names})"
        if s.blocked:
            text += f"; {plural(s.blocked, 'rule')} not run because of it"
        return text + f"; {len(s.ran)} built, {s.up_to_date} up to date"
    if not s.ran:
        return f"nothing to do: {plural(s.up_to_date, 'rule')} up to date ({s.seconds:.2f}s)"
    return f"built {plural(len(s.ran), 'rule')}, {s.up_to_date} up to date ({s.seconds:.2f}s)"


class PlainReporter:
    """Line-oriented, colour-free output for logs, pipes and CI."""

    def __init__(
        self,
        rules: list[Rule],
        verbosity: int = 0,
        dry_run: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.rules = rules
        self.verbosity = verbosity  # -1 quiet, 0 normal, 1 verbose
        self.dry_run = dry_run
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.total = 0

    def begin(self, total: int) -> None:
        self.total = total

    def started(self, rule: Rule, why: list[Reason]) -> None:
        if self.verbosity > 0:
            self.line(f"run {shown(rule.outputs[0])}: {', '.join(map(str, why))}")

    def finished(self, rule: Rule, result: Result, seconds: float, done: int) -> None:
        if not result.ok:
            self.failure(failure_text(rule, result))
        elif self.verbosity >= 0:
            self.line(f"[{done}/{self.total}] {shown(rule.outputs[0])}")
            if self.verbosity > 0 and result.log.strip():
                self.line(_indent(result.log))

    def progress(self, done: int, total: int, running: list[Rule]) -> None:
        pass

    def end(self, summary: BuildSummary) -> None:
        for i, why in summary.would_run:
            self.line(f"would run {shown(self.rules[i].outputs[0])}: {', '.join(map(str, why))}")
        text = summary_text(summary, self.rules, self.dry_run)
        if summary.proven is not None and self.verbosity > 0:
            checked, changed = summary.proven
            self.line(f"checked {plural(checked, 'file')} against the last build's proof: {changed} changed")
        if summary.failed or summary.interrupted:
            self.failure(text)
        elif self.verbosity >= 0:
            self.line(text)
        self.out.flush()

    # -- output primitives (overridden by the live display) -----------------------------------------

    def line(self, text: str) -> None:
        self.out.write(text + "\n")

    def failure(self, text: str) -> None:
        self.out.flush()
        self.err.write(text + "\n")
        self.err.flush()


class LiveReporter(PlainReporter):
    """On a terminal: finished rules scroll above a live `[done/total]` line naming the running rules."""

    def __init__(self, rules: list[Rule], verbosity: int = 0, dry_run: bool = False) -> None:
        super().__init__(rules, verbosity, dry_run)
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self._text = Text
        self.console = Console(stderr=False, highlight=False)
        self.err_console = Console(stderr=True, highlight=False)
        # No refresh thread: workers are forked from this process, and a thread holding a lock at
        # fork time would deadlock them. The build loop calls progress() at a fixed rate instead.
        self.live = Live(console=self.console, auto_refresh=False, transient=True)
        self.started_live = False

    def begin(self, total: int) -> None:
        super().begin(total)

    def _ensure(self) -> None:
        if not self.started_live:
            self.live.start()
            self.started_live = True

    def progress(self, done: int, total: int, running: list[Rule]) -> None:
        self._ensure()
        names = ", ".join(shown(r.outputs[0]) for r in running[:4])
        if len(running) > 4:
            names += f" and {len(running) - 4} more"
        status = self._text.assemble(
            (f"[{done}/{total}]", "bold cyan"), " ", ("running: " + names) if names else ""
        )
        self.live.update(status, refresh=True)

    def line(self, text: str) -> None:
        self.console.print(self._text(text), soft_wrap=True)

    def failure(self, text: str) -> None:
        first, _, rest = text.partition("\n")
        self.err_console.print(self._text(first, style="bold red"), soft_wrap=True)
        if rest:
            self.err_console.print(self._text(rest), soft_wrap=True)

    def end(self, summary: BuildSummary) -> None:
        if self.started_live:
            self.live.stop()
        super().end(summary)


def make_reporter(rules: list[Rule], verbosity: int, dry_run: bool) -> PlainReporter:
    if fancy_output(sys.stdout):
        return LiveReporter(rules, verbosity, dry_run)
    return PlainReporter(rules, verbosity, dry_run)


def warn(text: str) -> None:
    sys.stderr.write(f"pipe: {safe_text(text)}\n")
    sys.stderr.flush()
