"""Alignment error rate of a trained quickstart run against the synthetic task's gold alignments.

    python scripts/bench_alignments.py --run-dir runs/quickstart [--sentences 500]

The quickstart pairs English number words with German ones, whose word alignments are known by
construction ("seventy two" → "zwei und siebzig": seventy-siebzig, two-zwei, "und" unaligned;
`minitx.data.synthetic.number_alignments`). For the test numbers (never seen in training) the
model translates with greedy decoding and aligns from the cross-attention of each decoder layer;
AER (Och & Ney, 2003) is measured on the sentences whose translation is exactly right, so that
gold and hypothesis have the same words. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace
from pathlib import Path

import minitx
from minitx.data.synthetic import (
    SPLIT_SIZES,
    _distinct_numbers,
    english_words,
    german_words,
    number_alignments,
)
from minitx.inference.alignments import alignment_error_rate


def test_numbers(train_size: int, seed: int) -> list[int]:
    """The numbers of the synthetic test split, as `number_pairs` draws them."""
    numbers = _distinct_numbers(random.Random(seed), train_size + sum(SPLIT_SIZES.values()))
    start = train_size + SPLIT_SIZES["validation"]
    return numbers[start : start + SPLIT_SIZES["test"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--sentences", type=int, default=500)
    args = parser.parse_args()

    run = minitx.load(args.run_dir)
    data = run.config.data
    if data.path != "synthetic":
        raise SystemExit(f"{args.run_dir} was not trained on the synthetic task")
    numbers = test_numbers(data.synthetic_size, data.synthetic_seed)[: args.sentences]
    sources = [english_words(n) for n in numbers]
    layers = len(run.engine.model.decoder.layers)
    results = {}
    for layer in range(layers):
        decode = replace(run.config.decode, beam_size=1, alignments=True, alignment_layer=layer)
        found = run.engine.translate(sources, decode)
        right = [i for i, n in enumerate(numbers) if found[i][0].text == german_words(n)]
        predicted = [set(found[i][0].alignment) for i in right]
        gold = [number_alignments(numbers[i]) for i in right]
        results[f"aer_layer{layer}"] = round(100 * alignment_error_rate(predicted, gold), 2)
        results["exact_match"] = round(100 * len(right) / len(numbers), 2)
    print(
        f"{'decoder layer':<14} {'AER %':>6}   ({results['exact_match']}% of {len(numbers)} exact)"
    )
    for layer in range(layers):
        print(f"{layer:<14} {results[f'aer_layer{layer}']:>6.2f}")
    print(json.dumps({"run_dir": str(args.run_dir), "sentences": len(numbers), **results}))


if __name__ == "__main__":
    main()
