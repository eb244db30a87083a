"""Decoding speed and BLEU of a trained run: greedy and beam 5, with and without the key/value cache.

    python scripts/bench_decode.py --run-dir runs/multi30k_de_en_raw [--split test] [--quick]

Without the cache the same search recomputes the whole prefix at every step; both must produce the
same translations. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import datasets

from minitx.config import DecodeConfig
from minitx.data.batching import encode_pairs, pad
from minitx.data.run_data import load_split
from minitx.decode import beam_search, greedy, translate
from minitx.evaluate import TrainedRun, load_run
from minitx.metrics import translation_scores


def translate_with(
    run: TrainedRun, src_ids: list[list[int]], cfg: DecodeConfig, use_cache: bool
) -> list[str]:
    """`minitx.decode.translate`, with the key/value cache on or off: the same length-sorted
    batches of `cfg.batch_size`, detokenized text in input order."""
    if use_cache:
        return translate(run.model, src_ids, run.codecs, cfg, run.compute)
    run.model.eval()
    search = greedy if cfg.beam_size == 1 else beam_search
    src_codec, tgt_codec = run.codecs.src, run.codecs.tgt
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]))
    outputs = [""] * len(src_ids)
    for start in range(0, len(order), cfg.batch_size):
        chosen = order[start : start + cfg.batch_size]
        src = pad([src_ids[i] + [src_codec.eos_id] for i in chosen], src_codec.pad_id)
        with run.compute.autocast():
            ids = search(
                run.model, src.to(run.compute.device), tgt_codec.special_ids, cfg, use_cache=False
            )
        for i, text in zip(chosen, tgt_codec.decode(ids), strict=True):
            outputs[i] = text
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--quick", action="store_true", help="first 100 sentences only")
    args = parser.parse_args()
    datasets.disable_progress_bars()  # as the CLI does: only the results are printed

    run = load_run(args.run_dir)
    pairs = encode_pairs(load_split(run.config, args.split), run.codecs.src, run.codecs.tgt)
    if args.quick:
        pairs = pairs.subset(100)
    d = run.config.decode

    results, outputs = {}, {}
    for name, beam, cache in (("greedy", 1, True), ("beam5", 5, True), ("beam5_nocache", 5, False)):
        start = time.perf_counter()
        hypotheses = translate_with(run, pairs.src_ids, replace(d, beam_size=beam), cache)
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
