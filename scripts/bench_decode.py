"""Decoding speed and BLEU of a trained run: greedy and beam 5, with and without the key/value cache.

    python scripts/bench_decode.py --run-dir runs/multi30k_de_en_raw [--split test] [--quick]

Without the cache the same search recomputes the whole prefix at every step; both must produce the
same translations. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from minitx.data.batching import encode_pairs
from minitx.data.run_data import load_split
from minitx.decode import translate
from minitx.evaluate import load_run
from minitx.metrics import translation_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--quick", action="store_true", help="first 100 sentences only")
    args = parser.parse_args()

    run = load_run(args.run_dir)
    pairs = encode_pairs(load_split(run.config, args.split), run.codecs.src, run.codecs.tgt)
    if args.quick:
        pairs = pairs.subset(100)
    d = run.config.decode

    results, outputs = {}, {}
    for name, beam, cache in (("greedy", 1, True), ("beam5", 5, True), ("beam5_nocache", 5, False)):
        start = time.perf_counter()
        hypotheses = translate(
            run.model, pairs.src_ids, run.codecs.src, run.codecs.tgt, run.device,
            run.config.run.dtype, beam_size=beam, batch_size=d.batch_size,
            length_penalty=d.length_penalty, max_len_ratio=d.max_len_ratio,
            max_len_offset=d.max_len_offset, use_cache=cache,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        outputs[name] = hypotheses
        results[f"{name}_sents_per_s"] = round(len(pairs) / seconds, 1)
        results[f"bleu_{name}"] = translation_scores(hypotheses, pairs.tgt_text)["bleu"]

    results["cached_equals_uncached"] = outputs["beam5"] == outputs["beam5_nocache"]
    print(f"{'search':<15} {'sents/s':>8} {'BLEU':>6}")
    for name in ("greedy", "beam5", "beam5_nocache"):
        print(f"{name:<15} {results[name + '_sents_per_s']:>8.1f} {results['bleu_' + name]:>6.2f}")
    print(
        json.dumps(
            {"split": args.split, "sentences": len(pairs), "dtype": run.config.run.dtype, **results}
        )
    )


if __name__ == "__main__":
    main()
