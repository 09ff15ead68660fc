"""Contract §1 and §4: an invalid Pipefile gets one clear message with file and line, no traceback of
buildpipe's internals, exit status 2 — and nothing runs."""

from __future__ import annotations

import pytest
from conftest import Project, Run, assert_no_internal_traceback


def invalid(project: Project, *args: str) -> Run:
    """Build; expect exit 2, no rule run, no output written and no buildpipe frame shown."""
    r = project.build(*args, rc=2)
    assert r.ran == []
    assert not project.exists("out")
    assert_no_internal_traceback(r.err, project.root)
    assert r.err.strip(), "no message at all"
    return r


# -- Python errors in the Pipefile ------------------------------------------------------------------


def test_given_a_syntax_error_when_built_then_it_is_reported_with_file_and_line(project):
    project.pipefile(
        """
        rule("out/a.txt", ["src/a.txt"], cat)
        rule("out/b.txt", ["src/a.txt"] cat)
        """
    )
    r = invalid(project)
    assert project.where('rule("out/b.txt"') in r.err
    assert "SyntaxError" in r.err
    assert "Traceback" not in r.err


def test_given_a_runtime_error_when_built_then_it_is_reported_with_file_and_line(project):
    project.pipefile(
        """
        rule("out/a.txt", ["src/a.txt"], cat)
        WIDTH = 80 // 0
        """
    )
    r = invalid(project)
    assert project.where("WIDTH = 80 // 0") in r.err
    assert "ZeroDivisionError" in r.err


def test_given_an_undefined_name_when_built_then_it_is_reported_with_file_and_line(project):
    project.pipefile(
        """
        rule("out/a.txt", ["src/a.txt"], no_such_action)
        """
    )
    r = invalid(project)
    assert project.where("no_such_action") in r.err
    assert "NameError" in r.err and "no_such_action" in r.err


def test_given_an_error_raised_in_a_pipefile_function_when_built_then_the_users_frames_are_shown(
    project,
):
    project.pipefile(
        """
        def declare(n):
            if n == 2:
                raise RuntimeError("two is not allowed")
            rule(f"out/{n}.txt", ["src/a.txt"], cat)

        for n in range(3):
            declare(n)  # the call
        """
    )
    r = invalid(project)
    assert project.where('raise RuntimeError("two is not allowed")') in r.err
    assert "RuntimeError: two is not allowed" in r.err
    assert f"line {project.line_of('declare(n)  # the call')}" in r.err


def test_given_an_error_in_a_module_the_pipefile_imports_when_built_then_that_file_and_line_show(
    project,
):
    project.write("helpers.py", "X = 1\nY = {}['missing']\n")
    project.pipefile(
        """
        import helpers
        """
    )
    r = invalid(project)
    assert "helpers.py:2" in r.err
    assert "KeyError" in r.err


def test_given_a_pipefile_calling_sys_exit_when_built_then_it_is_invalid(project):
    project.pipefile(
        """
        rule("out/a.txt", ["src/a.txt"], cat)
        sys.exit(0)
        """
    )
    invalid(project)


# -- impossible declarations -------------------------------------------------------------------------


def test_given_two_rules_declaring_the_same_output_when_built_then_both_declarations_are_named(
    project,
):
    project.pipefile(
        """
        rule("out/a.txt", ["src/a.txt"], cat)
        rule("out/b.txt", ["src/a.txt"], cat)
        rule(["out/c.txt", "out/a.txt"], ["src/a.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    r = invalid(project, "out/b.txt")  # invalid even when another target is asked for
    assert "out/a.txt" in r.err
    assert project.where('rule("out/a.txt"') in r.err
    assert project.where('rule(["out/c.txt"') in r.err


def test_given_two_rules_declaring_the_same_output_by_different_spellings_then_it_is_invalid(
    project,
):
    project.pipefile(
        """
        rule("out/a.txt", [], cat)
        rule("./out//a.txt", [], cat)
        """
    )
    r = invalid(project)
    assert "out/a.txt" in r.err


def test_given_a_dependency_cycle_when_built_then_every_rule_on_it_is_named(project):
    project.pipefile(
        """
        rule("out/first.txt", ["src/a.txt"], cat)
        rule("out/a.txt", ["out/c.txt", "out/first.txt"], cat)
        rule("out/b.txt", ["out/a.txt"], cat)
        rule("out/c.txt", ["out/b.txt"], cat)
        rule("out/last.txt", ["out/c.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    r = invalid(project, "out/first.txt")
    assert "cycle" in r.err.lower()
    for name in ["out/a.txt", "out/b.txt", "out/c.txt"]:
        assert name in r.err
    assert "out/first.txt" not in r.err and "out/last.txt" not in r.err
    assert any(project.where(f'rule("{n}"') in r.err for n in ["out/a.txt", "out/b.txt", "out/c.txt"])


def test_given_a_rule_reading_its_own_output_when_built_then_it_is_a_cycle(project):
    project.pipefile('rule("out/self.txt", ["out/self.txt"], cat)\n')
    r = invalid(project)
    assert "cycle" in r.err.lower() and "out/self.txt" in r.err


def test_given_a_missing_source_when_built_then_it_names_the_source_and_the_rule_needing_it(project):
    project.pipefile(
        """
        rule("out/a.txt", ["src/a.txt"], cat)
        rule("out/b.txt", ["out/a.txt", "src/missing.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    r = invalid(project)
    assert "src/missing.txt" in r.err
    assert "out/b.txt" in r.err
    assert project.where('rule("out/b.txt"') in r.err


def test_given_a_missing_source_of_a_rule_not_requested_when_built_then_the_target_builds(project):
    project.pipefile(
        """
        rule("out/a.txt", ["src/a.txt"], cat)
        rule("out/b.txt", ["src/missing.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    assert project.build("out/a.txt").ran == ["out/a.txt"]


def test_given_a_source_deleted_after_a_build_when_built_then_it_is_reported_as_missing(project):
    project.pipefile('rule("out/a.txt", ["src/a.txt"], cat)\n')
    project.write("src/a.txt", "a")
    project.build()
    project.remove("src/a.txt")
    r = project.build(rc=2)
    assert "src/a.txt" in r.err and "out/a.txt" in r.err
    assert r.ran == []


def test_given_an_input_that_is_a_directory_when_built_then_it_is_invalid(project):
    project.pipefile('rule("out/a.txt", ["src"], cat)\n')
    project.write("src/a.txt", "a")
    r = invalid(project)
    assert "src" in r.err and "out/a.txt" in r.err


@pytest.mark.parametrize(
    "output",
    ["../escape.txt", "out/../../escape.txt", "/tmp/buildpipe-e2e-escape.txt", ".."],
)
def test_given_an_output_outside_the_project_when_built_then_it_is_invalid(project, output):
    project.pipefile(f'rule({output!r}, [], cat)  # outside\n')
    r = invalid(project)
    assert project.where("# outside") in r.err
    assert not (project.root.parent / "escape.txt").exists()


def test_given_an_absolute_output_inside_the_project_when_built_then_it_is_built(project):
    project.pipefile(
        """
        rule(str(Path(__file__).parent / "out" / "abs.txt"), ["src/a.txt"], cat)
        """
    )
    project.write("src/a.txt", "a")
    project.build()
    assert project.read("out/abs.txt") == "a"
    assert project.build().ran == []


def test_given_params_that_are_not_plain_data_when_built_then_it_is_invalid(project):
    project.pipefile('rule("out/a.txt", [], cat, params={"when": object()})  # params\n')
    r = invalid(project)
    assert project.where("# params") in r.err


def test_given_a_rule_without_action_when_built_then_it_is_invalid(project):
    project.pipefile('rule("out/a.txt", ["src/a.txt"])  # no action\n')
    project.write("src/a.txt", "a")
    r = invalid(project)
    assert project.where("# no action") in r.err


def test_given_a_sh_command_with_an_unknown_placeholder_when_built_then_it_is_invalid(project):
    project.pipefile('rule("out/a.txt", [], sh("cp {source} {output}"))  # bad sh\n')
    r = invalid(project)
    assert project.where("# bad sh") in r.err
    assert "source" in r.err


# -- targets, aliases and defaults -------------------------------------------------------------------


@pytest.fixture
def targets(project: Project) -> Project:
    project.pipefile(
        """
        rule("out/hello.txt", ["src/a.txt"], cat)
        rule("out/world.txt", ["src/a.txt"], cat)
        alias("everything", ["out/hello.txt", "out/world.txt"])
        """
    )
    project.write("src/a.txt", "a")
    return project


def test_given_an_unknown_target_when_built_then_it_fails_suggesting_close_names(targets):
    r = invalid(targets, "out/helo.txt")
    assert "out/helo.txt" in r.err
    assert "out/hello.txt" in r.err


def test_given_a_misspelt_alias_when_built_then_the_alias_is_suggested(targets):
    r = invalid(targets, "everythin")
    assert "everything" in r.err.replace("everythin'", "")


def test_given_an_unknown_target_with_nothing_close_when_built_then_it_is_named(targets):
    r = invalid(targets, "zzzzqqqq")
    assert "zzzzqqqq" in r.err


def test_given_an_unknown_and_a_known_target_when_built_then_nothing_runs(targets):
    invalid(targets, "out/hello.txt", "out/nope.txt")


def test_given_an_alias_naming_an_unknown_target_when_anything_is_built_then_it_is_invalid(project):
    project.pipefile(
        """
        rule("out/hello.txt", ["src/a.txt"], cat)
        alias("all", ["out/hello.txt", "out/helo.txt"])  # the alias
        """
    )
    project.write("src/a.txt", "a")
    r = invalid(project, "out/hello.txt")
    assert project.where("# the alias") in r.err
    assert "out/helo.txt" in r.err


def test_given_a_default_naming_an_unknown_target_when_built_then_it_is_invalid(project):
    project.pipefile(
        """
        rule("out/hello.txt", ["src/a.txt"], cat)
        alias("all", ["out/hello.txt"])
        default("al")  # the default
        """
    )
    project.write("src/a.txt", "a")
    r = invalid(project, "out/hello.txt")
    assert project.where("# the default") in r.err
    assert "'al'" in r.err or '"al"' in r.err


def test_given_an_alias_with_the_name_of_an_output_when_built_then_it_is_invalid(project):
    project.pipefile(
        """
        rule("out/hello.txt", ["src/a.txt"], cat)
        rule("out/other.txt", ["src/a.txt"], cat)
        alias("out/hello.txt", ["out/other.txt"])  # the alias
        """
    )
    project.write("src/a.txt", "a")
    r = invalid(project)
    assert project.where("# the alias") in r.err


def test_given_a_default_naming_an_existing_file_when_built_then_it_is_valid(project):
    project.pipefile(
        """
        rule("out/hello.txt", ["src/a.txt"], cat)
        default("src/a.txt")
        """
    )
    project.write("src/a.txt", "a")
    assert project.build().ran == []


def test_given_no_pipefile_when_built_then_exit_2_says_so(project):
    r = project.build(rc=2)
    assert "Pipefile.py" in r.err
    assert_no_internal_traceback(r.err, project.root)
