"""Decoding speed and BLEU of a trained run: greedy, beam 5, beam 5 with its 5-best list, sampling
(one and five samples per source), and beam 5 without the key/value cache; or, with `--engines`,
beam 5 in minitx's PyTorch loop against its CTranslate2 exports (fp32 and int8), on 1 and 2 threads.

    python scripts/bench_decode.py --run-dir runs/multi30k_de_en_raw [--split test] [--quick]
    python scripts/bench_decode.py --run-dir runs/multi30k_de_en_raw --engines

Without the cache the same search recomputes the whole prefix at every step; both must produce the
same translations. BLEU is of the first (best) hypothesis. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import datasets
import torch

import minitx
from minitx.data.batching import encode_pairs
from minitx.export.formats import EXPORT_FORMATS
from minitx.export.writer import export_model
from minitx.inference.decode import translate
from minitx.metrics import translation_scores

SEARCHES = {
    "greedy": {"beam_size": 1},
    "beam5": {"beam_size": 5},
    "beam5_nbest5": {"beam_size": 5, "n_best": 5},
    "sample1": {"sample": True, "seed": 1},
    "sample5_top_p0.9": {"sample": True, "n_best": 5, "top_p": 0.9, "seed": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--quick", action="store_true", help="first 100 sentences only")
    parser.add_argument("--repeats", type=int, default=3, help="time each search N times")
    parser.add_argument("--engines", action="store_true", help="PyTorch against CTranslate2")
    args = parser.parse_args()
    datasets.disable_progress_bars()  # as the CLI does: only the results are printed
    if args.engines:
        compare_engines(args)
        return

    run = minitx.load(args.run_dir)
    dataset = run.task.load_split(run.config, args.split)
    pairs = encode_pairs(dataset, run.codecs.src, run.codecs.tgt)
    if args.quick:
        pairs = pairs.subset(100)
    base = replace(run.config.decode, n_best=1, sample=False)

    results, outputs = {}, {}
    for name, options in [*SEARCHES.items(), ("beam5_nocache", {"beam_size": 5})]:
        cfg = replace(base, **options)
        seconds = math.inf
        for _ in range(args.repeats):  # the fastest of a few: the machine is shared and noisy
            start = time.perf_counter()
            cache = not name.endswith("nocache")
            network = run.engine.model
            found = translate(network, pairs.src_ids, run.codecs, cfg, run.compute, cache)
            best = [hypotheses[0].text for hypotheses in found]
            seconds = min(seconds, time.perf_counter() - start)
        outputs[name] = best
        results[f"{name}_sents_per_s"] = round(len(pairs) / seconds, 1)
        results[f"bleu_{name}"] = translation_scores(best, pairs.tgt_text)["bleu"]

    results["cached_equals_uncached"] = outputs["beam5"] == outputs["beam5_nocache"]
    results["nbest_first_equals_beam"] = outputs["beam5"] == outputs["beam5_nbest5"]
    print(f"{'search':<18} {'sents/s':>8} {'vs beam5':>9} {'BLEU':>6}")
    for name in [*SEARCHES, "beam5_nocache"]:
        speed = results[name + "_sents_per_s"]
        ratio = speed / results["beam5_sents_per_s"]
        print(f"{name:<18} {speed:>8.1f} {ratio:>8.2f}x {results['bleu_' + name]:>6.2f}")
    summary = {"split": args.split, "sentences": len(pairs), "dtype": run.config.run.dtype}
    print(json.dumps({**summary, **results}))


def compare_engines(args) -> None:
    """Beam 5 on the split: minitx in the run's dtype and in fp32, CTranslate2 fp32 and int8."""
    run = minitx.load(args.run_dir)
    split = run.task.load_split(run.config, args.split)
    texts, references = split["src"][:], split["tgt"][:]
    if args.quick:
        texts, references = texts[:100], references[:100]
    decode = replace(run.config.decode, beam_size=5, n_best=1, sample=False)
    fp32 = minitx.load(args.run_dir, overrides=("run.dtype=fp32",))
    engines = {f"minitx_{run.config.run.dtype}": run, "minitx_fp32": fp32}
    with tempfile.TemporaryDirectory() as scratch:
        for quantization in ("none", "int8"):
            out = Path(scratch) / quantization
            origin = {"run": str(args.run_dir), "checkpoint": "best", "step": run.checkpoint_step}
            ct2 = EXPORT_FORMATS["ctranslate2"]
            model, cfg, codecs = fp32.engine.model, fp32.config, fp32.codecs
            export_model(model, cfg, codecs, None, out, ct2, quantization, origin)
            name = "ctranslate2_" + ("fp32" if quantization == "none" else quantization)
            engines[name] = out
        results = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for name, engine in engines.items():
                if isinstance(engine, Path):  # an export: load it with this many threads
                    engine = minitx.load(engine, overrides=(f"run.threads={threads}",))
                seconds, best = _fastest(engine, texts, decode, args.repeats)
                key = f"{name}_{threads}t"
                results[key] = {
                    "sents_per_s": round(len(texts) / seconds, 1),
                    "bleu": translation_scores(best, references)["bleu"],
                }
    baseline = results[f"minitx_{run.config.run.dtype}_1t"]["sents_per_s"]
    print(f"{'engine, threads':<26} {'sents/s':>8} {'vs minitx 1t':>13} {'BLEU':>6}")
    for key, row in results.items():
        ratio = row["sents_per_s"] / baseline
        print(f"{key:<26} {row['sents_per_s']:>8.1f} {ratio:>12.2f}x {row['bleu']:>6.2f}")
    print(json.dumps({"split": args.split, "sentences": len(texts), "beam": 5, **results}))


def _fastest(trained, texts: list[str], decode, repeats: int) -> tuple[float, list[str]]:
    seconds, best = math.inf, []
    for _ in range(repeats):  # the fastest of a few: the machine is shared and noisy
        start = time.perf_counter()
        best = [found[0].text for found in trained.engine.translate(texts, decode)]
        seconds = min(seconds, time.perf_counter() - start)
    return seconds, best


if __name__ == "__main__":
    main()
