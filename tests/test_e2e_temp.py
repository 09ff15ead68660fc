"""Contract §1 and §2: temp-file rules run only for a consumer that must run, and their files go
once every consumer in the build succeeded — unless the temp rule was named as a target."""

from __future__ import annotations

import shutil

import pytest
from conftest import Project

TEMP = """
big = rule("tmp/big.txt", ["src/a.txt"], upper, temp=True)
rule("out/x.txt", [big, "src/x.txt"], cat)
rule("out/y.txt", [big], cat)
rule("out/plain.txt", ["src/p.txt"], cat)


def check(output, inputs):
    log(output)
    output.write_text(f"temp file present while a later rule ran: {Path('tmp/big.txt').exists()}")


rule("out/check.txt", ["out/x.txt", "out/y.txt"], check)
"""


@pytest.fixture
def temp(project: Project) -> Project:
    project.pipefile(TEMP)
    project.write("src/a.txt", "big\n")
    project.write("src/x.txt", "x\n")
    project.write("src/p.txt", "p\n")
    return project


@pytest.fixture
def built(temp: Project) -> Project:
    r = temp.build("-j1")
    assert sorted(r.ran) == ["out/check.txt", "out/plain.txt", "out/x.txt", "out/y.txt", "tmp/big.txt"]
    return temp


def test_given_a_fresh_project_when_built_then_the_temp_rule_runs_first_and_its_file_is_deleted(
    built,
):
    assert not built.exists("tmp/big.txt")
    assert built.read("out/x.txt") == "BIG\nx\n"
    assert built.read("out/y.txt") == "BIG\n"


def test_given_consumers_that_finished_when_a_later_rule_runs_then_the_temp_file_is_already_gone(
    built,
):
    assert built.read("out/check.txt") == "temp file present while a later rule ran: False"


def test_given_a_built_project_with_its_temp_file_gone_when_built_then_nothing_runs(built):
    r = built.build()
    assert r.ran == []
    assert "nothing to do" in r.out.lower()
    assert not built.exists("tmp/big.txt")


def test_given_a_consumer_with_another_changed_input_when_built_then_the_temp_file_is_regenerated(
    built,
):
    built.write("src/x.txt", "x2\n")
    r = built.build("-j1")
    # out/check.txt reads out/x.txt, which changed; out/y.txt needs nothing new.
    assert r.ran == ["tmp/big.txt", "out/x.txt", "out/check.txt"]
    assert built.read("out/x.txt") == "BIG\nx2\n"
    assert not built.exists("tmp/big.txt")
    assert built.build().ran == []


def test_given_a_temp_rules_source_changes_when_built_then_it_and_its_consumers_run(built):
    built.write("src/a.txt", "bigger\n")
    r = built.build("-j1")
    assert sorted(r.ran) == ["out/check.txt", "out/x.txt", "out/y.txt", "tmp/big.txt"]
    assert r.ran[0] == "tmp/big.txt"
    assert built.read("out/y.txt") == "BIGGER\n"
    assert not built.exists("tmp/big.txt")
    assert built.build().ran == []


def test_given_a_temp_rule_that_rewrites_the_same_bytes_when_rerun_then_consumers_do_not_run(built):
    built.write("src/a.txt", "BiG\n")
    assert built.build().ran == ["tmp/big.txt"]
    assert not built.exists("tmp/big.txt")
    assert built.build().ran == []


def test_given_a_temp_rules_action_changes_when_built_then_it_and_its_consumers_run(built):
    text = built.read("Pipefile.py")
    text = text.replace('["src/a.txt"], upper, temp=True', '["src/a.txt"], cat, temp=True')
    built.write("Pipefile.py", text)
    r = built.build("-j1")
    assert sorted(r.ran) == ["out/check.txt", "out/x.txt", "out/y.txt", "tmp/big.txt"]
    assert built.read("out/y.txt") == "big\n"
    assert not built.exists("tmp/big.txt")


def test_given_a_temp_rule_named_as_target_when_built_then_its_file_is_kept(temp):
    r = temp.build("tmp/big.txt")
    assert r.ran == ["tmp/big.txt"]
    assert temp.read("tmp/big.txt") == "BIG\n"


def test_given_a_temp_rule_named_with_its_consumers_when_built_then_its_file_is_kept(temp):
    r = temp.build("-j1", "tmp/big.txt", "out/x.txt", "out/y.txt")
    assert r.ran == ["tmp/big.txt", "out/x.txt", "out/y.txt"]
    assert temp.read("tmp/big.txt") == "BIG\n"


def test_given_a_deleted_temp_file_when_it_is_named_as_target_then_it_is_regenerated(built):
    r = built.build("tmp/big.txt")
    assert r.ran == ["tmp/big.txt"]
    assert built.read("tmp/big.txt") == "BIG\n"


def test_given_a_kept_temp_file_when_its_consumers_are_built_then_it_does_not_run_again(temp):
    temp.build("tmp/big.txt")
    r = temp.build("-j1", "out/x.txt", "out/y.txt")
    assert r.ran == ["out/x.txt", "out/y.txt"]
    assert not temp.exists("tmp/big.txt")  # not named this time: gone once its consumers succeeded


def test_given_a_kept_temp_file_edited_by_hand_when_a_consumer_is_built_then_the_temp_rule_runs(
    built,
):
    built.build("tmp/big.txt")
    built.write("tmp/big.txt", "tampered\n")
    r = built.build("out/x.txt")
    assert r.ran == ["tmp/big.txt"]  # restored to what it was: out/x.txt needs nothing new
    assert built.read("out/x.txt") == "BIG\nx\n"


def test_given_a_failing_consumer_when_built_with_k_then_the_temp_file_is_kept_until_it_succeeds(
    project,
):
    project.pipefile(
        """
        big = rule("tmp/big.txt", ["src/a.txt"], upper, temp=True)

        def picky(output, inputs):
            log(output)
            if Path("fail.flag").exists():
                raise RuntimeError("asked to fail")
            output.write_bytes(inputs[0].read_bytes())

        rule("out/ok.txt", [big], cat)
        rule("out/picky.txt", [big], picky)
        """
    )
    project.write("src/a.txt", "a\n")
    project.write("fail.flag", "")
    r = project.build("-k", "-j1", rc=1)
    assert r.ran == ["tmp/big.txt", "out/ok.txt", "out/picky.txt"]
    assert project.read("tmp/big.txt") == "A\n"  # a consumer failed: still needed
    project.remove("fail.flag")
    r = project.build()
    assert r.ran == ["out/picky.txt"]  # the kept temp file is up to date
    assert project.read("out/picky.txt") == "A\n"
    assert not project.exists("tmp/big.txt")


def test_given_a_temp_rule_no_one_consumes_when_everything_is_built_then_it_does_not_run(project):
    project.pipefile(
        """
        rule("tmp/orphan.txt", ["src/a.txt"], upper, temp=True)
        rule("out/a.txt", ["src/a.txt"], cat)
        """
    )
    project.write("src/a.txt", "a\n")
    assert project.build().ran == ["out/a.txt"]
    assert not project.exists("tmp/orphan.txt")


CHAIN = """
t1 = rule("tmp/t1.txt", ["src/a.txt"], upper, temp=True)
t2 = rule("tmp/t2.txt", [t1], cat, temp=True)
rule("out/o.txt", [t2, "src/b.txt"], cat)
rule("out/other.txt", ["src/b.txt"], cat)
"""


@pytest.fixture
def chain(project: Project) -> Project:
    project.pipefile(CHAIN)
    project.write("src/a.txt", "a\n")
    project.write("src/b.txt", "b\n")
    assert sorted(project.build("-j1").ran) == [
        "out/o.txt", "out/other.txt", "tmp/t1.txt", "tmp/t2.txt"
    ]
    assert not project.exists("tmp/t1.txt") and not project.exists("tmp/t2.txt")
    return project


def test_given_a_chain_of_temp_rules_when_built_again_then_nothing_runs(chain):
    assert chain.build().ran == []


def test_given_a_chain_of_temp_rules_when_the_consumer_must_run_then_the_whole_chain_is_regenerated(
    chain,
):
    chain.write("src/b.txt", "b2\n")
    r = chain.build("-j1")
    assert [x for x in r.ran if x != "out/other.txt"] == ["tmp/t1.txt", "tmp/t2.txt", "out/o.txt"]
    assert sorted(r.ran) == ["out/o.txt", "out/other.txt", "tmp/t1.txt", "tmp/t2.txt"]
    assert chain.read("out/o.txt") == "A\nb2\n"
    assert not chain.exists("tmp/t1.txt") and not chain.exists("tmp/t2.txt")


def test_given_a_chain_of_temp_rules_when_the_consumer_is_forced_then_the_chain_is_regenerated(chain):
    r = chain.build("-j1", "--force", "out/o.txt")
    assert r.ran == ["tmp/t1.txt", "tmp/t2.txt", "out/o.txt"]
    assert chain.read("out/o.txt") == "A\nb\n"
    assert not chain.exists("tmp/t1.txt") and not chain.exists("tmp/t2.txt")


def test_given_a_chain_of_temp_rules_when_the_first_ones_source_changes_then_everything_after_runs(
    chain,
):
    chain.write("src/a.txt", "z\n")
    assert chain.build("-j1").ran == ["tmp/t1.txt", "tmp/t2.txt", "out/o.txt"]
    assert chain.read("out/o.txt") == "Z\nb\n"


def test_given_a_chain_of_temp_rules_when_the_state_is_deleted_then_the_chain_runs_again(chain):
    shutil.rmtree(chain.path(".buildpipe"))
    assert sorted(chain.build("-j1").ran) == [
        "out/o.txt", "out/other.txt", "tmp/t1.txt", "tmp/t2.txt"
    ]
    assert chain.build().ran == []


def test_given_missing_temp_files_when_dry_run_then_nothing_would_run(chain):
    r = chain.build("-n")
    assert "would run" not in r.out
    assert "nothing to do" in r.out.lower()
