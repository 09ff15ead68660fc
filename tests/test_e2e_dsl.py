"""Contract §1 and §3 through real builds: the forms of rule(), what an action receives, sh() quoting,
invariants, parallel workers, and where the state lives (§5)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildpipe.dsl import _all_normal, _is_normal
from buildpipe.errors import PipefileError


def test_given_the_decorator_form_then_the_name_is_the_rule_and_stands_as_an_input(project):
    project.pipefile(
        """
        @rule("out/w.txt", ["src/a.txt"], params={"width": 3})
        def wrap(output, inputs, params):
            log(output)
            output.write_text(inputs[0].read_text()[: params["width"]])

        rule("out/c.txt", [wrap], cat)
        """
    )
    project.write("src/a.txt", "abcdef")
    assert project.build().ran == ["out/w.txt", "out/c.txt"]
    assert project.read("out/c.txt") == "abc"


def test_given_a_rule_with_several_outputs_as_an_input_then_it_means_all_of_them(project):
    project.pipefile(
        """
        def split(outputs, inputs):
            log(outputs[0])
            text = inputs[0].read_text()
            outputs[0].write_text(text[:2])
            outputs[1].write_text(text[2:])

        parts = rule(["out/x.txt", "out/y.txt"], ["src/a.txt"], split)

        def show(output, inputs):
            log(output)
            output.write_text(" ".join(f"{p}={p.read_text()}" for p in inputs))

        rule("out/show.txt", [parts, "src/a.txt"], show)
        """
    )
    project.write("src/a.txt", "abcd")
    assert project.build().ran == ["out/x.txt", "out/show.txt"]
    assert project.read("out/show.txt") == "out/x.txt=ab out/y.txt=cd src/a.txt=abcd"
    project.remove("out/y.txt")
    assert project.build().ran == ["out/x.txt"]  # one output missing: its rule runs, same bytes
    assert project.read("out/y.txt") == "cd"


def test_given_dict_outputs_then_the_action_receives_a_dict_of_paths(project):
    project.pipefile(
        """
        def halves(output, inputs):
            log(sorted(output))
            output["head"].write_text("H")
            output["tail"].write_text("T")

        rule({"head": "out/h.txt", "tail": "out/t.txt"}, [], halves)
        """
    )
    assert project.build().ran == ["['head', 'tail']"]
    assert project.read("out/h.txt") == "H" and project.read("out/t.txt") == "T"


def test_given_an_action_then_it_runs_in_the_pipefiles_directory_with_relative_paths(project):
    project.pipefile(
        """
        def where(output, inputs):
            log(output)
            output.write_text(f"{os.getcwd()}|{output}|{inputs[0]}|{type(output).__name__}")

        rule("out/w.txt", ["src/a.txt"], where)
        """,
        name="sub/Pipefile.py",
    )
    project.write("sub/src/a.txt", "a")
    project.run("-C", "sub", "build")
    cwd, out, inp, kind = project.read("sub/out/w.txt").split("|")
    assert cwd == str(project.root / "sub")
    assert (out, inp) == ("out/w.txt", "src/a.txt")
    assert kind.endswith("Path")


def test_given_sh_with_awkward_file_names_then_every_substitution_is_quoted(project):
    odd_in = "src/it's a \"file\" $HOME;`x` -n.txt"
    odd_out = "out/we ird & $(echo no).txt"
    project.pipefile(
        f"""
        rule([{odd_out!r}, "out/second.txt"], [{odd_in!r}, "src/-dash.txt"],
             sh("cat {{input}} > {{output}}; cat {{inputs}} > out/second.txt; "
                "printf '%s|' {{outputs}} {{params[label]}} >> {{output}}"),
             params={{"label": "a b;'c'"}})
        """
    )
    project.write(odd_in, "one\n")
    project.write("src/-dash.txt", "two\n")
    project.build()
    assert project.read(odd_out) == f"one\n{odd_out}|out/second.txt|a b;'c'|"
    assert project.read("out/second.txt") == "one\ntwo\n"
    assert not project.exists("no")
    assert project.build().ran == []


def test_given_sh_with_file_names_starting_with_a_dash_then_they_are_not_taken_for_options(project):
    project.pipefile(
        'rule("-o.txt", ["-n.txt", "-E.txt"], sh("cat {inputs} > {output}; cat {input} >> {output}"))\n'
    )
    project.write("-n.txt", "n\n")
    project.write("-E.txt", "e\n")
    project.build()
    assert project.read("-o.txt") == "n\ne\nn\n"


def test_given_sh_then_the_command_reads_nothing_and_dies_quietly_of_a_closed_pipe(project):
    """A shell command gets /dev/null for input (it never waits on the terminal) and SIGPIPE as
    shells expect it (`yes | head` ends at once, without "Broken pipe" complaints)."""
    project.pipefile(
        """
        rule("out/in.txt", [], sh("cat > {output}"))
        rule("out/pipe.txt", [], sh("yes | head -n 2 > {output}"))
        """
    )
    r = project.build()
    assert project.read("out/in.txt") == ""
    assert project.read("out/pipe.txt") == "y\ny\n"
    assert "pipe" not in r.err.lower().replace("out/pipe.txt", "")


def test_given_sh_then_the_command_gets_no_descriptor_pipe_was_started_with(project):
    """A descriptor `pipe` inherited (a shell's `9>file`) is not passed on to shell commands."""
    import subprocess

    from conftest import PIPE

    project.pipefile('rule("out/fds.txt", [], sh("ls /proc/$$/fd > {output}"))\n')
    with open(project.root / "held.txt", "w") as held:
        os.dup2(held.fileno(), 45)  # inheritable
        try:
            subprocess.run(
                [*PIPE, "build"], cwd=project.root, env=project.env(), stdin=subprocess.DEVNULL,
                capture_output=True, check=True, timeout=60, pass_fds=(45,),
            )
        finally:
            os.close(45)
    fds = [int(n) for n in project.read("out/fds.txt").split()]
    assert 45 not in fds and {0, 1, 2} <= set(fds), fds


def test_given_an_explicit_invariant_then_it_is_tracked_like_a_source(project):
    project.pipefile(
        """
        config = invariant("config.toml")

        def configured(output, inputs):
            log(output)
            output.write_text(inputs[0].read_text().strip() + "!")

        rule("out/c.txt", [config], configured)
        """
    )
    project.write("config.toml", "x = 1\n")
    assert project.build().ran == ["out/c.txt"]
    assert project.build().ran == []
    project.write("config.toml", "x = 2\n")
    assert project.build().ran == ["out/c.txt"]
    assert project.read("out/c.txt") == "x = 2!"


def test_given_sources_given_as_paths_then_they_are_the_same_files(project):
    project.pipefile(
        """
        rule(Path("out") / "a.txt", [Path("src/a.txt")], upper)
        rule("out/b.txt", ["./out/a.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    assert project.build().ran == ["out/a.txt", "out/b.txt"]
    assert project.read("out/b.txt") == "A"


def test_given_an_alias_naming_a_rule_declared_by_an_unnormal_path_then_it_builds_that_rule(project):
    """Paths of the common rule() form are normalised once the Pipefile has run; an alias taking the
    Rule itself before that names the same rule."""
    project.pipefile(
        """
        r = rule("./out//a.txt", ["src//a.txt"], upper)
        alias("both", [r, rule("out/b.txt", [r], cat)])
        rule("out/c.txt", [Path("out/b.txt")], cat)
        """
    )
    project.write("src/a.txt", "a")
    assert project.build("both").ran == ["out/a.txt", "out/b.txt"]
    assert project.build("out/c.txt").ran == ["out/c.txt"]
    assert project.read("out/c.txt") == "A"


def test_given_other_forms_taking_a_rule_declared_by_an_unnormal_path_then_they_depend_on_it(project):
    """The decorator form and a tuple of inputs copy the Rule's outputs at once: normalised first."""
    project.pipefile(
        """
        a = rule("./gen//a.txt", ["src/a.txt"], upper)

        @rule("out/b.txt", a)
        def bang(output, inputs):
            log(output)
            output.write_text(inputs[0].read_text() + "!")

        rule("out/c.txt", (a, "src/a.txt"), cat)
        """
    )
    project.write("src/a.txt", "a")
    assert project.build("out/b.txt", "out/c.txt").ran == ["gen/a.txt", "out/b.txt", "out/c.txt"]
    assert project.read("out/b.txt") == "A!" and project.read("out/c.txt") == "Aa"
    project.write("src/a.txt", "b")
    assert project.build("out/b.txt").ran == ["gen/a.txt", "out/b.txt"]


def test_given_inputs_of_a_str_subclass_then_they_are_plain_paths(project):
    project.pipefile(
        """
        class Name(str):
            pass

        rule("out/s.txt", [Name("src/a.txt")], upper)
        """
    )
    project.write("src/a.txt", "a")
    assert project.build().ran == ["out/s.txt"]
    assert project.build().ran == []


def test_given_an_input_outside_the_project_then_it_is_tracked_by_content(project):
    outside = project.scratch / "shared.txt"
    outside.write_text("v1")
    project.pipefile(f'rule("out/s.txt", [{str(outside)!r}], upper)\n')
    assert project.build().ran == ["out/s.txt"]
    assert project.build().ran == []
    outside.write_text("v2")
    assert project.build().ran == ["out/s.txt"]
    assert project.read("out/s.txt") == "V2"


def test_given_an_action_that_changes_directory_then_the_next_rule_still_runs_in_the_pipefiles(
    project,
):
    project.pipefile(
        """
        def wanders(output, inputs):
            log(output)
            output.write_text("w")
            os.chdir("src")

        rule("out/1.txt", [], wanders)
        rule("out/2.txt", ["src/a.txt"], upper)
        rule("out/3.txt", ["src/a.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    assert project.build("-j1").ran == ["out/1.txt", "out/2.txt", "out/3.txt"]
    assert project.read("out/2.txt") == "A" and project.read("out/3.txt") == "a"
    assert not project.exists("src/out")


# -- workers -------------------------------------------------------------------------------------------

RENDEZVOUS = """
def meet(me, other):
    def act(output, inputs):
        log(output)
        Path(f"{me}.here").write_text("")
        for _ in range(1000):
            if Path(f"{other}.here").exists():
                output.write_text("met")
                return
            time.sleep(0.01)
        raise RuntimeError(f"{other} never ran at the same time as {me}")
    return act


rule("out/a.txt", [], meet("a", "b"))
rule("out/b.txt", [], meet("b", "a"))
"""


def test_given_j2_then_two_rules_run_at_the_same_time(project):
    project.pipefile(RENDEZVOUS)
    assert sorted(project.build("-j2").ran) == ["out/a.txt", "out/b.txt"]


COUNTED = """
def counted(output, inputs):
    log(output)
    me = Path("running") / output.name
    me.parent.mkdir(exist_ok=True)
    me.write_text("")
    at_once = len(list(me.parent.iterdir()))
    time.sleep(0.05)
    me.unlink()
    output.write_text(str(at_once))


for i in range(6):
    rule(f"out/{i}.txt", [], counted)
"""


@pytest.mark.parametrize("jobs", [1, 3])
def test_given_j_n_then_never_more_than_n_rules_run_at_once(project, jobs):
    project.pipefile(COUNTED)
    assert len(project.build("-j", str(jobs)).ran) == 6
    assert max(int(project.read(f"out/{i}.txt")) for i in range(6)) <= jobs


def test_given_a_crashing_action_then_the_other_rules_in_the_same_worker_slot_still_run(project):
    project.pipefile(
        """
        def crash(output, inputs):
            log(output)
            os._exit(3)

        rule("out/a.txt", [], crash)
        for i in range(3):
            rule(f"out/ok{i}.txt", ["src/a.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    r = project.build("-j1", "-k", rc=1)
    assert r.ran == ["out/a.txt", "out/ok0.txt", "out/ok1.txt", "out/ok2.txt"]


# -- §5: where the state lives -------------------------------------------------------------------------


def test_given_a_build_then_its_state_lives_under_buildpipe_next_to_the_pipefile(project):
    project.pipefile('rule("out/a.txt", ["src/a.txt"], cat)\n', name="sub/Pipefile.py")
    project.write("sub/src/a.txt", "a")
    project.run("-f", "sub/Pipefile.py", "build")
    assert (project.root / "sub" / ".buildpipe").is_dir()
    assert not project.exists(".buildpipe")


def test_given_a_configured_state_dir_then_the_state_lives_there(project):
    project.pipefile('rule("out/a.txt", ["src/a.txt"], cat)\n')
    project.write("src/a.txt", "a")
    project.write("pipe.toml", 'state-dir = "var/state"\n')
    assert project.build().ran == ["out/a.txt"]
    assert project.path("var/state").is_dir()
    assert not project.exists(".buildpipe")
    assert project.build().ran == []


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(st.text(alphabet="ab/.\0", max_size=5), min_size=1, max_size=4),
)
def test_the_fast_path_check_of_many_paths_agrees_with_the_check_of_each(paths):
    """rule() accepts a declaration on its fast path only when every path is already normal."""
    first, rest = paths[0], paths[1:]
    assert _all_normal(first, rest) == all(_is_normal(p) for p in paths)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(alphabet="ab/.\0", max_size=5),
            st.lists(st.text(alphabet="ab/.", max_size=5), max_size=3),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_paths_checked_after_the_pipefile_ran_are_those_checked_at_each_call(declarations):
    """rule()'s common case (a str output, a list of inputs) leaves its paths to Registry.finish;
    a tuple of inputs takes the path that checks them at once. Same paths, same errors."""
    from buildpipe import dsl

    def declare(kind):
        reg = dsl.fresh_registry("/project")
        try:
            for out, ins in declarations:
                dsl.rule(out, list(ins) if kind is list else tuple(ins), action=print)
            reg.finish()
        except PipefileError as e:
            return e.message
        return [(r.outputs, r.inputs) for r in reg.rules]

    assert declare(list) == declare(tuple)


def test_a_rule_is_placed_at_the_line_that_declared_it():
    """Rule.where, found from the instruction offset, is the line f_lineno would have given."""
    from buildpipe import dsl

    lines = ["from buildpipe import rule", "def f(output, inputs): pass", "x = 1"]
    expected = {}
    for k in range(300):
        if k % 7 == 0:  # a call spread over three lines: the line it starts on
            expected[f"out/{k}"] = len(lines) + 1
            lines += ["rule(", f'    "out/{k}", ["src/a"],', "    f)"]
        elif k % 5 == 0:  # two on one line, in a loop
            expected[f"out/{k}"] = expected[f"out/{k}b"] = len(lines) + 2
            lines += [f"for o in ['out/{k}', 'out/{k}b']:", "    rule(o, [], f); y = 2"]
        else:
            expected[f"out/{k}"] = len(lines) + 1
            lines.append(f'rule("out/{k}", ["src/a"], f)')
    reg = dsl.fresh_registry("/project")
    exec(compile("\n".join(lines), "/project/Pipefile.py", "exec"), {})
    reg.finish()
    assert {r.outputs[0]: r.where for r in reg.rules} == {
        o: ("/project/Pipefile.py", n) for o, n in expected.items()
    }


def test_given_an_action_then_it_runs_with_the_garbage_collector_on(project):
    """`pipe` itself runs without the cyclic collector; actions must not inherit that."""
    project.pipefile(
        """
        import gc

        def probe(output, inputs):
            output.write_text(f"{gc.isenabled()}")

        rule("out/gc.txt", [], probe)
        """
    )
    project.build()
    assert project.read("out/gc.txt") == "True"


def test_given_an_unhashable_callable_object_as_action_then_it_builds_and_is_fingerprinted(project):
    project.pipefile(
        """
        from dataclasses import dataclass

        @dataclass
        class Suffix:  # __eq__ without __hash__: not hashable
            text: str

            def __call__(self, output, inputs):
                log(output)
                output.write_text(inputs[0].read_text() + self.text)

        rule("out/a.txt", ["src/a.txt"], Suffix("!"))
        """
    )
    project.write("src/a.txt", "a")
    assert project.build().ran == ["out/a.txt"]
    assert project.read("out/a.txt") == "a!"
    assert project.build().ran == []
    assert project.run("status").rc == 0
