"""Head pruning curves: the test score (beam 5 for translation, accuracy for classification) and
the speed of a run with 0, 20, 40 and 60% of the heads of each attention kind removed by
`minitx heads --prune` (importance measured on the first --limit validation examples).

    python scripts/bench_heads.py --run-dir runs/multi30k_de_en_raw [--limit 300] [--out DIR]

Prints a table and one JSON line. Speed is sentences (or texts) per second over the whole test
split (beam 5 for translation), the best of --repeats passes after a warm-up, with the run's
threads; each pruned run is written under --out (default: a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import datasets

import minitx
from minitx.heads.pruning import prune_run
from minitx.metrics import translation_scores
from minitx.model.transformer import attention_modules

SHARES = (0.0, 0.2, 0.4, 0.6)


def test_score(model: minitx.Model, repeats: int) -> tuple[float, float]:
    """(score, examples per second: the best of `repeats` timed passes after one warm-up pass over
    the first 100) on the test split."""
    split = model.task.load_split(model.config, "test")
    generates = model.task.generates_text
    inputs = list(split["src"] if generates else split["text"])

    def run(texts):
        return model.translate(texts, beam_size=5) if generates else model.predict(texts)

    run(inputs[:100])
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        found = run(inputs)
        seconds.append(time.perf_counter() - start)
    if generates:
        score = translation_scores([t.text for t in found], list(split["tgt"]))["bleu"]
    else:
        score = model.evaluate("test")["accuracy"]
    return score, len(inputs) / min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=300, help="validation examples for importance")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over test (best)")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_heads."))
    base = minitx.load(args.run_dir)
    # The first model a process times ran about 15% slower than the same model timed later (its
    # warm-up pass notwithstanding): the full model is timed again last, and its better time kept.
    score, first_speed = test_score(base, args.repeats)
    modules = attention_modules(base.engine.model)
    rows = [{"kind": "none", "share": 0.0, "removed": 0, "score": score, "per_s": 0.0}]
    for kind in sorted(
        {kind for kind, _ in modules}, key=["encoder_self", "decoder_self", "cross"].index
    ):
        total = sum(m.n_heads for (k, _), m in modules.items() if k == kind)
        for share in SHARES[1:]:
            count = round(share * total)
            target = out / f"{kind}_{count}"
            prune_run(
                minitx.load(args.run_dir), "validation", args.limit, kind, target, count=count
            )
            score, speed = test_score(minitx.load(target), args.repeats)
            rows.append(
                {
                    "kind": kind,
                    "share": share,
                    "removed": count,
                    "score": score,
                    "per_s": round(speed, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    _, last_speed = test_score(minitx.load(args.run_dir), args.repeats)
    rows[0]["per_s"] = round(max(first_speed, last_speed), 1)
    metric = "bleu (beam 5)" if base.task.generates_text else "accuracy"
    print(f"\n{'kind':>13} {'pruned':>7} {'heads':>6} {metric:>14} {'per s':>8}")
    for row in rows:
        print(
            f"{row['kind']:>13} {row['share']:>7.0%} {row['removed']:>6} {row['score']:>14} "
            f"{row['per_s']:>8}"
        )
    print(json.dumps({"run": str(args.run_dir), "limit": args.limit, "rows": rows}))


if __name__ == "__main__":
    main()
