"""Contract §2: incremental equals clean — after any sequence of edits and builds, every output has
the bytes a clean build from scratch would produce. A seeded random walk over the kinds of edits the
contract tracks, each step compared byte for byte with a clean build of a fresh copy."""

from __future__ import annotations

import os
import random
import shutil
import signal
import time

import pytest
from conftest import Project

TEMPLATE = '''
SEP = {sep!r}


def fmt(text):
    return text.{case}()


def join(output, inputs):
    log(output)
    output.write_text(SEP.join(fmt(p.read_text()) for p in inputs))


def repeat(output, inputs, params):
    log(output)
    output.write_text(inputs[0].read_text() * params["n"])


def first_word(output, inputs):
    log(output)
    words = inputs[0].read_text().split()
    output.write_text(words[0] if words else "-")


def split(outputs, inputs):
    log(outputs[0])
    text = "".join(p.read_text() for p in inputs)
    outputs[0].write_text(text[: len(text) // 2])
    outputs[1].write_text(text[len(text) // 2 :])


t = rule("tmp/t.txt", ["src/c.txt"], upper, temp=True)
rule("out/join.txt", {order!r}, join)
rule("out/rep.txt", ["out/join.txt"], repeat, params={{"n": {n}}})
rule("out/first.txt", ["out/rep.txt"], first_word)
rule(["out/x.txt", "out/y.txt"], [t, "src/a.txt"], split)
rule("out/sh.txt", ["out/first.txt", "out/y.txt"], sh({cmd!r}))
rule("out/all.txt", ["out/sh.txt", "out/x.txt", "out/rep.txt"], cat)
'''

CMDS = [
    "echo out/sh.txt >> ran.log; cat {inputs} > {output}",
    "echo out/sh.txt >> ran.log; cat {inputs} {inputs} > {output}",
]
TEXTS = ["a\n", "A\n", "b\n", "a b\n", "hello world\n", "x" * 40 + "\n", ""]
SOURCES = ["src/a.txt", "src/b.txt", "src/c.txt"]
OUTPUTS = ["out/join.txt", "out/rep.txt", "out/first.txt", "out/x.txt", "out/y.txt",
           "out/sh.txt", "out/all.txt"]
TARGETS = OUTPUTS + ["tmp/t.txt"]


class Walk:
    def __init__(self, project: Project, rng: random.Random) -> None:
        self.p = project
        self.rng = rng
        self.knobs = {"sep": "", "case": "upper", "order": ["src/a.txt", "src/b.txt"], "n": 1,
                      "cmd": CMDS[0]}
        self.write_pipefile()
        for s in SOURCES:
            project.write(s, rng.choice(TEXTS))

    def write_pipefile(self) -> None:
        self.p.pipefile(TEMPLATE.format(**self.knobs))

    def edit(self) -> str:
        p, rng, k = self.p, self.rng, self.knobs
        kind = rng.choice(["source", "source", "touch", "sep", "case", "order", "n", "cmd",
                           "delete-output", "edit-output", "delete-state", "partial-build",
                           "forced-build", "killed-build"])
        if kind == "source":
            src = rng.choice(SOURCES)
            p.write(src, rng.choice(TEXTS))
            return f"{src} := {p.read(src)!r}"
        if kind == "touch":
            rel = rng.choice(SOURCES + [o for o in OUTPUTS if p.exists(o)])
            t = p.mtime_ns(rel) + rng.choice([-1, 1]) * rng.randrange(1, 10**10)
            os.utime(p.path(rel), ns=(t, t))
            return f"touch {rel}"
        if kind == "sep":
            k["sep"] = rng.choice(["", "-", "+"])
        elif kind == "case":
            k["case"] = rng.choice(["upper", "lower", "title"])
        elif kind == "order":
            k["order"] = list(reversed(k["order"]))
        elif kind == "n":
            k["n"] = rng.randrange(1, 4)
        elif kind == "cmd":
            k["cmd"] = rng.choice(CMDS)
        elif kind == "delete-output":
            existing = [o for o in OUTPUTS if p.exists(o)]
            if existing:
                rel = rng.choice(existing)
                p.remove(rel)
                return f"delete {rel}"
            return "delete nothing"
        elif kind == "edit-output":
            existing = [o for o in OUTPUTS if p.exists(o)]
            if existing:
                rel = rng.choice(existing)
                p.write(rel, rng.choice(["junk\n", p.read(rel)[::-1]]))
                return f"edit {rel}"
            return "edit nothing"
        elif kind == "delete-state":
            shutil.rmtree(p.path(".buildpipe"), ignore_errors=True)
            return "delete .buildpipe"
        elif kind == "partial-build":
            target = rng.choice(TARGETS)
            p.build(target, "-j", str(rng.randrange(1, 4)))
            return f"build {target}"
        elif kind == "forced-build":
            target = rng.choice(TARGETS)
            p.build("--force", target)
            return f"build --force {target}"
        elif kind == "killed-build":
            delay = rng.uniform(0.0, 0.3)
            build = p.spawn("build", "-j", str(rng.randrange(1, 4)))
            time.sleep(delay)
            build.signal(signal.SIGKILL)
            build.wait()
            return f"build killed after {delay:.2f}s"
        self.write_pipefile()
        return f"{kind} := {k[kind]!r}"


def clean_build(project: Project, n: int) -> dict[str, bytes]:
    """Build a fresh copy of the project's Pipefile and sources from scratch; its outputs."""
    root = project.scratch / f"clean{n}"
    (root / "src").mkdir(parents=True)
    shutil.copy(project.path("Pipefile.py"), root / "Pipefile.py")
    for s in SOURCES:
        shutil.copy(project.path(s), root / s)
    clean = Project(root, project.scratch)
    clean.build()
    return clean.snapshot()


SEEDS = [1, 2] + [pytest.param(seed, marks=pytest.mark.slow) for seed in range(3, 23)]


@pytest.mark.parametrize("seed", SEEDS)
def test_given_a_random_sequence_of_edits_and_builds_then_outputs_always_equal_a_clean_build(
    project, seed
):
    rng = random.Random(seed)
    walk = Walk(project, rng)
    project.build()
    history = []
    for step in range(5):
        history.extend(walk.edit() for _ in range(rng.randrange(1, 4)))
        project.build("-j", str(rng.randrange(1, 4)))
        got, want = project.snapshot(), clean_build(project, step)
        assert got == want, f"seed {seed}, after: {history}"
    assert project.build().ran == [], f"seed {seed}, after: {history}"
