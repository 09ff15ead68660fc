"""Contract §3: Ctrl-C and SIGTERM stop the workers, keep what finished and exit 130 / 143; SIGKILL of
`pipe` never makes a later build trust a partial output; two builds on the same state take turns."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import Project, process_gone, wait_until

SLOW = """
def fast(output, inputs):
    log(output)
    output.write_text("fast")


def slow(output, inputs):
    log(output)
    output.write_text("partial")
    gate("slow")
    output.write_text("slow:" + inputs[0].read_text())


rule("out/fast.txt", [], fast)
rule("out/slow.txt", ["out/fast.txt"], slow)
rule("out/after.txt", ["out/slow.txt"], cat)
"""

INTERRUPTS = [
    # (signal, sent to the whole process group as a terminal's Ctrl-C does, expected exit)
    pytest.param(signal.SIGINT, True, 130, id="ctrl-c"),
    pytest.param(signal.SIGINT, False, 130, id="sigint-to-pipe"),
    pytest.param(signal.SIGTERM, False, 143, id="sigterm"),
]


@pytest.mark.parametrize("signum,group,expected", INTERRUPTS)
def test_given_a_slow_rule_running_when_interrupted_then_pipe_stops_it_keeps_what_finished_and_exits(
    project: Project, signum, group, expected
):
    project.pipefile(SLOW)
    build = project.spawn("build", "-j1")
    worker = project.wait_started("slow", build)
    t0 = time.monotonic()
    build.signal(signum, group=group)
    r = build.wait(timeout=20)
    assert r.rc == expected, r
    assert time.monotonic() - t0 < 10
    assert process_gone(worker), "the worker running the slow rule survived the interrupt"
    assert "interrupted" in r.err.lower()
    assert not project.exists("out/after.txt")
    project.open_gate("slow")
    r = project.build("-j1")
    # out/fast.txt finished before the interrupt: recorded, not run again.
    assert r.ran == ["out/slow.txt", "out/after.txt"]
    assert project.read("out/after.txt") == "slow:fast"
    assert project.build().ran == []


def test_given_a_slow_rule_running_when_ctrl_c_is_pressed_twice_then_pipe_exits_130_and_keeps_what_finished(
    project,
):
    project.pipefile(SLOW)
    build = project.spawn("build", "-j1")
    worker = project.wait_started("slow", build)
    build.signal(signal.SIGINT, group=True)
    build.signal(signal.SIGINT, group=True)
    r = build.wait(timeout=20)
    assert r.rc == 130, r
    assert process_gone(worker)
    project.open_gate("slow")
    assert project.build("-j1").ran == ["out/slow.txt", "out/after.txt"]


def test_given_a_sh_rule_running_when_ctrl_c_then_the_command_is_stopped_too(project):
    project.pipefile(
        """
        rule("out/s.txt", [], sh("echo $$ > sh.started; exec sleep 30"))
        """
    )
    build = project.spawn("build")
    wait_until(lambda: project.exists("sh.started") and project.read("sh.started").strip(),
               what="the sh action to start")
    pid = int(project.read("sh.started"))
    build.signal(signal.SIGINT, group=True)
    r = build.wait(timeout=20)
    assert r.rc == 130, r
    gone = process_gone(pid, timeout=5)
    if not gone:
        os.kill(pid, signal.SIGKILL)
    assert gone, "the sh command kept running after pipe was interrupted"


def test_given_rules_running_in_parallel_when_interrupted_then_finished_ones_are_recorded(project):
    project.pipefile(
        """
        def quick(output, inputs):
            log(output)
            output.write_text(output.name)

        def stuck(output, inputs):
            log(output)
            gate("stuck")
            output.write_text("stuck")

        rule("out/stuck.txt", [], stuck)
        for i in range(4):
            rule(f"out/q{i}.txt", [], quick)
        """
    )
    build = project.spawn("build", "-j2", env=project.env(PYTHONUNBUFFERED="1"))
    project.wait_started("stuck", build)
    # pipe reports each rule it has finished (and recorded in memory) with a "[n/total] NAME" line.
    wait_until(lambda: all(f"out/q{i}.txt" in build.out_path.read_text() for i in range(4)),
               what="pipe to report the quick rules finished")
    build.signal(signal.SIGINT, group=True)
    assert build.wait(timeout=20).rc == 130
    project.open_gate("stuck")
    assert project.build().ran == ["out/stuck.txt"]


def test_given_a_rule_finishing_just_after_ctrl_c_then_no_other_rule_starts(project):
    project.pipefile(
        """
        def first(output, inputs):
            log(output)
            gate("first")
            output.write_text("first")

        rule("out/first.txt", [], first)
        for i in range(5):
            rule(f"out/next{i}.txt", [], cat)
        """
    )
    build = project.spawn("build", "-j1")
    project.wait_started("first", build)
    build.signal(signal.SIGINT)  # pipe only: its worker finishes the rule it runs
    project.open_gate("first")
    assert build.wait(timeout=20).rc == 130
    assert project.take_log() == ["out/first.txt"]  # a freed worker is not handed the next rule


# -- SIGKILL of pipe ---------------------------------------------------------------------------------

KILLED = """
def slow(output, inputs):
    log(output)
    text = inputs[0].read_text()
    output.write_text("half of " + text)
    if text.startswith("wait"):
        gate("slow")
    output.write_text("all of " + text)


rule("out/slow.txt", ["src/a.txt"], slow)
rule("out/after.txt", ["out/slow.txt"], cat)
"""


@pytest.mark.parametrize("revert", [False, True], ids=["input-kept", "input-reverted"])
def test_given_pipe_killed_mid_rule_when_built_again_then_the_partial_output_is_rebuilt(
    project: Project, revert
):
    project.pipefile(KILLED)
    project.write("src/a.txt", "go")
    project.build()
    project.write("src/a.txt", "wait")
    build = project.spawn("build")
    worker = project.wait_started("slow", build)
    assert project.read("out/slow.txt") == "half of wait"
    build.signal(signal.SIGKILL)
    assert build.wait(timeout=20).rc == -signal.SIGKILL
    assert process_gone(worker), "the worker outlived the killed pipe"
    assert project.read("out/slow.txt") == "half of wait"  # nothing finished it behind our back
    project.open_gate("slow")
    if revert:
        project.write("src/a.txt", "go")  # the inputs are those of the last successful run
    r = project.build()
    assert r.ran[0] == "out/slow.txt"
    text = project.read("src/a.txt")
    assert project.read("out/slow.txt") == "all of " + text
    assert project.read("out/after.txt") == "all of " + text
    assert project.build().ran == []


def test_given_pipe_killed_mid_sh_rule_when_built_again_at_once_then_the_output_is_not_corrupted(
    project,
):
    # If the killed build's shell command lived on, it would append to the next build's output
    # while that build runs the rule again — and that build would record the result as built.
    project.pipefile(
        """
        rule("out/s.txt", ["src/a.txt"], sh(
            "echo out/s.txt >> ran.log; printf half > {output}; echo > sh.started; "
            "sleep 1; cat {input} >> {output}"))
        """
    )
    project.write("src/a.txt", "-full")
    build = project.spawn("build")
    wait_until(lambda: project.exists("sh.started"), what="the sh action to start")
    build.signal(signal.SIGKILL)
    build.wait(timeout=20)
    assert project.build().ran == ["out/s.txt"]
    time.sleep(0.2)
    assert project.read("out/s.txt") == "half-full"
    assert project.build().ran == []


MANY = """
def two_steps(output, inputs):
    log(output)
    text = inputs[0].read_text()
    output.write_text(text[: len(text) // 2])
    time.sleep(0.02)
    output.write_text(text.upper())


for i in range(12):
    rule(f"out/{i}.txt", [f"src/{i}.txt"], two_steps)
    rule(f"out/{i}.2.txt", [f"out/{i}.txt"], two_steps)
"""


@pytest.mark.parametrize(
    "delays",
    [
        pytest.param([0.05, 0.2, 0.35, 0.6], id="4-moments"),
        pytest.param([0.01 * i for i in range(1, 80, 3)], id="27-moments", marks=pytest.mark.slow),
    ],
)
def test_given_pipe_killed_at_many_moments_then_each_next_build_ends_with_every_output_right(
    project, delays
):
    project.pipefile(MANY)
    for round_, delay in enumerate(delays):
        for i in range(12):
            project.write(f"src/{i}.txt", f"round {round_} file {i} " * (i + 1))
        build = project.spawn("build", "-j2")
        time.sleep(delay)
        build.signal(signal.SIGKILL)
        build.wait(timeout=20)
        project.build("-j2")
        for i in range(12):
            expected = f"round {round_} file {i} ".upper() * (i + 1)
            assert project.read(f"out/{i}.txt") == expected, (round_, i)
            assert project.read(f"out/{i}.2.txt") == expected, (round_, i)
    assert project.build().ran == []


# -- two builds at once ----------------------------------------------------------------------------------


def test_given_a_build_running_when_a_second_starts_then_it_waits_naming_the_first_and_then_proceeds(
    project,
):
    project.pipefile(
        """
        def slow(output, inputs):
            log(output)
            gate("first")
            output.write_text("slow")

        rule("out/slow.txt", [], slow)
        rule("out/other.txt", ["src/o.txt"], upper)
        rule("out/both.txt", ["out/slow.txt", "out/other.txt"], cat)
        """
    )
    project.write("src/o.txt", "o")
    first = project.spawn("build", "out/slow.txt")
    project.wait_started("first", first)
    second = project.spawn("build", "out/other.txt")
    wait_until(lambda: "waiting" in second.err_text(), what="the second build to say it waits")
    assert f"pid {first.pid}" in second.err_text()
    assert not project.exists("out/other.txt")  # it really waits
    project.open_gate("first")
    r1, r2 = first.wait(), second.wait()
    assert r1.rc == 0, r1
    assert r2.rc == 0, r2
    assert sorted(project.take_log()) == ["out/other.txt", "out/slow.txt"]
    r = project.build()
    assert r.ran == ["out/both.txt"]  # both builds' records were kept
    assert project.read("out/both.txt") == "slowO"
    assert project.build().ran == []


def test_given_a_build_running_when_a_second_wants_the_same_rules_then_it_reruns_nothing(project):
    project.pipefile(
        """
        def slow(output, inputs):
            log(output)
            gate("first")
            output.write_text("slow")

        rule("out/slow.txt", [], slow)
        rule("out/next.txt", ["out/slow.txt"], cat)
        """
    )
    first = project.spawn("build")
    project.wait_started("first", first)
    second = project.spawn("build")
    wait_until(lambda: "waiting" in second.err_text(), what="the second build to say it waits")
    project.open_gate("first")
    assert first.wait().rc == 0
    r2 = second.wait()
    assert r2.rc == 0, r2
    assert project.take_log() == ["out/slow.txt", "out/next.txt"]  # each ran once, by the first
    assert "nothing to do" in r2.out.lower()


def test_given_a_second_build_waiting_for_the_lock_when_ctrl_c_then_it_exits_130_and_the_first_is_unharmed(
    project,
):
    project.pipefile(
        """
        def slow(output, inputs):
            log(output)
            gate("first")
            output.write_text("slow")

        rule("out/slow.txt", [], slow)
        """
    )
    first = project.spawn("build")
    project.wait_started("first", first)
    second = project.spawn("build")
    wait_until(lambda: "waiting" in second.err_text(), what="the second build to say it waits")
    second.signal(signal.SIGINT, group=True)
    assert second.wait(timeout=20).rc == 130
    project.open_gate("first")
    assert first.wait().rc == 0
    assert project.take_log() == ["out/slow.txt"]
    assert project.build().ran == []


def test_given_a_build_running_when_a_dry_run_starts_then_it_answers_at_once_and_harms_nothing(
    project,
):
    project.pipefile(
        """
        def slow(output, inputs):
            log(output)
            gate("first")
            output.write_text("slow")

        rule("out/slow.txt", [], slow)
        rule("out/other.txt", ["src/o.txt"], upper)
        """
    )
    project.write("src/o.txt", "o")
    first = project.spawn("build", "out/slow.txt")
    project.wait_started("first", first)
    project.write("src/o.txt", "changed")
    r = project.build("-n")  # (clears ran.log: the first build's line is gone from it)
    assert "would run out/other.txt" in r.out
    project.open_gate("first")
    assert first.wait().rc == 0
    assert project.read("out/slow.txt") == "slow"
    assert project.build().ran == ["out/other.txt"]
    assert project.build().ran == []


def test_given_a_slow_pipefile_when_ctrl_c_while_it_loads_then_exit_130_without_a_traceback(project):
    project.pipefile(
        """
        gate("load")
        rule("out/a.txt", [], cat)
        """
    )
    build = project.spawn("build")
    project.wait_started("load", build)
    build.signal(signal.SIGINT, group=True)
    r = build.wait(timeout=20)
    assert r.rc == 130, r
    assert "Traceback" not in r.err
    assert not project.exists("out")
