"""The fork executor on its own, with real worker processes: which rule goes to which worker, and
what happens to a rule queued behind one whose worker dies."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from buildpipe import executor as ex
from buildpipe.executor import NOT_STARTED, ForkExecutor, Result
from buildpipe.rules import Rule


def write(output: Path, inputs: list[Path]) -> None:
    if output.name == "die.txt":
        os.kill(os.getpid(), signal.SIGKILL)
    if output.name == "fail.txt":
        raise RuntimeError("fails")
    if output.name.startswith("slow"):
        time.sleep(0.02)
    output.write_text(output.name)


def rules_named(names: list[str]) -> list[Rule]:
    rules = []
    for k, name in enumerate(names):
        r = Rule((f"out/{name}",), (), write, None, False, ("Pipefile.py", k + 1), None, None)
        r.index = k
        rules.append(r)
    return rules


def run_all(executor: ForkExecutor, rules: list[Rule]) -> tuple[dict[str, Result], int]:
    """Start every rule as soon as the executor has room, as the build loop does; return the
    results by output name and the most rules any one worker held at once."""
    todo = list(rules)
    results: dict[str, Result] = {}
    deepest = 0
    deadline = time.monotonic() + 60
    try:
        while len(results) < len(rules):
            assert time.monotonic() < deadline, f"no result for {len(rules) - len(results)} rules"
            while todo and executor.has_room():
                executor.start(todo.pop(0))
                deepest = max(deepest, *(len(w.sent) for w in executor.workers))
            for res in executor.wait(1):
                results[os.path.basename(rules[res.rule].outputs[0])] = res
    finally:
        executor.shutdown(kill=True)
    return results, deepest


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: Any) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    return tmp_path


def test_a_rule_queued_behind_a_dying_one_is_run_by_another_worker(workdir: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(ex, "BRIEF", 60.0)  # every run counts as brief: queueing is certain
    names = [f"r{k}.txt" for k in range(12)] + ["die.txt"] + [f"s{k}.txt" for k in range(6)]
    rules = rules_named(names)
    results, deepest = run_all(ForkExecutor(rules, slots=1, stop_on_failure=False), rules)
    assert deepest == 2  # the streak of brief runs let a second rule wait behind the first
    assert not results["die.txt"].ok and "SIGKILL" in results["die.txt"].error
    assert all(results[n].ok for n in names if n != "die.txt"), results
    assert sorted(p.name for p in (workdir / "out").iterdir()) == sorted(n for n in names if n != "die.txt")


def test_a_rule_queued_behind_a_failure_comes_back_unstarted(workdir: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(ex, "BRIEF", 60.0)
    names = [f"r{k}.txt" for k in range(12)] + ["fail.txt", "after.txt"]
    rules = rules_named(names)
    results, deepest = run_all(ForkExecutor(rules, slots=1, stop_on_failure=True), rules)
    assert deepest == 2
    assert not results["fail.txt"].ok and "fails" in results["fail.txt"].error
    assert results["after.txt"].error == NOT_STARTED
    assert not (workdir / "out" / "after.txt").exists()


def test_nothing_waits_behind_an_action_that_is_not_brief(workdir: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(ex, "BRIEF", 0.01)
    rules = rules_named([f"slow{k}.txt" for k in range(12)])
    results, deepest = run_all(ForkExecutor(rules, slots=1), rules)
    assert deepest == 1  # each run took 20 ms: one rule at a time
    assert all(res.ok for res in results.values()) and len(results) == 12


def test_a_dead_worker_found_by_its_pid_has_its_last_answers_read_first(
    workdir: Path, monkeypatch: Any
) -> None:
    """A worker that answered for one rule and died running the next, seen dead by waitpid (its
    pipe can stay open through a process it started): the first rule is a success."""
    monkeypatch.setattr(ex, "BRIEF", 60.0)
    names = [f"r{k}.txt" for k in range(12)] + ["a.txt", "die.txt"]
    rules = rules_named(names)
    executor = ForkExecutor(rules, slots=1, stop_on_failure=False)
    try:
        results, _ = run_all_but(executor, rules, last=2)
        executor.start(rules[-2])
        assert executor.has_room()  # brief: the next may wait behind it
        executor.start(rules[-1])
        time.sleep(1)  # a.txt answered, die.txt killed the worker
        real_select = executor.selector.select
        monkeypatch.setattr(executor.selector, "select", lambda timeout: [])  # as if it timed out
        got = {os.path.basename(rules[res.rule].outputs[0]): res for res in executor.wait(0)}
        monkeypatch.setattr(executor.selector, "select", real_select)
    finally:
        executor.shutdown(kill=True)
    assert got["a.txt"].ok, got
    assert not got["die.txt"].ok and "SIGKILL" in got["die.txt"].error
    assert executor.running() == 0


def run_all_but(executor: ForkExecutor, rules: list[Rule], last: int) -> tuple[dict[str, Result], int]:
    """run_all for all rules but the `last` ones, leaving the executor running."""
    shutdown = executor.shutdown
    executor.shutdown = lambda kill: None  # type: ignore[method-assign]
    try:
        return run_all(executor, rules[:-last])
    finally:
        executor.shutdown = shutdown  # type: ignore[method-assign]


def _wraps(f: Any) -> Any:
    import functools

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        return f(*args, **kwargs)

    return wrapper


def _plain(output, inputs): ...
def _named(output, inputs, params): ...
def _keyword(output, inputs, *, params=None): ...
def _posonly(output, inputs, params, /): ...
def _star(output, *params): ...
def _kwargs(output, inputs, **params): ...
def _local(output, inputs):
    params = 1
    return params
def _other_kwargs(output, inputs, **kw): ...
class _Callable:
    def __call__(self, output, inputs, params): ...
    def method(self, output, inputs, params=None): ...


@pytest.mark.parametrize("action", [
    _plain, _named, _keyword, _posonly, _star, _kwargs, _local, _other_kwargs, lambda o, i, params: 0,
    _wraps(_named), _wraps(_plain), _Callable(), _Callable().method, __import__("functools").partial(_named),
])
def test_whether_an_action_takes_params_is_what_its_signature_says(action: Any) -> None:
    """Plain functions are read from their code (inspect's import costs a lone rule 10-20 ms)."""
    import inspect

    assert ex._takes_params(action) == ("params" in inspect.signature(action).parameters)
