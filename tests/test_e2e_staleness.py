"""Contract §2: when a rule runs, and when it does not — through the real `pipe build`."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import Project

# `chain` (two leaves and a consumer of both) and `built` come from conftest.py.


# -- first build and no-op ------------------------------------------------------------------------


def test_given_a_fresh_project_when_built_then_every_rule_runs_once_in_dependency_order(chain):
    r = chain.build()
    assert sorted(r.ran) == ["out/a.txt", "out/ab.txt", "out/b.txt"]
    assert r.ran[-1] == "out/ab.txt"
    assert chain.read("out/a.txt") == "HELLO\n"
    assert chain.read("out/b.txt") == "WORLD\n"
    assert chain.read("out/ab.txt") == "HELLO\nWORLD\n"
    assert r.err == ""


def test_given_a_built_project_when_built_again_then_nothing_runs_and_it_says_so(built):
    before = built.stats()
    r = built.build()
    assert r.ran == []
    assert "nothing to do" in r.out.lower()
    assert built.stats() == before  # no output rewritten


def test_given_a_built_project_when_built_twice_more_then_still_nothing_runs(built):
    assert built.build().ran == []
    assert built.build().ran == []


# -- touch is free ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shift_s", [+3600, -3600], ids=["future", "past"])
def test_given_a_built_project_when_every_file_is_only_touched_then_nothing_runs(built, shift_s):
    for rel in ["src/a.txt", "src/b.txt", "out/a.txt", "out/b.txt", "out/ab.txt", "Pipefile.py"]:
        t = built.mtime_ns(rel) + shift_s * 1_000_000_000
        os.utime(built.path(rel), ns=(t, t))
    assert built.build().ran == []
    assert built.build().ran == []  # and the new stats were recorded, not a one-off


def test_given_a_built_project_when_a_source_is_rewritten_with_the_same_bytes_then_nothing_runs(
    built,
):
    built.write("src/a.txt", "hello\n")
    assert built.build().ran == []


# -- content edits ------------------------------------------------------------------------------------


def test_given_a_built_project_when_a_source_changes_then_its_rule_and_consumers_run(built):
    built.write("src/a.txt", "bonjour\n")
    r = built.build()
    assert r.ran == ["out/a.txt", "out/ab.txt"]
    assert built.read("out/ab.txt") == "BONJOUR\nWORLD\n"


def test_given_an_edited_source_when_edited_back_before_building_then_nothing_runs(built):
    built.write("src/a.txt", "bonjour\n")
    built.write("src/a.txt", "hello\n")
    assert built.build().ran == []


def test_given_an_edit_that_was_built_when_reverted_then_the_rules_run_again(built):
    built.write("src/a.txt", "bonjour\n")
    built.build()
    built.write("src/a.txt", "hello\n")
    assert built.build().ran == ["out/a.txt", "out/ab.txt"]
    assert built.read("out/ab.txt") == "HELLO\nWORLD\n"


def test_given_a_source_that_grows_when_built_then_the_output_has_the_new_content(built):
    built.write("src/b.txt", "world\n" * 1000)
    assert built.build().ran == ["out/b.txt", "out/ab.txt"]
    assert built.read("out/ab.txt") == "HELLO\n" + "WORLD\n" * 1000


# -- early cutoff ---------------------------------------------------------------------------------------


def test_given_a_rule_rewriting_the_same_bytes_when_its_input_changes_then_consumers_do_not_run(
    built,
):
    built.write("src/a.txt", "HeLLo\n")  # upper() still writes HELLO
    r = built.build()
    assert r.ran == ["out/a.txt"]
    assert built.read("out/ab.txt") == "HELLO\nWORLD\n"
    assert built.build().ran == []


def test_given_a_chain_when_a_middle_rule_cuts_off_then_nothing_further_down_runs(project):
    project.pipefile(
        """
        def first_word(output, inputs):
            log(output)
            output.write_text(inputs[0].read_text().split()[0])

        rule("out/word.txt", ["src/s.txt"], first_word)
        rule("out/up.txt", ["out/word.txt"], upper)
        rule("out/up2.txt", ["out/up.txt"], cat)
        rule("out/sh.txt", ["out/up2.txt"], sh("echo out/sh.txt >> ran.log; cat {input} > {output}"))
        """
    )
    project.write("src/s.txt", "alpha beta\n")
    project.build()
    project.write("src/s.txt", "alpha gamma delta\n")
    assert project.build().ran == ["out/word.txt"]
    project.write("src/s.txt", "omega\n")
    assert project.build().ran == ["out/word.txt", "out/up.txt", "out/up2.txt", "out/sh.txt"]
    assert project.read("out/sh.txt") == "OMEGA"


def test_given_a_sh_rule_rewriting_the_same_bytes_when_rerun_then_consumers_do_not_run(project):
    project.pipefile(
        """
        rule("out/n.txt", ["src/s.txt"], sh("echo out/n.txt >> ran.log; wc -l < {input} > {output}"))
        rule("out/c.txt", ["out/n.txt"], cat)
        """
    )
    project.write("src/s.txt", "a\nb\n")
    project.build()
    project.write("src/s.txt", "c\nd\n")
    assert project.build().ran == ["out/n.txt"]


# -- racy timestamps --------------------------------------------------------------------------------------


def test_given_a_same_size_source_edit_with_the_mtime_put_back_when_built_then_the_rule_runs(
    built,
):
    old = built.mtime_ns("src/a.txt")
    built.write("src/a.txt", "HOWDY\n")  # same size as "hello\n"
    os.utime(built.path("src/a.txt"), ns=(old, old))
    assert built.mtime_ns("src/a.txt") == old
    assert built.build().ran == ["out/a.txt", "out/ab.txt"]
    assert built.read("out/ab.txt") == "HOWDY\nWORLD\n"


def test_given_a_source_written_just_before_the_build_when_edited_same_size_right_after_then_rebuilt(
    chain,
):
    # The source's mtime is within a timestamp tick or two of when the build read it: only a
    # re-hash can tell the next same-size edit (mtime put back) from the recorded content.
    chain.write("src/a.txt", "hello\n")
    chain.build()
    old = chain.mtime_ns("src/a.txt")
    chain.write("src/a.txt", "jello\n")
    os.utime(chain.path("src/a.txt"), ns=(old, old))
    assert chain.build().ran == ["out/a.txt", "out/ab.txt"]
    assert chain.read("out/a.txt") == "JELLO\n"


def test_given_a_same_size_output_edit_with_the_mtime_put_back_when_built_then_the_rule_runs(
    built,
):
    old = built.mtime_ns("out/a.txt")
    built.write("out/a.txt", "XXXXX\n")
    os.utime(built.path("out/a.txt"), ns=(old, old))
    assert built.build().ran == ["out/a.txt"]
    assert built.read("out/a.txt") == "HELLO\n"


def test_given_repeated_same_size_edits_with_the_mtime_put_back_when_built_each_time_then_never_missed(
    built,
):
    old = built.mtime_ns("src/b.txt")
    for text in ["wOrld\n", "WORLD\n", "vorld\n", "world\n"]:
        built.write("src/b.txt", text)
        os.utime(built.path("src/b.txt"), ns=(old, old))
        built.build()
        assert built.read("out/b.txt") == text.upper()
        assert built.read("out/ab.txt") == "HELLO\n" + text.upper()


def test_given_a_source_replaced_by_another_file_with_the_same_size_and_mtime_then_the_rule_runs(
    built,
):
    old = built.mtime_ns("src/a.txt")
    replacement = built.write("src/a.txt.new", "HOWDY\n")
    os.utime(replacement, ns=(old, old))
    os.replace(replacement, built.path("src/a.txt"))  # as an editor saving atomically does
    assert built.build().ran == ["out/a.txt", "out/ab.txt"]
    assert built.read("out/a.txt") == "HOWDY\n"


def test_given_a_large_source_when_one_byte_in_the_middle_changes_with_the_mtime_put_back_then_rebuilt(
    project,
):
    project.pipefile('rule("out/big.txt", ["src/big.bin"], cat)\n')
    data = bytearray(os.urandom(3 * 1024 * 1024 + 17))
    project.write("src/big.bin", bytes(data))
    project.build()
    old = project.mtime_ns("src/big.bin")
    data[len(data) // 2] ^= 0xFF
    project.write("src/big.bin", bytes(data))
    os.utime(project.path("src/big.bin"), ns=(old, old))
    assert project.build().ran == ["out/big.txt"]
    assert project.path("out/big.txt").read_bytes() == bytes(data)
    assert project.build().ran == []


def test_given_empty_sources_and_outputs_when_built_again_then_nothing_runs(project):
    project.pipefile(
        """
        rule("out/e.txt", ["src/e.txt"], upper)
        rule("out/f.txt", ["out/e.txt"], cat)
        """
    )
    project.write("src/e.txt", "")
    assert project.build().ran == ["out/e.txt", "out/f.txt"]
    assert project.read("out/f.txt") == ""
    assert project.build().ran == []
    project.write("src/e.txt", "now something\n")
    assert project.build().ran == ["out/e.txt", "out/f.txt"]
    project.write("src/e.txt", "")
    assert project.build().ran == ["out/e.txt", "out/f.txt"]
    assert project.read("out/f.txt") == ""


# -- outputs deleted or edited by hand -----------------------------------------------------------------


def test_given_a_deleted_output_when_built_then_only_its_rule_runs(built):
    built.remove("out/a.txt")
    assert built.build().ran == ["out/a.txt"]  # same bytes again: out/ab.txt is not affected
    assert built.read("out/a.txt") == "HELLO\n"


def test_given_a_deleted_final_output_when_built_then_it_is_rebuilt(built):
    built.remove("out/ab.txt")
    assert built.build().ran == ["out/ab.txt"]
    assert built.read("out/ab.txt") == "HELLO\nWORLD\n"


def test_given_a_deleted_output_directory_when_built_then_everything_in_it_is_rebuilt(built):
    shutil.rmtree(built.path("out"))
    assert sorted(built.build().ran) == ["out/a.txt", "out/ab.txt", "out/b.txt"]
    assert built.read("out/ab.txt") == "HELLO\nWORLD\n"


def test_given_a_hand_edited_output_when_built_then_its_rule_runs_and_restores_it(built):
    built.write("out/a.txt", "edited by hand\n")
    assert built.build().ran == ["out/a.txt"]
    assert built.read("out/a.txt") == "HELLO\n"
    assert built.build().ran == []


def test_given_a_hand_edited_final_output_when_built_then_it_is_restored(built):
    built.write("out/ab.txt", "HELLO\n")
    assert built.build().ran == ["out/ab.txt"]
    assert built.read("out/ab.txt") == "HELLO\nWORLD\n"


def test_given_an_output_rewritten_by_hand_with_the_same_bytes_when_built_then_nothing_runs(built):
    built.write("out/a.txt", "HELLO\n")
    assert built.build().ran == []


# -- §2 item 5: the action changed --------------------------------------------------------------------

ACTIONS = '''
SUFFIX = "!"
WIDTHS = {"a": 3}
UNUSED = "x"


def helper2(text):
    return text + SUFFIX


def helper1(text):
    return helper2(text.upper())


def shout(output, inputs):
    log(output)
    output.write_text(helper1(inputs[0].read_text()))


def pad(output, inputs, fill="."):
    log(output)
    output.write_text(inputs[0].read_text().ljust(WIDTHS["a"] + 5, fill))


def make_wrap(left):
    def wrap(output, inputs):
        log(output)
        output.write_text(left + inputs[0].read_text())
    return wrap


def strip(text):
    """Strip whitespace."""
    return text.strip()


STEPS = [strip]


def steps(output, inputs, params):
    log(output)
    text = inputs[0].read_text()
    for step in STEPS:
        text = step(text)
    output.write_text(text * params["n"])


rule("out/shout.txt", ["src/a.txt"], shout)
rule("out/pad.txt", ["src/a.txt"], pad)
rule("out/wrap.txt", ["src/a.txt"], make_wrap("<"))
rule("out/steps.txt", ["src/a.txt"], steps, params={"n": 2, "m": 0})
rule("out/sh.txt", ["src/a.txt", "src/b.txt"], sh("echo out/sh.txt >> ran.log; cat {inputs} > {output}"))
rule("out/cat.txt", ["src/a.txt", "src/b.txt"], cat)
'''

HELPERS = """
def helper2(text):
    return text + SUFFIX


def helper1(text):
    return helper2(text.upper())
"""

MOVED_HELPERS = """
def helper1(text):
    return helper2(text.upper())


def helper2(text):
    return text + SUFFIX
"""

# (what changes, text before, text after, the rules that must run)
ACTION_CHANGES = [
    (
        "action code",
        "output.write_text(helper1(inputs[0].read_text()))",
        "output.write_text(helper1(inputs[0].read_text().strip()))",
        ["out/shout.txt"],
    ),
    ("a constant in the action", 'WIDTHS["a"] + 5', 'WIDTHS["a"] + 6', ["out/pad.txt"]),
    ("a default value", 'fill=".")', 'fill="-")', ["out/pad.txt"]),
    ("a closure value", 'make_wrap("<")', 'make_wrap(">")', ["out/wrap.txt"]),
    ("a plain-data global read by a called helper", 'SUFFIX = "!"', 'SUFFIX = "?"', ["out/shout.txt"]),
    ("a dict global read by the action", 'WIDTHS = {"a": 3}', 'WIDTHS = {"a": 4}', ["out/pad.txt"]),
    ("a helper's code, two calls deep", "return text + SUFFIX", "return SUFFIX + text", ["out/shout.txt"]),
    ("a directly called helper's code", "helper2(text.upper())", "helper2(text.lower())", ["out/shout.txt"]),
    (
        "the code of a function read from a list global",
        "return text.strip()",
        "return text.strip().title()",
        ["out/steps.txt"],
    ),
    (
        "the functions in a list global",
        "STEPS = [strip]",
        "def twice(text):\n    return text * 2\n\n\nSTEPS = [strip, twice]",
        ["out/steps.txt"],
    ),
    ("a params value", '{"n": 2, "m": 0}', '{"n": 3, "m": 0}', ["out/steps.txt"]),
    ("a params key added", '{"n": 2, "m": 0}', '{"n": 2, "m": 0, "k": None}', ["out/steps.txt"]),
    ("the sh command", "cat {inputs} > {output}", "cat {inputs} {inputs} > {output}", ["out/sh.txt"]),
    (
        "the order of inputs",
        'rule("out/cat.txt", ["src/a.txt", "src/b.txt"], cat)',
        'rule("out/cat.txt", ["src/b.txt", "src/a.txt"], cat)',
        ["out/cat.txt"],
    ),
    (
        "an input added",
        'rule("out/cat.txt", ["src/a.txt", "src/b.txt"], cat)',
        'rule("out/cat.txt", ["src/a.txt", "src/b.txt", "src/c.txt"], cat)',
        ["out/cat.txt"],
    ),
    (
        "an input removed",
        'rule("out/cat.txt", ["src/a.txt", "src/b.txt"], cat)',
        'rule("out/cat.txt", ["src/a.txt"], cat)',
        ["out/cat.txt"],
    ),
    (
        "an input swapped for one with the same content",
        'rule("out/cat.txt", ["src/a.txt", "src/b.txt"], cat)',
        'rule("out/cat.txt", ["src/a.txt", "src/b2.txt"], cat)',
        ["out/cat.txt"],
    ),
    (
        "the order of a sh rule's inputs",
        '["src/a.txt", "src/b.txt"], sh(',
        '["src/b.txt", "src/a.txt"], sh(',
        ["out/sh.txt"],
    ),
]

NO_CHANGES = [
    ("a function moved", HELPERS, MOVED_HELPERS),
    (
        "blank lines and comments added above everything",
        'SUFFIX = "!"',
        '# Settings.\n\n\n\nSUFFIX = "!"  # what shouting ends with',
    ),
    (
        "a comment inside an action",
        "    log(output)\n    output.write_text(helper1(",
        "    log(output)\n    # shout it\n\n    output.write_text(helper1(",
    ),
    (
        "a docstring added",
        'def pad(output, inputs, fill="."):\n',
        'def pad(output, inputs, fill="."):\n    """Pad the input."""\n',
    ),
    (
        "a docstring added to a helper",
        "def helper2(text):\n",
        'def helper2(text):\n    """Add the suffix.\n\n    At length.\n    """\n',
    ),
    ("a docstring edited", '"""Strip whitespace."""', '"""Strip white space, both ends."""'),
    ("a docstring removed", '    """Strip whitespace."""\n', ""),
    ("a global no action reads", 'UNUSED = "x"', 'UNUSED = "y"'),
    ("params written in another key order", '{"n": 2, "m": 0}', '{"m": 0, "n": 2}'),
    (
        "rule declarations reordered",
        'rule("out/shout.txt", ["src/a.txt"], shout)\nrule("out/pad.txt", ["src/a.txt"], pad)',
        'rule("out/pad.txt", ["src/a.txt"], pad)\nrule("out/shout.txt", ["src/a.txt"], shout)',
    ),
    (
        "a rule added",
        'rule("out/cat.txt", ["src/a.txt", "src/b.txt"], cat)',
        'rule("out/cat.txt", ["src/a.txt", "src/b.txt"], cat)\nrule("out/new.txt", ["src/a.txt"], upper)',
    ),
]


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


@pytest.fixture(scope="module")
def actions_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ACTIONS built once; each test gets a copy (new inodes: the first build re-hashes all)."""
    base = tmp_path_factory.mktemp("actions")
    template = Project(base / "proj", base)
    template.root.mkdir()
    template.pipefile(ACTIONS)
    template.write("src/a.txt", "abc\n")
    template.write("src/b.txt", "def\n")
    template.write("src/b2.txt", "def\n")
    template.write("src/c.txt", "ghi\n")
    assert len(template.build().ran) == 6
    return template.root


@pytest.fixture
def actions(project: Project, actions_template: Path) -> Project:
    shutil.rmtree(project.root)
    shutil.copytree(actions_template, project.root)
    return project


def _rebuild_with(project: Project, old: str, new: str):
    text = project.read("Pipefile.py")
    project.write("Pipefile.py", _edit(text, old, new))
    return project.build()


@pytest.mark.parametrize(
    "old,new,expected", [c[1:] for c in ACTION_CHANGES], ids=[c[0] for c in ACTION_CHANGES]
)
def test_given_a_built_rule_when_its_action_inputs_or_params_change_then_exactly_it_runs(
    actions, old, new, expected
):
    r = _rebuild_with(actions, old, new)
    assert r.ran == expected
    assert actions.build().ran == []


@pytest.mark.parametrize("old,new", [c[1:] for c in NO_CHANGES], ids=[c[0] for c in NO_CHANGES])
def test_given_a_built_project_when_the_pipefile_changes_in_ways_that_do_not_matter_then_nothing_runs(
    actions, old, new
):
    r = _rebuild_with(actions, old, new)
    if "out/new.txt" in new:
        assert r.ran == ["out/new.txt"]
    else:
        assert r.ran == []


def test_given_an_action_change_that_changes_the_output_then_the_consumers_run_too(project):
    project.pipefile(
        """
        SUFFIX = "!"

        def shout(output, inputs):
            log(output)
            output.write_text(inputs[0].read_text().strip() + SUFFIX)

        rule("out/s.txt", ["src/a.txt"], shout)
        rule("out/t.txt", ["out/s.txt"], upper)
        """
    )
    project.write("src/a.txt", "hey\n")
    project.build()
    text = project.read("Pipefile.py")
    project.write("Pipefile.py", _edit(text, 'SUFFIX = "!"', 'SUFFIX = "?"'))
    assert project.build().ran == ["out/s.txt", "out/t.txt"]
    assert project.read("out/t.txt") == "HEY?"


def test_given_an_action_lambda_when_its_constant_changes_then_it_runs(project):
    project.pipefile('rule("out/l.txt", [], lambda output, inputs: output.write_text("v1"))\n')
    project.build()
    project.pipefile('rule("out/l.txt", [], lambda output, inputs: output.write_text("v2"))\n')
    project.build()
    assert project.read("out/l.txt") == "v2"


def test_given_a_recursive_helper_when_its_code_changes_then_the_rule_runs(project):
    body = """
    def count(n):
        return "" if n == 0 else str(n) + count(n - 1)

    def act(output, inputs):
        log(output)
        output.write_text(count(3))

    rule("out/r.txt", [], act)
    """
    project.pipefile(body)
    project.build()
    assert project.read("out/r.txt") == "321"
    project.pipefile(body.replace("str(n) + count(n - 1)", "count(n - 1) + str(n)"))
    assert project.build().ran == ["out/r.txt"]
    assert project.read("out/r.txt") == "123"
    assert project.build().ran == []


def test_given_a_path_global_when_it_changes_then_the_rule_reading_it_runs(project):
    body = """
    WHERE = Path("a")

    def act(output, inputs):
        log(output)
        output.write_text(str(WHERE))

    rule("out/p.txt", [], act)
    rule("out/q.txt", ["src/q.txt"], cat)
    """
    project.write("src/q.txt", "q")
    project.pipefile(body)
    project.build()
    project.pipefile(body.replace('Path("a")', 'Path("b")'))
    assert project.build().ran == ["out/p.txt"]
    assert project.read("out/p.txt") == "b"


# -- §2 item 7 and §5: forcing, and the state being deleted -------------------------------------------


def test_given_the_state_folder_deleted_when_built_then_every_needed_rule_runs_again(built):
    shutil.rmtree(built.path(".buildpipe"))
    r = built.build()
    assert sorted(r.ran) == ["out/a.txt", "out/ab.txt", "out/b.txt"]
    assert built.read("out/ab.txt") == "HELLO\nWORLD\n"
    assert built.build().ran == []


def test_given_the_state_folder_deleted_when_only_one_target_is_built_then_only_what_it_needs_runs(
    built,
):
    shutil.rmtree(built.path(".buildpipe"))
    assert built.build("out/a.txt").ran == ["out/a.txt"]
    assert sorted(built.build().ran) == ["out/ab.txt", "out/b.txt"]
    assert built.build().ran == []


def _set_schema(project, value: str) -> None:
    con = sqlite3.connect(project.path(".buildpipe/state.db"))
    with con:
        con.execute("UPDATE meta SET value=? WHERE key='schema'", (value,))
    con.close()


def test_given_state_of_an_older_schema_when_built_then_it_says_so_and_every_needed_rule_runs_once(
    built,
):
    _set_schema(built, "2")
    status = built.run("status", rc=1)
    assert "older buildpipe" in status.err and "stale out/ab.txt" in status.out
    r = built.build()
    assert "older buildpipe (schema 2)" in r.err
    assert sorted(r.ran) == ["out/a.txt", "out/ab.txt", "out/b.txt"]
    again = built.build()
    assert again.ran == [] and "older" not in again.err


def test_given_state_of_a_newer_schema_when_built_then_exit_2_and_the_state_is_kept(built):
    _set_schema(built, "99")
    r = built.run("build", rc=2)
    assert "schema 99" in r.err and r.ran == []
    _set_schema(built, "3")
    assert built.build().ran == []  # nothing recorded was lost


def test_given_the_state_folder_deleted_and_sources_edited_when_built_then_outputs_are_right(
    built,
):
    shutil.rmtree(built.path(".buildpipe"))
    built.write("src/b.txt", "there\n")
    built.build()
    assert built.read("out/ab.txt") == "HELLO\nTHERE\n"


def test_given_quick_successive_same_size_edits_when_each_is_built_then_every_edit_is_seen(built):
    # Edits in quick succession, each built at once: sizes stay equal, mtimes may share a tick.
    for i in range(5):
        text = f"edit{i}\n"
        built.write("src/a.txt", text)
        built.build()
        assert built.read("out/ab.txt") == text.upper() + "WORLD\n"
        time.sleep(0.001)


def test_given_state_of_the_first_schema_when_built_then_it_is_replaced_and_every_rule_runs(project):
    """Schema 1 had other tables: they go, whatever they were."""
    project.pipefile('rule("out/a.txt", ["src/a.txt"], upper)\n')
    project.write("src/a.txt", "a\n")
    project.path(".buildpipe").mkdir()
    con = sqlite3.connect(project.path(".buildpipe/state.db"))
    with con:
        con.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
        con.execute("INSERT INTO meta VALUES ('schema', '1')")
        con.execute("CREATE TABLE files(path TEXT PRIMARY KEY, data BLOB)")
        con.execute("CREATE TABLE rules(id INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB)")
        con.execute("INSERT INTO rules(data) VALUES (x'00')")
    con.close()
    status = project.run("status", rc=1)
    assert "older buildpipe (schema 1)" in status.err
    r = project.build()
    assert "older buildpipe (schema 1)" in r.err and r.ran == ["out/a.txt"]
    assert project.build().ran == []
