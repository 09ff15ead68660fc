"""The bad input corpus: broken Pipefiles, settings and command lines through the real `pipe` command.

Each case must end with exit 2 (an invalid Pipefile or usage) or 1 (a rule failed at run time) and ONE
clear message: the exact key phrase, `Pipefile.py:LINE` of the offending line (marked `# HERE` in the
case's Pipefile) where there is one, and no traceback of buildpipe's internals - a "Traceback" only
where it is the user's own code's. Contract §1 (the DSL) and §4 (exit statuses, messages, settings).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
from conftest import HEADER, PIPE, TIMEOUT, Project, Run, assert_no_internal_traceback

HERE = "# HERE"
VALID = 'rule("out/hello.txt", ["src/a.txt"], cat)\nalias("everything", ["out/hello.txt"])\n'


@dataclass
class Case:
    body: str  # the Pipefile after conftest's HEADER; the offending line carries "# HERE"
    phrases: tuple[str, ...]  # each must appear, exactly, in the message
    args: tuple[str, ...] = ("build",)
    rc: int = 2
    files: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Project], None] | None = None
    user_traceback: bool = False  # the user's own traceback is expected


def case(
    id: str,
    body: str,
    *phrases: str,
    args: tuple[str, ...] = ("build",),
    rc: int = 2,
    files: dict[str, str] | None = None,
    setup: Callable[[Project], None] | None = None,
    user_traceback: bool = False,
):
    return pytest.param(Case(body, phrases, args, rc, files or {}, setup, user_traceback), id=id)


def _fifo(project: Project) -> None:
    os.mkfifo(project.path("src/fifo"))


def _loop(project: Project) -> None:
    os.symlink("loop", project.path("src/loop"))


CASES = [
    # -- Python errors in the Pipefile ------------------------------------------------------------
    case(
        "syntax-error",
        'rule("out/a.txt", ["src/a.txt"] cat)  # HERE\n',
        "SyntaxError",
        'rule("out/a.txt", ["src/a.txt"] cat)',
    ),
    case("indentation-error", "x = 1\n    y = 2  # HERE\n", "unexpected indent"),
    case("nul-byte-in-pipefile", 'x = 1\ny = "a\0b"  # HERE\n', "null bytes"),
    case(
        "import-missing-module",
        "import no_such_module_xyz  # HERE\n",
        "ModuleNotFoundError: No module named 'no_such_module_xyz'",
    ),
    case(
        "import-missing-name-from-buildpipe",
        "from buildpipe import no_such_name  # HERE\n",
        "ImportError: cannot import name 'no_such_name' from 'buildpipe'",
    ),
    case(
        "import-error-inside-imported-module",
        "import helpers  # imported\n",
        "helpers.py:2",
        "ZeroDivisionError",
        files={"helpers.py": "X = 1\nY = X // 0\n"},
        user_traceback=True,
    ),
    case(
        "name-error",
        'rule("out/a.txt", ["src/a.txt"], no_such_action)  # HERE\n',
        "NameError: name 'no_such_action' is not defined",
    ),
    case(
        "error-raised-in-a-pipefile-function",
        'def declare(n):\n    raise RuntimeError(f"no {n}")  # HERE\n\n\ndeclare(2)\n',
        "RuntimeError: no 2",
        user_traceback=True,
    ),
    case(
        "infinite-recursion",
        "def f(n):\n    return f(n + 1)  # HERE\n\n\nf(0)\n",
        "RecursionError",
        user_traceback=True,
    ),
    case("sys-exit", "x = 1\nsys.exit(3)  # HERE\n", "the Pipefile called exit(3)"),
    case(
        "rule-unknown-keyword",
        'rule("out/a.txt", ["src/a.txt"], cat, bogus=1)  # HERE\n',
        "TypeError: rule() got an unexpected keyword argument 'bogus'",
    ),
    # -- wrong types for every DSL argument: rule(outputs, inputs, action, params, temp, name) ----
    case(
        "outputs-int",
        'rule(42, ["src/a.txt"], cat)  # HERE\n',
        "outputs must be a path, a list of paths or a dict of paths, not int",
    ),
    case(
        "outputs-bytes",
        'rule(b"out/a.txt", ["src/a.txt"], cat)  # HERE\n',
        "outputs must be a path, a list of paths or a dict of paths, not bytes",
    ),
    case(
        "outputs-list-holding-an-int",
        'rule(["out/a.txt", 7], ["src/a.txt"], cat)  # HERE\n',
        "an output must be a path (str or Path), not int: 7",
    ),
    case("outputs-empty-list", 'rule([], ["src/a.txt"], cat)  # HERE\n', "a rule needs at least one output"),
    case("outputs-empty-string", 'rule("", ["src/a.txt"], cat)  # HERE\n', "an output is an empty path"),
    case("outputs-nul-byte", 'rule("out/a\\0.txt", ["src/a.txt"], cat)  # HERE\n', "contains a NUL byte"),
    case(
        "outputs-dict-int-key",
        'rule({1: "out/a.txt"}, ["src/a.txt"], cat)  # HERE\n',
        "output dict keys must be strings, not int",
    ),
    case(
        "outputs-dict-float-value",
        'rule({"a": 1.5}, ["src/a.txt"], cat)  # HERE\n',
        "an output must be a path (str or Path), not float: 1.5",
    ),
    case(
        "inputs-int",
        'rule("out/a.txt", 5, cat)  # HERE\n',
        "inputs must be a list of paths and rules, not int",
    ),
    case(
        "inputs-dict",
        'rule("out/a.txt", {"x": "src/a.txt"}, cat)  # HERE\n',
        "inputs must be a list of paths and rules, not dict",
    ),
    case(
        "inputs-list-holding-none",
        'rule("out/a.txt", ["src/a.txt", None], cat)  # HERE\n',
        "an input must be a path (str or Path), not NoneType: None",
    ),
    case(
        "action-str",
        'rule("out/a.txt", ["src/a.txt"], "cat")  # HERE\n',
        "action must be a function or sh(...), not str",
    ),
    case(
        "action-missing",
        'rule("out/a.txt", ["src/a.txt"])  # HERE\n',
        "rule out/a.txt has no action",
    ),
    case(
        "decorator-on-a-non-function",
        'rule("out/a.txt", ["src/a.txt"])(3)  # HERE\n',
        "@rule must decorate a function, not int",
    ),
    case(
        "decorator-on-a-rule-with-an-action",
        'rule("out/a.txt", ["src/a.txt"], cat)(upper)  # HERE\n',
        "rule out/a.txt already has an action",
    ),
    case(
        "params-list",
        'rule("out/a.txt", ["src/a.txt"], cat, params=[1, 2])  # HERE\n',
        "params must be a dict, not list",
    ),
    case(
        "params-int-key",
        'rule("out/a.txt", ["src/a.txt"], cat, params={1: "x"})  # HERE\n',
        "params keys must be strings, not int (1)",
    ),
    case(
        "params-lambda-value",
        'rule("out/a.txt", ["src/a.txt"], cat, params={"f": lambda: 1})  # HERE\n',
        "params['f'] holds a function",
        "params must be plain data",
    ),
    case(
        "params-object-value",
        'rule("out/a.txt", ["src/a.txt"], cat, params={"o": object()})  # HERE\n',
        "params['o'] holds a object",
    ),
    case(
        "params-generator-value",
        'rule("out/a.txt", ["src/a.txt"], cat, params={"g": (i for i in range(3))})  # HERE\n',
        "params['g'] holds a generator",
    ),
    case(
        "params-module-nested-in-a-list",
        'rule("out/a.txt", ["src/a.txt"], cat, params={"deep": [1, {"m": os}]})  # HERE\n',
        "params['deep'] holds a module",
    ),
    case(
        "temp-str",
        'rule("out/a.txt", ["src/a.txt"], cat, temp="yes")  # HERE\n',
        "temp must be True or False, not str",
    ),
    case(
        "name-int",
        'rule("out/a.txt", ["src/a.txt"], cat, name=3)  # HERE\n',
        "name must be a string, not int",
    ),
    # -- sh() -------------------------------------------------------------------------------------
    case(
        "sh-list",
        'rule("out/a.txt", ["src/a.txt"], sh(["cat", "{input}"]))  # HERE\n',
        "sh() takes a command string, not list",
    ),
    case(
        "sh-unknown-placeholder",
        'rule("out/a.txt", ["src/a.txt"], sh("cp {source} {output}"))  # HERE\n',
        "uses {source}",
    ),
    case(
        "sh-unbalanced-brace",
        'rule("out/a.txt", ["src/a.txt"], sh("cp {input {output}"))  # HERE\n',
        "write {{ and }} for literal braces",
    ),
    case(
        "sh-bare-params",
        'rule("out/a.txt", ["src/a.txt"], sh("echo {params} > {output}"))  # HERE\n',
        "uses {params}",
    ),
    case(
        "sh-indexed-inputs",
        'rule("out/a.txt", ["src/a.txt"], sh("cat {inputs[0]} > {output}"))  # HERE\n',
        "uses {inputs[0]}",
    ),
    case(
        "sh-conversion-defeats-quoting",
        'rule("out/a.txt", ["src/a.txt"], sh("echo {input!r} > {output}"))  # HERE\n',
        "{input!r}",
    ),
    case(
        "sh-params-key-not-in-params",
        'rule("out/a.txt", ["src/a.txt"], sh("echo {params[nope]} > {output}"), params={"k": 1})  # HERE\n',
        "nope",
    ),
    case(
        "sh-input-without-inputs",
        'rule("out/a.txt", [], sh("cat {input} > {output}"))  # HERE\n',
        "uses {input} but the rule has no inputs",
    ),
    # -- alias(), default(), invariant() ----------------------------------------------------------
    case(
        "alias-int-name",
        VALID + 'alias(3, ["out/hello.txt"])  # HERE\n',
        "alias() needs a non-empty string name",
    ),
    case(
        "alias-target-none",
        VALID + 'alias("all", ["out/hello.txt", None])  # HERE\n',
        "alias() takes targets (names, paths or rules), not NoneType",
    ),
    case(
        "alias-declared-twice",
        VALID + 'alias("everything", ["out/hello.txt"])  # HERE\n',
        "alias 'everything' is already declared at Pipefile.py:",
    ),
    case(
        "alias-named-like-an-output",
        'rule("out/hello.txt", ["src/a.txt"], cat)\nrule("out/b.txt", ["src/a.txt"], cat)\n'
        'alias("out/hello.txt", ["out/b.txt"])  # HERE\n',
        "alias 'out/hello.txt' has the name of an output of out/hello.txt (Pipefile.py:",
    ),
    case(
        "alias-naming-an-unknown-target",
        VALID + 'alias("all", ["out/hello.txt", "out/helo.txt"])  # HERE\n',
        "alias 'all' names an unknown target 'out/helo.txt'; did you mean 'out/hello.txt'?",
        args=("build", "out/hello.txt"),
    ),
    case(
        "alias-naming-itself",
        VALID + 'alias("x", ["out/hello.txt", "x"])  # HERE\n',
        "cycle",
    ),
    case(
        "aliases-naming-each-other",
        VALID + 'alias("x", ["y"])  # HERE\nalias("y", ["x", "out/hello.txt"])\n',
        "cycle",
    ),
    case(
        "default-int",
        VALID + "default(3)  # HERE\n",
        "default() takes targets (names, paths or rules), not int",
    ),
    case(
        "default-list-holding-a-float",
        VALID + 'default(["out/hello.txt", 2.5])  # HERE\n',
        "default() takes targets (names, paths or rules), not float",
    ),
    case(
        "default-naming-an-unknown-target",
        VALID + 'default("everythin")  # HERE\n',
        "default() names an unknown target 'everythin'; did you mean 'everything'?",
        args=("build", "out/hello.txt"),
    ),
    case(
        "invariant-int",
        "invariant(3)  # HERE\n",
        "an invariant must be a path (str or Path), not int: 3",
    ),
    case("invariant-empty", 'invariant("")  # HERE\n', "an invariant is an empty path"),
    # -- impossible outputs -----------------------------------------------------------------------
    case("output-parent-relative", 'rule("../escape.txt", [], cat)  # HERE\n', "lies outside the project"),
    case("output-is-the-pipefile", 'rule("Pipefile.py", ["src/a.txt"], cat)  # HERE\n', "Pipefile.py"),
    case(
        "output-inside-the-state-directory",
        'rule(".buildpipe/state.db", ["src/a.txt"], cat)  # HERE\n',
        ".buildpipe",
    ),
    case(
        "output-in-a-state-directory-outside-the-project",
        'rule("../state/x.txt", ["src/a.txt"], cat, allow_outside=True)  # HERE\n',
        "output ../state/x.txt is in the state directory",
        files={"pipe.toml": 'state-dir = "../state"\n'},
    ),
    case(
        "output-named-twice-in-one-rule",
        'rule(["out/a.txt", "out/./a.txt"], ["src/a.txt"], cat)  # HERE\n',
        "rule out/a.txt names an output twice",
    ),
    case(
        "duplicate-output-across-rules",
        'rule("out/a.txt", ["src/a.txt"], cat)  # first\nrule(["out/b.txt", "out/a.txt"], [], cat)  # HERE\n',
        "two rules declare the output out/a.txt: out/a.txt (Pipefile.py:",
    ),
    case(
        "rule-reading-its-own-second-output",
        'rule(["out/a.txt", "out/b.txt"], ["out/b.txt"], cat)  # HERE\n',
        "dependency cycle: out/a.txt (Pipefile.py:",
    ),
    # -- sources ----------------------------------------------------------------------------------
    case(
        "missing-source",
        'rule("out/a.txt", ["src/a.txt", "src/missing.txt"], cat)  # HERE\n',
        "source src/missing.txt does not exist; needed by rule out/a.txt",
    ),
    case(
        "input-is-a-directory",
        'rule("out/a.txt", ["src/dir"], cat)  # HERE\n',
        "source src/dir is a directory",
        "needed by rule out/a.txt",
        files={"src/dir/x.txt": "x"},
    ),
    case(
        "input-is-a-fifo",
        'rule("out/a.txt", ["src/fifo"], cat)  # HERE\n',
        "source src/fifo is not a regular file",
        setup=_fifo,
    ),
    case(
        "input-is-a-symlink-loop",
        'rule("out/a.txt", ["src/loop"], cat)  # HERE\n',
        "source src/loop cannot be read (Too many levels of symbolic links)",
        setup=_loop,
    ),
    # -- the command line: unknown targets, bad usage ---------------------------------------------
    case(
        "unknown-target",
        VALID,
        "unknown target 'out/helo.txt'; did you mean 'out/hello.txt'?",
        args=("build", "out/helo.txt"),
    ),
    case(
        "unknown-alias-target",
        VALID,
        "unknown target 'everythin'; did you mean 'everything'?",
        args=("build", "everythin"),
    ),
    case(
        "unknown-target-to-force",
        VALID,
        "unknown target 'out/helo.txt'; did you mean 'out/hello.txt'?",
        args=("build", "--force", "out/helo.txt"),
    ),
    case(
        "unknown-target-to-status",
        VALID,
        "unknown target 'out/helo.txt'; did you mean 'out/hello.txt'?",
        args=("status", "out/helo.txt"),
    ),
    case(
        "unknown-target-to-graph",
        VALID,
        "unknown target 'out/helo.txt'; did you mean 'out/hello.txt'?",
        args=("graph", "out/helo.txt"),
    ),
    case(
        "unknown-target-to-clean",
        VALID,
        "unknown target 'out/helo.txt'; did you mean 'out/hello.txt'?",
        args=("clean", "out/helo.txt"),
    ),
    case("jobs-zero", VALID, "-j takes a number >= 1, not 0", args=("build", "-j", "0")),
    case(
        "pipe-toml-jobs-a-string",
        VALID,
        "pipe.toml: setting 'jobs' must be an integer >= 1, not '4'",
        files={"pipe.toml": 'jobs = "4"\n'},
    ),
    case(
        "pipe-toml-jobs-a-bool",
        VALID,
        "pipe.toml: setting 'jobs' must be an integer >= 1, not True",
        files={"pipe.toml": "jobs = true\n"},
    ),
    case(
        "pipe-toml-default-a-string",
        VALID,
        "pipe.toml: setting 'default' must be a list of strings, not 'everything'",
        files={"pipe.toml": 'default = "everything"\n'},
    ),
    case(
        "pipe-toml-state-dir-a-list",
        VALID,
        "pipe.toml: setting 'state-dir' must be a string, not []",
        files={"pipe.toml": "state-dir = []\n"},
    ),
    case(
        "pipe-toml-invalid-toml",
        VALID,
        "pipe.toml: invalid TOML",
        files={"pipe.toml": "jobs = [\n"},
    ),
    case(
        "pyproject-unknown-key",
        VALID,
        "pyproject.toml [tool.buildpipe]: unknown setting 'bogus'",
        files={"pyproject.toml": "[tool.buildpipe]\nbogus = 1\n"},
    ),
    case(
        "pyproject-pipefile-an-int",
        VALID,
        "pyproject.toml [tool.buildpipe]: setting 'pipefile' must be a string, not 3",
        files={"pyproject.toml": "[tool.buildpipe]\npipefile = 3\n"},
    ),
    case(
        "pipe-toml-default-naming-an-unknown-target",
        VALID,
        "pipe.toml",
        "unknown target 'everythin'; did you mean 'everything'?",
        files={"pipe.toml": 'default = ["everythin"]\n'},
    ),
    # -- run-time failures of rules (exit 1) ------------------------------------------------------
    case(
        "action-raises",
        'def boom(output, inputs):\n    raise ValueError("boom at work")\n\n\n'
        'rule("out/a.txt", ["src/a.txt"], boom)  # HERE\n',
        "FAILED out/a.txt",
        "ValueError: boom at work",
        rc=1,
        user_traceback=True,
    ),
    case(
        "sh-exit-status",
        'rule("out/a.txt", ["src/a.txt"], sh("cat {input} > {output}; exit 3"))  # HERE\n',
        "FAILED out/a.txt",
        "command failed (exit status 3)",
        rc=1,
    ),
    case(
        "action-creates-no-output",
        'rule(["out/a.txt", "out/b.txt"], ["src/a.txt"], lambda output, inputs: None)  # HERE\n',
        "FAILED out/a.txt",
        "the action did not create out/a.txt, out/b.txt",
        rc=1,
    ),
    case(
        "action-with-the-wrong-signature",
        'def nothing():\n    pass\n\n\nrule("out/a.txt", ["src/a.txt"], nothing)  # HERE\n',
        "FAILED out/a.txt",
        "TypeError: nothing() takes 0 positional arguments but 2 were given",
        rc=1,
    ),
    case(
        "action-kills-its-worker",
        "def die(output, inputs):\n    os.kill(os.getpid(), 9)\n\n\n"
        'rule("out/a.txt", ["src/a.txt"], die)  # HERE\n',
        "FAILED out/a.txt",
        "killed by SIGKILL",
        rc=1,
    ),
]


def pipe_messages(text: str) -> list[str]:
    """The lines that start one of pipe's own messages (`pipe: ...`, `pipe build: error: ...`)."""
    return [line for line in text.splitlines() if re.match(r"pipe( \w+)?: ", line)]


def where(project: Project, needle: str = HERE) -> str | None:
    """`Pipefile.py:N` of the one line holding `needle` (None if none does); the file may not be UTF-8."""
    data = project.path("Pipefile.py").read_bytes()
    lines = [n for n, line in enumerate(data.split(b"\n"), 1) if needle.encode() in line]
    assert len(lines) <= 1, f"{needle!r} is on lines {lines}"
    return f"Pipefile.py:{lines[0]}" if lines else None


def check(project: Project, r: Run, c: Case) -> None:
    text = r.text
    assert_no_internal_traceback(text, project.root)
    for phrase in c.phrases:
        assert phrase in r.err if c.rc == 2 else phrase in text, f"{phrase!r} missing\n{r}"
    if c.user_traceback:
        assert "Traceback" in text, r
    else:
        assert "Traceback" not in text, r
    here = where(project)
    if c.rc == 2:
        assert r.ran == [] and not project.exists("out"), r
        assert r.out == "", f"an invalid run printed on stdout\n{r}"
        messages = pipe_messages(r.err)
        assert len(messages) == 1, f"not ONE message\n{r}"
        if here:  # the message starts with the offending line
            assert messages[0].startswith(f"pipe: {here}: "), r
    else:
        assert text.count("FAILED ") == 1, r
        assert f"FAILED out/a.txt ({here})" in text, r
        assert "1 rule failed" in text, r


@pytest.mark.parametrize("c", CASES)
def test_given_bad_input_when_pipe_runs_then_one_clear_message_and_the_right_exit_status(project, c):
    project.write("src/a.txt", "a\n")
    for rel, text in c.files.items():
        project.write(rel, text)
    if c.setup is not None:
        c.setup(project)
    project.write("Pipefile.py", (HEADER + "\n\n" + c.body).encode("utf-8", "surrogateescape"))
    r = project.run(*c.args, rc=c.rc)
    check(project, r, c)


BAD_SOURCES = ["missing-source", "input-is-a-directory", "input-is-a-fifo", "input-is-a-symlink-loop"]


@pytest.mark.parametrize("c", [c for c in CASES if c.id in BAD_SOURCES])
def test_given_a_bad_source_among_many_new_ones_then_the_message_is_the_same(project, c):
    """Past filesystem.PARALLEL_HASHES new files, a helper process reads half of them."""
    many = 300
    for i in range(many):
        project.write(f"src/m{i}.txt", f"{i}\n")
    loop = f'for i in range({many}):\n    rule(f"out/m{{i}}.txt", [f"src/m{{i}}.txt"], cat)\n'
    c = replace(c, body=c.body + loop)
    test_given_bad_input_when_pipe_runs_then_one_clear_message_and_the_right_exit_status(project, c)


# -- cycles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_given_a_cycle_when_built_then_the_message_names_every_rule_on_it_in_order(project, length):
    """c0 -> c1 -> ... -> c(n-1) -> c0 ("feeds"), declared out of order, between unrelated rules."""
    names = [f"out/c{i}.txt" for i in range(length)]
    order = list(reversed(range(length)))
    lines = ['rule("out/before.txt", ["src/a.txt"], cat)']
    for i in order:
        lines.append(f'rule("{names[i]}", ["{names[i - 1]}", "out/before.txt"], cat)  # c{i}')
    lines.append(f'rule("out/after.txt", ["{names[0]}"], cat)')
    project.write("src/a.txt", "a\n")
    project.pipefile("\n".join(lines) + "\n")
    r = project.build("out/after.txt", rc=2)
    assert_no_internal_traceback(r.err, project.root)
    assert "Traceback" not in r.text
    (message,) = pipe_messages(r.err)
    m = re.search(r"dependency cycle: (.*)$", message)
    assert m, r
    shown = re.findall(r"out/\w+\.txt", m.group(1))
    assert "out/before.txt" not in shown and "out/after.txt" not in shown, r
    assert len(shown) == length + 1 and shown[0] == shown[-1], r
    start = names.index(shown[0])
    assert shown[:-1] == [names[(start + k) % length] for k in range(length)], f"not in order\n{r}"
    for k, name in enumerate(names):
        assert f"{name} ({project.where(f'# c{k}')})" in message, r
    assert message.startswith(f"pipe: {project.where(f'# c{start}')}: "), r
    assert r.ran == [] and not project.exists("out")


# -- outputs the filesystem makes impossible -----------------------------------------------------


def check_output_failure(project: Project, r: Run, output: str, phrase: str) -> None:
    """A clear failure of the rule producing `output`: exit 1 or 2, one message, no internal traceback."""
    assert r.rc in (1, 2), r
    assert_no_internal_traceback(r.text, project.root)
    assert "Traceback" not in r.text, r
    assert output in r.text and phrase in r.text, r
    assert project.where(HERE) in r.text, r


def test_given_an_output_that_is_a_directory_when_built_then_it_is_a_clear_failure(project):
    project.write("src/a.txt", "a\n")
    project.pipefile('rule("src", ["src/a.txt"], cat)  # HERE\n')
    check_output_failure(project, project.build(rc=None), "src", "is a directory")
    assert project.read("src/a.txt") == "a\n"


def test_given_a_built_output_replaced_by_a_directory_when_built_then_it_is_a_clear_failure(project):
    project.write("src/a.txt", "a\n")
    project.pipefile('rule("out/a.txt", ["src/a.txt"], cat)  # HERE\n')
    project.build()
    project.remove("out/a.txt")
    project.path("out/a.txt").mkdir()
    for args in (("build",), ("status",)):
        check_output_failure(project, project.run(*args, rc=None), "out/a.txt", "is a directory")


def test_given_an_output_behind_a_symlink_loop_when_built_then_it_is_a_clear_failure(project):
    project.write("src/a.txt", "a\n")
    project.pipefile('rule("out/a.txt", ["src/a.txt"], cat)  # HERE\n')
    project.build()
    project.remove("out/a.txt")
    project.path("out").rmdir()
    project.path("out").symlink_to("out")
    for args in (("build",), ("status",)):
        check_output_failure(project, project.run(*args, rc=None), "out/a.txt", "symbolic links")


# -- unreadable sources -----------------------------------------------------------------------------


def test_given_an_unreadable_source_when_built_then_it_is_named_with_the_rule_needing_it(project):
    src = project.write("src/secret.txt", "s")
    src.chmod(0)
    try:
        try:
            with open(src, "rb"):
                pass
        except PermissionError:
            pass
        else:
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not block reads")
        project.pipefile('rule("out/a.txt", ["src/secret.txt"], cat)  # HERE\n')
        r = project.build(rc=2)
        assert "source src/secret.txt cannot be read (Permission denied)" in r.err, r
        assert pipe_messages(r.err) == [r.err.splitlines()[0]]
        assert r.err.startswith(f"pipe: {project.where(HERE)}: "), r
        assert_no_internal_traceback(r.text, project.root)
        assert "Traceback" not in r.text
    finally:
        src.chmod(0o644)


# -- file names that are not UTF-8 ------------------------------------------------------------------


def run_bytes(project: Project, *args: str, rc: int = 0) -> tuple[str, bytes]:
    """Run `pipe ARGS` capturing raw bytes (conftest's runner decodes strictly as UTF-8).

    Returns (stdout + stderr decoded with surrogateescape, the raw stdout)."""
    proc = subprocess.run(
        [*PIPE, *args],
        cwd=project.root,
        env=project.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT,
    )
    text = os.fsdecode(proc.stdout) + os.fsdecode(proc.stderr)
    assert proc.returncode == rc, f"pipe {' '.join(args)} -> exit {proc.returncode}\n{text!r}"
    assert_no_internal_traceback(text, project.root)
    return text, proc.stdout


def test_given_non_utf8_file_names_as_sources_and_outputs_then_everything_works(project):
    root = os.fsencode(project.root)
    src, out_py, out_sh = b"src/caf\xe9.txt", b"out/r\xe9sum\xe9.txt", b"out/\xff\xfe sh.txt"
    os.mkdir(os.path.join(root, b"src"))
    with open(os.path.join(root, src), "wb") as f:
        f.write(b"latin-1 named\n")
    project.pipefile(
        f"""
        def up(output, inputs):  # no log(): ran.log is UTF-8 text
            output.write_bytes(inputs[0].read_bytes().upper())


        rule(os.fsdecode({out_py!r}), [os.fsdecode({src!r})], up)
        rule(os.fsdecode({out_sh!r}), [os.fsdecode({src!r})],
             sh("cat {{input}} > {{output}}; printf '%s' {{input}} >> {{output}}"))
        """
    )
    text, _ = run_bytes(project, "build", "-v")
    assert "built 2 rules" in text
    with open(os.path.join(root, out_py), "rb") as f:
        assert f.read() == b"LATIN-1 NAMED\n"
    with open(os.path.join(root, out_sh), "rb") as f:
        assert f.read() == b"latin-1 named\n" + src  # the shell got the exact bytes of the name
    text, _ = run_bytes(project, "build")
    assert "nothing to do" in text
    shown = os.fsdecode(out_py).encode("ascii", "backslashreplace")  # out/r\\udce9sum\\udce9.txt
    for args in (("list",), ("graph",)):
        _, out = run_bytes(project, *args)
        assert shown in out, (args, out)  # undecodable bytes are shown escaped, never raw
    _, out = run_bytes(project, "graph", "--format", "dot")
    assert b'"' + shown.replace(b"\\", b"\\\\") + b'"' in out, out  # DOT doubles each backslash
    run_bytes(project, "status")
    with open(os.path.join(root, src), "ab") as f:
        f.write(b"more\n")
    run_bytes(project, "status", rc=1)
    _, out = run_bytes(project, "build", "-n")
    assert shown in out and os.fsdecode(src).encode("ascii", "backslashreplace") in out, out
    text, _ = run_bytes(project, "build", os.fsdecode(out_py))  # a target named by its bytes
    assert "built 1 rule" in text
    with open(os.path.join(root, out_py), "rb") as f:
        assert f.read() == b"LATIN-1 NAMED\nMORE\n"
    text, _ = run_bytes(project, "clean")
    assert "removed 2 files" in text
    assert os.listdir(os.path.join(root, b"out")) == []
    assert os.path.exists(os.path.join(root, src))


# -- a huge fan-in ----------------------------------------------------------------------------------

FAN_IN = 100_000


def test_given_a_rule_with_100000_inputs_when_built_then_it_works_within_a_few_seconds(project):
    src = project.root / "src"
    src.mkdir()
    # Hard links to a few seeds: much faster than creating 100,000 files (ext4 allows 65,000 links).
    seeds = []
    for k in range(4):
        seed = project.scratch / f"seed{k}"
        seed.write_text(f"{k}\n")
        seeds.append(str(seed))
    dir_fd = os.open(src, os.O_RDONLY)
    try:
        for i in range(FAN_IN):
            os.link(seeds[i % 4], f"{i}.txt", dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    project.pipefile(
        f"""
        def count(output, inputs):
            log(output)
            output.write_text(f"{{len(inputs)}} {{inputs[0]}} {{inputs[-1]}}")


        rule("out/n.txt", [f"src/{{i}}.txt" for i in range({FAN_IN})], count)
        """
    )
    t0 = time.monotonic()
    r = project.build()
    first = time.monotonic() - t0
    assert r.ran == ["out/n.txt"]
    assert project.read("out/n.txt") == f"{FAN_IN} src/0.txt src/{FAN_IN - 1}.txt"
    t0 = time.monotonic()
    assert project.build().ran == []
    again = time.monotonic() - t0
    # A sanity bound against a quadratic blow-up, not a benchmark: generous for a loaded machine.
    assert first < 60 and again < 30, f"first build {first:.1f}s, no-op {again:.1f}s"
