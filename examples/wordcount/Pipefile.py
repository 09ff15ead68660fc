"""Word counts for a handful of short texts: tokenize, count, merge into one report.

    texts/NAME.txt --tokenize--> out/tokens/NAME.txt (temp) --count--> out/counts/NAME.json
    out/counts/*.json --report--> out/report.md + out/report.csv

Try `pipe build`, then edit one text and build again: only that text's chain reruns.
"""

import csv
import json
import re
from collections import Counter
from pathlib import Path

from buildpipe import alias, default, rule

# Module-level plain data read by an action is part of that action's fingerprint: edit one of
# these and exactly the rules that read it rerun.
WORD_PATTERN = r"[a-z]+(?:'[a-z]+)*"  # a plain string, not re.compile(...): objects are not tracked
STOPWORDS = set(
    """
    a after again all an and as at be been before but by each every for from had he her his if in
    into is it its just like more never no nobody not of on one over she so some than that the
    their them then there they this to was were when which who with would
    """.split()
)

# Tunable knobs, passed as params: changing one reruns only the rules that take it.
MIN_LENGTH = 4  # shorter words are not counted
TOP_N = 10  # words per text in the report


def words(text):
    """The lower-cased words of a text, apostrophes kept inside words ("baker's")."""
    return re.findall(WORD_PATTERN, text.lower().replace("\u2019", "'"))


def tokenize(output, inputs):
    """One token per line; stop words are dropped."""
    tokens = [w for w in words(inputs[0].read_text(encoding="utf-8")) if w not in STOPWORDS]
    output.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")


def count(output, inputs, params):
    """Word -> count for the tokens of one text, most frequent first, ties alphabetical."""
    tokens = inputs[0].read_text(encoding="utf-8").split()
    counts = Counter(t for t in tokens if len(t) >= params["min_length"])
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    data = {"tokens": len(tokens), "counted": sum(counts.values()), "counts": dict(ranked)}
    output.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


texts = sorted(Path("texts").glob("*.txt"))
counts = []
for text in texts:
    tokens = rule(f"out/tokens/{text.stem}.txt", inputs=[text], action=tokenize, temp=True)
    counts.append(
        rule(
            f"out/counts/{text.stem}.json",
            inputs=[tokens],
            action=count,
            params={"min_length": MIN_LENGTH},
        )
    )


@rule({"md": "out/report.md", "csv": "out/report.csv"}, inputs=counts, params={"top_n": TOP_N})
def report(output, inputs, params):
    """A Markdown summary per text, and every (text, word, count) row as CSV."""
    top_n = params["top_n"]
    totals = Counter()
    lines = ["# Word counts", ""]
    with output["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "word", "count"])
        for path in inputs:
            data = json.loads(path.read_text(encoding="utf-8"))
            name = path.stem
            totals.update(data["counts"])
            for word, n in data["counts"].items():
                writer.writerow([name, word, n])
            lines += [
                f"## {name}",
                "",
                f"{data['tokens']} tokens, {len(data['counts'])} distinct words counted.",
                "",
                "| word | count |",
                "| --- | ---: |",
            ]
            lines += [f"| {w} | {n} |" for w, n in list(data["counts"].items())[:top_n]]
            lines.append("")
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]
    lines += ["## All texts", "", "| word | count |", "| --- | ---: |"]
    lines += [f"| {w} | {n} |" for w, n in ranked]
    output["md"].write_text("\n".join(lines) + "\n", encoding="utf-8")


alias("counts", counts)
alias("all", [report])
default("all")
