"""Contract §3: a failed rule — exception, non-zero sh exit, worker death, missing output — fails only
itself; its consumers do not run; -k builds everything else; the report says where and why."""

from __future__ import annotations

import pytest
from conftest import Project, assert_no_internal_traceback

FAILING = """
def explode(text):
    raise ValueError(f"cannot handle {text.strip()!r}")


def boom(output, inputs):
    log(output)
    print("stdout of the failing action")
    print("stderr of the failing action", file=sys.stderr)
    output.write_text("partial")
    explode(inputs[0].read_text())  # the failing call


rule("out/bad.txt", ["src/a.txt"], boom)
rule("out/after_bad.txt", ["out/bad.txt"], cat)
rule("out/good1.txt", ["src/a.txt"], upper)
rule("out/good2.txt", ["src/a.txt"], cat)
rule("out/after_good.txt", ["out/good1.txt"], cat)
"""


@pytest.fixture
def failing(project: Project) -> Project:
    project.pipefile(FAILING)
    project.write("src/a.txt", "abc\n")
    return project


def test_given_a_raising_action_when_built_then_exit_1_and_the_report_shows_rule_place_output_traceback(
    failing,
):
    r = failing.build("-j1", rc=1)
    decl = failing.line_of('rule("out/bad.txt"')
    raise_line = failing.line_of("raise ValueError")
    call_line = failing.line_of("# the failing call")
    assert "out/bad.txt" in r.err
    assert f"Pipefile.py:{decl}" in r.err
    assert "stdout of the failing action" in r.err
    assert "stderr of the failing action" in r.err
    assert "Traceback" in r.err
    assert "ValueError: cannot handle 'abc'" in r.err
    assert f"line {call_line}, in boom" in r.err
    assert f"line {raise_line}, in explode" in r.err
    assert_no_internal_traceback(r.err, failing.root)
    assert "\x1b" not in r.text


def test_given_a_failure_without_k_when_built_with_j1_then_no_rule_starts_after_it(failing):
    r = failing.build("-j1", rc=1)
    assert r.ran == ["out/bad.txt"]  # declared first: it runs first; nothing else starts
    assert not failing.exists("out/good1.txt")
    assert not failing.exists("out/after_bad.txt")


def test_given_a_failure_with_k_when_built_then_everything_independent_is_built(failing):
    r = failing.build("-k", "-j1", rc=1)
    assert sorted(r.ran) == ["out/after_good.txt", "out/bad.txt", "out/good1.txt", "out/good2.txt"]
    assert failing.read("out/after_good.txt") == "ABC\n"
    assert not failing.exists("out/after_bad.txt")


@pytest.mark.parametrize("flag", ["-k", "--keep-going"])
def test_given_a_failure_with_keep_going_in_parallel_then_everything_independent_is_built(
    failing, flag
):
    r = failing.build(flag, "-j4", rc=1)
    assert sorted(r.ran) == ["out/after_good.txt", "out/bad.txt", "out/good1.txt", "out/good2.txt"]


def test_given_a_failed_rule_when_built_again_then_it_runs_again_and_its_partial_output_is_not_trusted(
    failing,
):
    failing.build("-k", rc=1)
    assert failing.read("out/bad.txt") == "partial"
    r = failing.build("-k", rc=1)
    assert r.ran == ["out/bad.txt"]  # the others were recorded by the -k build


def test_given_a_failed_rule_when_fixed_then_it_and_its_consumers_run_and_nothing_else(failing):
    failing.build("-k", rc=1)
    text = failing.read("Pipefile.py")
    failing.write("Pipefile.py", text.replace("    explode(inputs[0].read_text())", "    pass"))
    r = failing.build("-j1")
    assert r.ran == ["out/bad.txt", "out/after_bad.txt"]
    assert failing.read("out/after_bad.txt") == "partial"
    assert failing.build().ran == []


def test_given_a_rule_that_built_then_failed_when_its_input_is_reverted_then_it_runs_again(project):
    project.pipefile(
        """
        def picky(output, inputs):
            log(output)
            text = inputs[0].read_text()
            output.write_text("half-")
            if "bad" in text:
                raise RuntimeError("bad input")
            output.write_text(text.upper())

        rule("out/p.txt", ["src/a.txt"], picky)
        rule("out/q.txt", ["out/p.txt"], cat)
        """
    )
    project.write("src/a.txt", "good\n")
    project.build()
    project.write("src/a.txt", "bad\n")
    assert project.build(rc=1).ran == ["out/p.txt"]
    project.write("src/a.txt", "good\n")
    r = project.build()
    assert r.ran == ["out/p.txt"]  # its output is the failed run's, not what was recorded
    assert project.read("out/p.txt") == "GOOD\n"
    assert project.read("out/q.txt") == "GOOD\n"
    assert project.build().ran == []


def test_given_a_failure_without_k_in_parallel_then_the_rule_already_running_finishes_and_is_kept(
    project,
):
    project.pipefile(
        """
        def slow_ok(output, inputs):
            log(output)
            for _ in range(2000):  # finish only after the other rule has failed
                if Path("failed.marker").exists():
                    break
                time.sleep(0.01)
            time.sleep(0.2)
            output.write_text("ok")

        def fails(output, inputs):
            log(output)
            Path("failed.marker").write_text("")
            raise RuntimeError("no")

        rule("out/slow_ok.txt", [], slow_ok)
        rule("out/fails.txt", [], fails)
        rule("out/later.txt", ["src/a.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    r = project.build("-j2", rc=1)
    assert sorted(r.ran) == ["out/fails.txt", "out/slow_ok.txt"]  # out/later.txt never started
    assert project.read("out/slow_ok.txt") == "ok"
    project.remove("failed.marker")
    r = project.build("-k", rc=1)
    assert sorted(r.ran) == ["out/fails.txt", "out/later.txt"]  # out/slow_ok.txt was recorded


def test_given_a_failing_action_whose_child_processes_print_then_their_output_is_in_the_report(
    project,
):
    project.pipefile(
        """
        import subprocess

        def noisy(output, inputs):
            subprocess.run(["echo", "printed by a child process"])
            os.write(2, b"written to fd 2 directly\\n")
            raise RuntimeError("then failed")

        rule("out/n.txt", [], noisy)
        """
    )
    r = project.build(rc=1)
    assert "printed by a child process" in r.err
    assert "written to fd 2 directly" in r.err
    assert "then failed" in r.err


# -- sh actions ---------------------------------------------------------------------------------------


def test_given_a_sh_command_exiting_non_zero_when_built_then_the_rule_fails_with_its_output_shown(
    project,
):
    project.pipefile(
        """
        rule("out/s.txt", ["src/a.txt"],
             sh("echo out/s.txt >> ran.log; echo to-stdout; echo to-stderr >&2; exit 3"))
        rule("out/t.txt", ["out/s.txt"], cat)
        rule("out/u.txt", ["src/a.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    r = project.build("-k", rc=1)
    assert sorted(r.ran) == ["out/s.txt", "out/u.txt"]
    assert "out/s.txt" in r.err
    assert project.where('rule("out/s.txt"') in r.err
    assert "to-stdout" in r.err and "to-stderr" in r.err
    assert "3" in r.err
    assert_no_internal_traceback(r.err, project.root)
    assert not project.exists("out/t.txt")
    assert project.build("-k", rc=1).ran == ["out/s.txt"]


def test_given_a_sh_command_that_fails_midway_when_built_then_its_partial_output_is_not_recorded(
    project,
):
    project.pipefile(
        """
        rule("out/s.txt", ["src/a.txt"],
             sh("echo out/s.txt >> ran.log; cat {input} > {output}; test -e ok.flag"))
        """
    )
    project.write("src/a.txt", "a")
    project.build(rc=1)
    assert project.read("out/s.txt") == "a"
    project.write("ok.flag", "")
    assert project.build().ran == ["out/s.txt"]
    assert project.build().ran == []


# -- worker death ---------------------------------------------------------------------------------------

DEATHS = {
    "os._exit": ("os._exit(7)", "7"),
    "SIGKILL": ("os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
    "SIGSEGV": ("import ctypes; ctypes.string_at(0)", "SIGSEGV"),
    "SIGABRT": ("os.abort()", "SIGABRT"),
}


@pytest.mark.parametrize("how", list(DEATHS))
def test_given_an_action_whose_worker_dies_when_built_with_k_then_only_that_rule_fails(project, how):
    code, mentioned = DEATHS[how]
    project.pipefile(
        f"""
        import signal

        def die(output, inputs):
            log(output)
            output.write_text("partial")
            {code}

        rule("out/die.txt", ["src/a.txt"], die)
        rule("out/after_die.txt", ["out/die.txt"], cat)
        rule("out/ok1.txt", ["src/a.txt"], cat)
        rule("out/ok2.txt", ["out/ok1.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    r = project.build("-k", "-j1", rc=1)
    assert r.ran[0] == "out/die.txt"
    assert sorted(r.ran) == ["out/die.txt", "out/ok1.txt", "out/ok2.txt"]
    assert "out/die.txt" in r.err
    assert project.where('rule("out/die.txt"') in r.err
    assert mentioned in r.err
    assert_no_internal_traceback(r.err, project.root)
    assert not project.exists("out/after_die.txt")
    assert project.build("-k", rc=1).ran == ["out/die.txt"]  # not recorded: runs (and dies) again


@pytest.mark.parametrize("how", ["os._exit", "SIGKILL"])
def test_given_a_worker_death_without_k_when_built_then_no_other_rule_starts(project, how):
    code, _ = DEATHS[how]
    project.pipefile(
        f"""
        import signal

        def die(output, inputs):
            log(output)
            {code}

        rule("out/die.txt", [], die)
        rule("out/ok.txt", ["src/a.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    assert project.build("-j1", rc=1).ran == ["out/die.txt"]


def test_given_an_action_calling_sys_exit_when_built_then_the_rule_fails_and_pipe_carries_on_with_k(
    project,
):
    project.pipefile(
        """
        def quits(output, inputs):
            log(output)
            sys.exit(0)

        rule("out/q.txt", [], quits)
        rule("out/ok.txt", ["src/a.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    r = project.build("-k", "-j1", rc=1)
    assert r.ran == ["out/q.txt", "out/ok.txt"]
    assert "out/q.txt" in r.err


# -- outputs the action forgot ----------------------------------------------------------------------------


def test_given_an_action_that_forgets_one_of_its_outputs_when_built_then_the_rule_fails_naming_it(
    project,
):
    project.pipefile(
        """
        def half(outputs, inputs):
            log(outputs[0])
            outputs[0].write_text("x")

        rule(["out/x.txt", "out/y.txt"], ["src/a.txt"], half)
        rule("out/after.txt", ["out/x.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    r = project.build(rc=1)
    assert r.ran == ["out/x.txt"]
    assert "out/y.txt" in r.err
    assert project.where('rule([') in r.err
    assert not project.exists("out/after.txt")
    assert project.build(rc=1).ran == ["out/x.txt"]


def test_given_an_action_that_writes_nothing_when_built_then_it_fails_and_runs_again_next_time(
    project,
):
    project.pipefile(
        """
        def lazy(output, inputs):
            log(output)

        rule("out/lazy.txt", [], lazy)
        """
    )
    r = project.build(rc=1)
    assert "out/lazy.txt" in r.err
    assert project.build(rc=1).ran == ["out/lazy.txt"]


def test_given_a_sh_command_that_forgets_its_output_when_built_then_the_rule_fails(project):
    project.pipefile('rule("out/s.txt", [], sh("echo out/s.txt >> ran.log; true"))\n')
    r = project.build(rc=1)
    assert "out/s.txt" in r.err
    assert project.build(rc=1).ran == ["out/s.txt"]


def test_given_two_failures_with_k_when_built_then_both_are_reported(project):
    project.pipefile(
        """
        def fail_a(output, inputs):
            raise RuntimeError("first problem")

        def fail_b(output, inputs):
            raise KeyError("second problem")

        rule("out/a.txt", [], fail_a)
        rule("out/b.txt", [], fail_b)
        rule("out/c.txt", ["src/c.txt"], cat)
        """
    )
    project.write("src/c.txt", "c")
    r = project.build("-k", rc=1)
    assert "first problem" in r.err and "second problem" in r.err
    assert "out/a.txt" in r.err and "out/b.txt" in r.err
    assert r.ran == ["out/c.txt"]
