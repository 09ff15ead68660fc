"""A tiny C program built with `sh` rules: compile, link, run it, and post-process its output.

src/*.c + include/numbers.h --cc -c--> out/obj/*.o --cc--> out/bin/numbers
out/bin/numbers LIMIT > out/table.txt --sort/cut/tr/uniq/wc--> out/longest.txt, out/primes.txt,
out/summary.txt
"""

import os
from pathlib import Path

from buildpipe import alias, default, rule, sh

# The command line is part of each rule's fingerprint: change CFLAGS (or run with CC=clang) and
# every object is recompiled.
CC = os.environ.get("CC", "cc")
CFLAGS = "-std=c99 -O2 -Wall -Wextra -Iinclude"

# buildpipe does not scan #include lines: every header a .c file includes is declared as an input.
HEADERS = ["include/numbers.h"]

objects = [
    rule(
        f"out/obj/{src.stem}.o",
        inputs=[src, *HEADERS],  # {input} is the first: the .c file
        action=sh(f"{CC} {CFLAGS} -c {{input}} -o {{output}}"),
    )
    for src in sorted(Path("src").glob("*.c"))
]

program = rule("out/bin/numbers", inputs=objects, action=sh(f"{CC} {{inputs}} -o {{output}}"))

# Run the program; its one argument comes from params (substituted shell-quoted).
table = rule(
    "out/table.txt",
    inputs=[program],
    action=sh("{input} {params[limit]} > {output}"),
    params={"limit": 1000},
)

# Post-processing with standard tools. Literal shell braces are written {{ and }}.
longest = rule(
    "out/longest.txt",
    inputs=[table],
    action=sh("sort -k2,2nr -k1,1n {input} | head -n 10 > {output}"),
)
primes = rule(
    "out/primes.txt",
    inputs=[table],
    action=sh(r"{{ grep ' prime$' {input} | cut -d' ' -f1 | tr '\n' ' '; echo; }} > {output}"),
)
summary = rule(
    "out/summary.txt",
    inputs=[table],
    action=sh(
        "{{ printf 'numbers: '; wc -l < {input};"
        " cut -d' ' -f3 {input} | sort | uniq -c | sort -k1,1nr; }} > {output}"
    ),
)

alias("program", [program])
alias("reports", [longest, primes, summary])
default("reports")
