"""Security: what a hostile file name, symlink or path cannot make buildpipe do, through the real `pipe`.

- `sh` substitution is injection-proof for any file name (contract §1): the command receives exactly the
  names, and nothing else runs;
- `pipe clean` never deletes a source or anything outside the project, even through symlinks or `..`
  (contract §4);
- outputs declared outside the project are refused (exit 2) by every command;
- the state database and its lock follow the user's umask and are never world-writable (contract §5).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import Project, assert_no_internal_traceback

# -- sh substitution ----------------------------------------------------------------------------------

NASTY = [
    "src/it's.txt",
    'src/say "hi".txt',
    "src/$(touch pwned).txt",
    "src/`touch pwned`.txt",
    "src/a;touch pwned;.txt",
    "src/a && touch pwned.txt",
    "src/a | touch pwned.txt",
    "src/line\nbreak; touch pwned.txt",
    "src/tab\there.txt",
    "src/two  spaces .txt",
    "src/*.txt",
    "src/?.txt",
    "src/[ab].txt",
    "src/$HOME.txt",
    "src/${IFS}touch${IFS}pwned.txt",
    "src/back\\slash.txt",
    "src/{output}.txt",
    "src/!bang #hash.txt",
    "src/'\\''.txt",
    "src/é ünïcode.txt",
    "src/>redir<.txt",
    "-rf",
    "--help",
    "~",
    "-",
    os.fsdecode(b"src/\xff$(touch pwned).txt"),
]


def write_any(project: Project, rel: str, data: bytes) -> None:
    """Write a file whatever its name (non-UTF-8 names included)."""
    path = os.path.join(os.fsencode(project.root), os.fsencode(rel))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def read_any(project: Project, rel: str) -> bytes:
    with open(os.path.join(os.fsencode(project.root), os.fsencode(rel)), "rb") as f:
        return f.read()


def received(data: bytes) -> list[str]:
    """The NUL-separated arguments `printf '%s\\0' ...` wrote."""
    assert data.endswith(b"\0"), data
    return [os.fsdecode(a) for a in data[:-1].split(b"\0")]


def same_file_name(got: str, name: str) -> bool:
    """A name starting with a dash is passed as ./NAME (so no tool takes it for an option)."""
    return got == name or (name.startswith("-") and got == "./" + name)


def all_files(root: Path) -> set[str]:
    return {
        os.fsdecode(os.path.relpath(os.path.join(d, f), os.fsencode(root)))
        for d, _, fs in os.walk(os.fsencode(root))
        for f in fs
    }


def assert_nothing_pwned(project: Project) -> None:
    base = project.root.parent  # the test's tmp_path: the project and the scratch dir
    found = [p for p in all_files(base) if os.path.basename(p).startswith("pwned")]
    assert found == [], f"a command ran: {found}"
    assert not Path("pwned").exists()


def test_given_hostile_file_names_then_sh_receives_exactly_those_names_and_nothing_else_runs(project):
    for n, name in enumerate(NASTY):
        write_any(project, name, f"{n}\n".encode())
    write_any(project, "src/g1.txt", b"glob bait\n")  # a glob left unquoted would match these
    write_any(project, "src/a.txt", b"glob bait\n")
    outs = ["out/$(touch pwned) 1.txt", "out/;touch pwned;.txt", "out/`touch pwned`\n.txt", "out/'*'.txt"]
    evil_param = "$(touch pwned)'\"`touch pwned`;touch pwned -rf *"
    project.pipefile(
        f"""
        NASTY = {NASTY!r}
        rule("out/inputs.bin", NASTY, sh("printf '%s\\\\0' {{inputs}} > {{output}}"))
        for n, name in enumerate(NASTY):
            rule(f"out/one{{n}}.bin", [name],
                 sh("cat {{input}} > {{output}}; printf '%s\\\\0' {{input}} >> {{output}}"))
        rule({outs!r}, ["src/a.txt"],
             sh("printf '%s\\\\0' {{outputs}} > {{output}}; for f in {{outputs}}; do touch \\"$f\\"; done"))
        rule("out/params.bin", [], sh("printf '%s\\\\0' {{params[evil]}} {{params[n]}} > {{output}}"),
             params={{"evil": {evil_param!r}, "n": 7}})
        """
    )
    before = all_files(project.root)
    r = project.build("-j2")
    assert_no_internal_traceback(r.text, project.root)
    assert_nothing_pwned(project)
    # {inputs}: every name, exactly, in order
    got = received(read_any(project, "out/inputs.bin"))
    assert len(got) == len(NASTY)
    for g, name in zip(got, NASTY):
        assert same_file_name(g, name), (g, name)
    # {input} and {output}: the content of the file and the name
    for n, name in enumerate(NASTY):
        data = read_any(project, f"out/one{n}.bin")
        assert data.startswith(f"{n}\n".encode()), (name, data)
        (g,) = received(data[len(f"{n}\n") :])
        assert same_file_name(g, name), (g, name)
    # {outputs}: the hostile output names, and the loop over them created exactly those files
    assert received(read_any(project, outs[0])) == outs
    for o in outs:
        assert project.exists(o)
    # {params[k]}
    assert received(read_any(project, "out/params.bin")) == [evil_param, "7"]
    created = all_files(project.root) - before
    assert {c for c in created if not c.startswith(".buildpipe/")} == {
        "out/inputs.bin",
        "out/params.bin",
        *outs,
        *(f"out/one{n}.bin" for n in range(len(NASTY))),
    }
    assert project.build().ran == []
    assert_nothing_pwned(project)


@pytest.mark.parametrize("field", ["{input!r}", "{input!a}", "{inputs!r}", "{output!r}"])
def test_given_a_format_conversion_in_sh_then_it_cannot_defeat_the_quoting(project, field):
    """`{input!r}` would put the quoted name in double quotes, where $( ) and backticks run."""
    write_any(project, "src/$(touch pwned)`touch pwned`.txt", b"x\n")
    project.pipefile(
        f"""
        rule("out/$(touch pwned).txt", ["src/$(touch pwned)`touch pwned`.txt"],
             sh("echo {field} > out/x.txt; cp {{input}} {{output}}"))  # HERE
        """
    )
    r = project.build(rc=None)
    assert_nothing_pwned(project)
    assert_no_internal_traceback(r.text, project.root)
    # Refusing the conversion is the clear answer: an invalid Pipefile, at the sh line.
    assert r.rc == 2, r
    assert project.where("# HERE") in r.err or project.where("sh(") in r.err, r


# -- pipe clean ---------------------------------------------------------------------------------------


@pytest.fixture
def outside(project: Project) -> Path:
    """A directory outside the project holding a precious file."""
    d = project.scratch / "outside"
    d.mkdir()
    (d / "a.txt").write_text("precious\n")
    (d / "victim.txt").write_text("precious\n")
    return d


def test_given_an_output_directory_symlinked_outside_when_cleaned_then_nothing_outside_is_deleted(
    project, outside
):
    project.write("src/a.txt", "a\n")
    (project.root / "out").symlink_to(outside, target_is_directory=True)
    (project.root / "gen").mkdir()
    (project.root / "gen" / "deep").symlink_to(outside, target_is_directory=True)
    project.pipefile(
        """
        rule("out/a.txt", ["src/a.txt"], cat)
        rule("gen/deep/victim.txt", ["src/a.txt"], cat)
        rule("own/b.txt", ["src/a.txt"], cat)
        """
    )
    project.write("own/b.txt", "built before\n")
    r = project.run("clean")
    assert_no_internal_traceback(r.text, project.root)
    assert (outside / "a.txt").read_text() == "precious\n"
    assert (outside / "victim.txt").read_text() == "precious\n"
    assert "refused to delete out/a.txt" in r.err and "refused to delete gen/deep/victim.txt" in r.err
    assert not project.exists("own/b.txt"), "an ordinary output must still be cleaned"
    assert project.read("src/a.txt") == "a\n"
    r = project.run("clean", "out/a.txt")
    assert (outside / "a.txt").read_text() == "precious\n"


def test_given_an_output_that_is_a_symlink_to_an_outside_file_when_cleaned_then_the_file_survives(
    project, outside
):
    project.write("src/a.txt", "a\n")
    (project.root / "out").mkdir()
    (project.root / "out" / "a.txt").symlink_to(outside / "a.txt")
    (project.root / "hop").symlink_to(outside / "victim.txt")
    (project.root / "out" / "b.txt").symlink_to("../hop")  # a chain of links leading outside
    project.pipefile(
        """
        rule("out/a.txt", ["src/a.txt"], cat)
        rule("out/b.txt", ["src/a.txt"], cat)
        """
    )
    r = project.run("clean")
    assert_no_internal_traceback(r.text, project.root)
    assert (outside / "a.txt").read_text() == "precious\n"
    assert (outside / "victim.txt").read_text() == "precious\n"
    assert project.read("src/a.txt") == "a\n"


def test_given_an_output_directory_symlinked_to_the_sources_when_cleaned_then_no_source_is_deleted(
    project,
):
    project.write("src/a.txt", "a\n")
    (project.root / "alias").symlink_to("src", target_is_directory=True)
    project.pipefile(
        """
        rule("alias/a.txt", [], cat)           # the same file as the source src/a.txt
        rule("out/b.txt", ["src/a.txt"], cat)
        invariant("src/b.txt")
        rule("alias/b.txt", [], cat)           # the same file as the declared invariant src/b.txt
        """
    )
    project.write("src/b.txt", "b\n")
    r = project.run("clean")
    assert_no_internal_traceback(r.text, project.root)
    assert project.read("src/a.txt") == "a\n", "clean deleted a source through a symlink"
    assert project.read("src/b.txt") == "b\n", "clean deleted an invariant through a symlink"


def test_given_a_rule_claiming_the_pipefile_when_cleaned_then_the_pipefile_survives(project):
    project.write("src/a.txt", "a\n")
    pipefile = project.pipefile('rule("Pipefile.py", ["src/a.txt"], cat)\n')
    text = pipefile.read_text()
    r = project.run("clean", rc=None)
    assert pipefile.exists() and pipefile.read_text() == text, f"clean deleted the Pipefile\n{r}"
    assert r.rc == 2, r


@pytest.mark.parametrize(
    "output",
    ["../victim.txt", "out/../../victim.txt", "out/./../../victim.txt", "OUTSIDE_ABS", "OUTSIDE_PATH"],
)
def test_given_outputs_leading_outside_by_dotdot_when_cleaned_then_exit_2_and_nothing_is_deleted(
    project, output
):
    victim = project.root.parent / "victim.txt"
    victim.write_text("precious\n")
    spelled = {
        "OUTSIDE_ABS": repr(str(victim)),
        "OUTSIDE_PATH": 'Path(__file__).parent / ".." / "victim.txt"',
    }.get(output, repr(output))
    project.write("src/a.txt", "a\n")
    project.pipefile(
        f"""
        rule("out/ok.txt", ["src/a.txt"], cat)
        rule({spelled}, ["src/a.txt"], cat)  # HERE
        """
    )
    project.write("out/ok.txt", "built\n")
    r = project.run("clean", rc=2)
    assert_no_internal_traceback(r.err, project.root)
    assert project.where("# HERE") in r.err and "outside" in r.err, r
    assert victim.read_text() == "precious\n"
    assert project.read("out/ok.txt") == "built\n", "an invalid Pipefile must delete nothing"


def test_given_sources_or_outside_files_named_on_the_command_line_when_cleaned_then_they_survive(
    project, outside
):
    project.write("src/a.txt", "a\n")
    project.pipefile('rule("out/a.txt", ["src/a.txt"], cat)\ninvariant("src/inv.txt")\n')
    project.write("src/inv.txt", "i\n")
    project.build()
    rel_outside = os.path.relpath(outside / "victim.txt", project.root)
    for target in ["src/a.txt", "src/inv.txt", "Pipefile.py", rel_outside, str(outside / "a.txt")]:
        r = project.run("clean", target, rc=None)
        assert r.rc in (0, 2), r
        assert_no_internal_traceback(r.text, project.root)
    assert project.read("src/a.txt") == "a\n" and project.read("src/inv.txt") == "i\n"
    assert project.exists("Pipefile.py")
    assert (outside / "victim.txt").read_text() == "precious\n"
    assert (outside / "a.txt").read_text() == "precious\n"
    assert project.read("out/a.txt") == "a\n"


# -- outputs outside the project ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [("build",), ("build", "-n", "out/ok.txt"), ("status",), ("list",), ("clean",)]
)
def test_given_an_output_outside_the_project_then_every_command_refuses_it(project, args):
    victim = project.root.parent / "victim.txt"
    victim.write_text("precious\n")
    project.write("src/a.txt", "a\n")
    project.pipefile(
        """
        rule("out/ok.txt", ["src/a.txt"], cat)
        rule("../victim.txt", ["src/a.txt"], cat)  # HERE
        """
    )
    r = project.run(*args, rc=2)
    assert_no_internal_traceback(r.text, project.root)
    assert f"{project.where('# HERE')}: output ../victim.txt lies outside the project directory" in r.err
    assert "Traceback" not in r.text
    assert victim.read_text() == "precious\n"
    assert r.ran == [] and not project.exists("out")


# -- the state database's modes -------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077], ids=lambda m: f"umask-{m:03o}")
def test_given_a_umask_then_the_state_database_and_lock_follow_it_and_are_never_world_writable(
    project, umask
):
    project.write("src/a.txt", "a\n")
    project.pipefile('rule("out/a.txt", ["src/a.txt"], cat)\n')
    old = os.umask(umask)
    try:
        project.run("status", rc=1)  # a read-only first look may create the state too
        project.build()
    finally:
        os.umask(old)
    state = project.root / ".buildpipe"
    found = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in [state, *state.iterdir()]}
    assert {"state.db", "lock"} <= set(found), found
    for name, mode in found.items():
        allowed = (0o777 if name == ".buildpipe" else 0o666) & ~umask
        assert not mode & stat.S_IWOTH, f"{name} is world-writable: {mode:o}"
        assert not mode & ~allowed, f"{name} is {mode:o}, more than umask {umask:03o} allows"
        assert mode & stat.S_IRUSR and mode & stat.S_IWUSR, f"{name} is {mode:o}"
    assert found[".buildpipe"] == 0o777 & ~umask
    assert found["lock"] == 0o666 & ~umask


@pytest.mark.parametrize("name", ["lock", "state.db", "state.db-wal"])
def test_given_state_files_that_are_symlinks_then_their_targets_are_never_written(project, name):
    """A repository may ship `.buildpipe/NAME` as a symlink to a file of the user's: never write to it."""
    victim = project.scratch / "victim.txt"
    victim.write_text("precious\n")
    project.write("src/a.txt", "a\n")
    project.pipefile('rule("out/a.txt", ["src/a.txt"], cat)\n')
    (project.root / ".buildpipe").mkdir()
    (project.root / ".buildpipe" / name).symlink_to(victim)
    r = project.build(rc=None)
    assert_no_internal_traceback(r.text, project.root)
    assert r.rc in (0, 2), r
    assert victim.read_text() == "precious\n", f"pipe wrote through .buildpipe/{name}\n{r}"
    if r.rc == 2:
        assert ".buildpipe" in r.err and len(r.err.strip().splitlines()) == 1, r


def test_given_file_names_with_terminal_control_characters_then_pipe_never_prints_them_raw(project):
    """A name like `\\x1b]0;...\\x07` printed raw would drive the user's terminal (retitle it, clear it,
    hide text); the contract's plain output (NO_COLOR, not a terminal) holds no escape at all."""
    src = "src/\x1b[2Jclear\r.txt"
    out = "out/\x1b]0;owned\x07title.txt"
    project.write(src, "a\n")
    project.pipefile(f"rule({out!r}, [{src!r}], cat)\nrule('out/bad.txt', [{src!r}], sh('exit 3'))\n")
    runs = [project.build("-v", "-k", rc=1)]
    project.write(src, "b\n")
    for args in (("status",), ("list",), ("graph", "--format", "dot"), ("build", "-n")):
        runs.append(project.run(*args, rc=None))
    runs.append(project.run("clean"))
    for r in runs:
        assert_no_internal_traceback(r.text, project.root)
        for ch in "\x1b\x07\r":
            assert ch not in r.text, f"raw {ch!r} printed\n{r}"


def test_given_an_output_outside_explicitly_allowed_then_it_is_built_and_never_cleaned(project):
    outside = project.scratch / "allowed.txt"
    project.pipefile(
        f"""
        rule({str(outside)!r}, ["src/a.txt"], cat, allow_outside=True)
        rule("../sibling.txt", ["src/a.txt"], cat, allow_outside=True)
        """
    )
    project.write("src/a.txt", "a\n")
    assert sorted(project.build().ran) == ["../sibling.txt", str(outside)]
    assert outside.read_text() == "a\n"
    assert (project.root.parent / "sibling.txt").read_text() == "a\n"
    assert project.build().ran == []
    r = project.run("clean")
    assert outside.read_text() == "a\n", "clean deletes nothing outside the project"
    assert (project.root.parent / "sibling.txt").exists()
    assert "refused to delete" in r.err
