"""The oracle-constraint file of the usual lexically constrained decoding experiment: per sentence
of a split, 1 to 3 words of its reference that the run's unconstrained beam-5 output misses.

    python scripts/oracle_constraints.py --run-dir RUN [--split test] --out constraints.jsonl
    python scripts/oracle_constraints.py --run-dir RUN --exactly 3 --out three.jsonl

One jsonl line per pair of the split, in order, as `minitx eval --steer` and
scripts/bench_steering.py read it: {"constraints": [...]}, or {} where the output misses no
reference word. A word is a whitespace-separated token of the reference with its punctuation
stripped, compared case-sensitively. With --exactly N every sentence gets N words (the missed
ones first, then others of its reference), for measuring the cost of N constraints.
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

import minitx


def words(text: str) -> list[str]:
    stripped = (w.strip(string.punctuation + "“”„’") for w in text.split())
    return [w for w in stripped if w and any(c.isalpha() for c in w)]


def oracle(hypothesis: str, reference: str, count: int | None) -> list[str]:
    """Up to 3 reference words the hypothesis lacks (in reference order, each once), or exactly
    `count` words, missed ones first."""
    present = set(words(hypothesis))
    wanted = list(dict.fromkeys(words(reference)))
    missed = [w for w in wanted if w not in present]
    if count is None:
        return missed[:3]
    return (missed + [w for w in wanted if w in present])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--exactly", type=int, default=None)
    args = parser.parse_args()
    model = minitx.load(args.run_dir)
    pairs = model.task.load_split(model.config, args.split)
    sources, references = list(pairs["src"]), list(pairs["tgt"])
    found = model.translate(sources, beam_size=5)
    lines = []
    for translation, reference in zip(found, references, strict=True):
        chosen = oracle(translation.text, reference, args.exactly)
        lines.append(json.dumps({"constraints": chosen} if chosen else {}, ensure_ascii=False))
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with_some = sum(1 for line in lines if line != "{}")
    print(f"wrote {args.out}: {with_some} of {len(lines)} sentences with constraints")


if __name__ == "__main__":
    main()
