"""Steerable decoding on a split (Multi30k test_2016_flickr for the docs): oracle constraints,
their cost, forced prefixes, and an ensemble, each against plain beam 5 of the same run.

    python scripts/oracle_constraints.py --run-dir RUN --out oracle.jsonl
    python scripts/oracle_constraints.py --run-dir RUN --exactly 3 --out three.jsonl
    python scripts/bench_steering.py --run-dir RUN --oracle oracle.jsonl --three three.jsonl \
        [--ensemble RUN2] [--split test]

Rows: plain beam 5; beam 5 with the oracle constraints (BLEU, and the share of constraints whose
word appears in the output); beam 5 with 3 constraints on every sentence (the cost); the first 2
reference words forced as a target prefix (BLEU of the rest of each sentence against the rest of
its reference); with --ensemble, each run alone and both as an ensemble, by mean of probabilities
and by mean of log-probabilities. Sentences/s is of one pass over the split, after a warm-up
batch. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import minitx
from minitx.inference.steering import Steering
from minitx.metrics import translation_scores


def timed(model, sources, steering=None, **options) -> tuple[list[str], float]:
    model.translate(sources[:32], steering=steering and steering[:32], **options)  # warm-up
    start = time.perf_counter()
    found = model.translate(sources, steering=steering, **options)
    seconds = time.perf_counter() - start
    return [t.text for t in found], len(sources) / seconds


def read_steering(path: Path) -> list[Steering | None]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Steering(constraints=tuple(json.loads(line).get("constraints", ()))) or None
            for line in lines]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--oracle", type=Path, required=True)
    parser.add_argument("--three", type=Path, required=True)
    parser.add_argument("--ensemble", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = minitx.load(args.run_dir)
    pairs = model.task.load_split(model.config, args.split)
    sources, references = list(pairs["src"]), list(pairs["tgt"])
    rows = []

    def row(name, hypotheses, speed, refs=references, **extra):
        scores = translation_scores(hypotheses, refs)
        rows.append({"setting": name, "bleu": scores["bleu"], "chrf": scores["chrf"],
                     "sentences_per_s": round(speed, 1), **extra})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    plain, speed = timed(model, sources, beam_size=5)
    row("beam 5", plain, speed)

    oracle = read_steering(args.oracle)
    steered, speed = timed(model, sources, beam_size=5, steering=oracle)
    asked = [(w, h) for s, h in zip(oracle, steered, strict=True) if s for w in s.constraints]
    met = sum(w in h for w, h in asked)
    row("beam 5, oracle constraints", steered, speed, constraints=len(asked),
        constraints_met_percent=round(100 * met / max(len(asked), 1), 2),
        sentences_constrained=sum(1 for s in oracle if s))  # fmt: skip

    three = read_steering(args.three)
    steered, speed = timed(model, sources, beam_size=5, steering=three)
    asked = [(w, h) for s, h in zip(three, steered, strict=True) if s for w in s.constraints]
    row("beam 5, 3 constraints per sentence", steered, speed,
        constraints_met_percent=round(100 * sum(w in h for w, h in asked) / len(asked), 2))  # fmt: skip

    prefixes = [" ".join(reference.split()[:2]) for reference in references]
    steered, speed = timed(model, sources, beam_size=5,
                           steering=[Steering(target_prefix=p) for p in prefixes])  # fmt: skip
    rest = [" ".join(h.split()[2:]) for h in steered]
    rest_refs = [" ".join(r.split()[2:]) for r in references]
    plain_rest = [" ".join(h.split()[2:]) for h in plain]
    row("beam 5, first 2 reference words forced: the rest", rest, speed, rest_refs)
    row("beam 5 unforced: the same words (all but its first 2)", plain_rest, 0.0, rest_refs)

    if args.ensemble is not None:
        other = minitx.load(args.ensemble)
        hypotheses, speed = timed(other, sources, beam_size=5)
        row(f"beam 5, {args.ensemble.name} alone", hypotheses, speed)
        both = minitx.load([args.run_dir, args.ensemble])
        for combine in ("mean_prob", "mean_log_prob"):
            hypotheses, speed = timed(both, sources, beam_size=5, ensemble_combine=combine)
            row(f"beam 5, ensemble ({combine})", hypotheses, speed)

    print()
    print(f"{'setting':58} {'BLEU':>6} {'chrF':>6} {'sent/s':>7}")
    for r in rows:
        print(f"{r['setting']:58} {r['bleu']:6.2f} {r['chrf']:6.2f} {r['sentences_per_s']:7.1f}")
    print(json.dumps({"run": str(args.run_dir), "split": args.split, "rows": rows}))


if __name__ == "__main__":
    main()
