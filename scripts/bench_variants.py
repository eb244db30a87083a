"""Train the quickstart task once per attention variant and print exact match, BLEU and time.

Each variant is `minitx train configs/quickstart.yaml` with `--set` overrides, then
`minitx eval --split test` (500 held-out numbers, greedy). Prints a table and one JSON line.

    python scripts/bench_variants.py            # one axis at a time (about 20 minutes on 2 CPU cores)
    python scripts/bench_variants.py --product  # every score x every positions scheme (18 runs)
    python scripts/bench_variants.py --quick    # 150 steps each: a smoke check, not a result
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from minitx.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "scaled_dot + sinusoidal": [],
    "dot": ["model.attention=dot"],
    "cosine": ["model.attention=cosine"],
    "learned positions": ["model.positions=learned"],
    "rope": ["model.positions=rope"],
    "relative (T5 buckets)": ["model.positions=relative"],
    "alibi": ["model.positions=alibi"],
    "no positions": ["model.positions=none"],
    "GQA, 2 kv heads": ["model.n_kv_heads=2"],
    "multi-query, 1 kv head": ["model.n_kv_heads=1"],
    "encoder window 3": ["model.window=3"],
    "window 2, dilation 2": ["model.window=2", "model.dilation=2"],
}

SCORES = ("scaled_dot", "dot", "cosine")
POSITIONS = ("sinusoidal", "learned", "rope", "relative", "alibi", "none")
PRODUCT = {
    f"{score} + {positions}": [f"model.attention={score}", f"model.positions={positions}"]
    for score in SCORES
    for positions in POSITIONS
}


def minitx(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "minitx", *args], check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150 steps per variant")
    parser.add_argument("--out", default="runs/variants", help="parent of the run directories")
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    parser.add_argument(
        "--product", action="store_true", help="every score x positions pair instead"
    )
    args = parser.parse_args()
    rows = []
    for name, overrides in (PRODUCT if args.product else VARIANTS).items():
        if args.only and name not in args.only:
            continue
        run_dir = (
            ROOT
            / args.out
            / name.split(",")[0]
            .replace(" + ", "-")
            .replace(" ", "_")
            .replace("(", "")
            .replace(")", "")
        )
        sets = [
            *overrides,
            *(["train.max_steps=150", "train.eval_every=150"] if args.quick else []),
        ]
        started = time.perf_counter()
        minitx(
            "train",
            "configs/quickstart.yaml",
            "--run-dir",
            str(run_dir),
            "--fresh",
            "--yes",
            "--quiet",
            *[item for s in sets for item in ("--set", s)],
        )
        seconds = time.perf_counter() - started
        minitx("eval", str(run_dir), "--split", "test", "--quiet")
        report = json.loads(RunDir(run_dir).eval_files("test").report.read_text())
        rows.append(
            {
                "variant": name,
                "set": " ".join(overrides) or "(defaults)",
                "exact_match": report["exact_match"],
                "bleu": report["bleu"],
                "train_seconds": round(seconds, 1),
            }
        )
        print(
            f"{name:<26} exact match {report['exact_match']:6.2f}  BLEU {report['bleu']:6.2f}  {seconds:6.1f} s",
            flush=True,
        )
    print()
    print("| variant | overrides | exact match (%) | BLEU | train + start-up (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['variant']} | `{row['set']}` | {row['exact_match']:.2f} | {row['bleu']:.2f} | {row['train_seconds']:.0f} |"
        )
    print(json.dumps({"variants": rows}))


if __name__ == "__main__":
    main()
