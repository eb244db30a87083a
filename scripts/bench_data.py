"""Data start-up at WMT size: Multi30k's training set repeated to N pairs, then `minitx train` to
its first step, fresh (tokenizer trained, corpus encoded) and cached (a resume that maps the cache).

    python scripts/bench_data.py [--pairs 0.29 1.45 4.5] [--data ../shared/data/multi30k]
                                 [--code DIR] [--throughput-steps 120] [--work DIR]

For each N (millions of pairs) it writes train.de.gz/train.en.gz into a temporary directory (the
validation and test files are linked), then measures: seconds from launch to the first step's log
line, the training process's peak RSS (its own rusage), and the size of RUN_DIR/cache. With
`--throughput-steps`, it also trains that many steps on the real Multi30k and reports target
tokens per second (the log windows after the first). `--code DIR` runs another checkout of minitx
(say, a worktree of an older commit) with the same config, so before/after ratios come from one
session on one machine. Prints a table and one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MULTI30K_TRAIN = 29_000
CONFIG = ROOT / "configs" / "multi30k_de_en_raw.yaml"


def make_corpus(source: Path, target: Path, pairs: int) -> None:
    """Multi30k's training pairs repeated (and cut) to `pairs` lines, plus links to val/test."""
    target.mkdir(parents=True, exist_ok=True)
    for side in ("de", "en"):
        with gzip.open(source / f"train.{side}.gz", "rt", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        repeated = itertools.islice(itertools.cycle(lines), pairs)
        with gzip.open(target / f"train.{side}.gz", "wt", encoding="utf-8", compresslevel=6) as out:
            out.writelines(line + "\n" for line in repeated)
        for split in ("val", "test_2016_flickr"):
            link = target / f"{split}.{side}.gz"
            if not link.exists():
                link.symlink_to((source / f"{split}.{side}.gz").resolve())


def train(code: Path, run_dir: Path, data: Path, steps: int, log_every: int) -> dict:
    """One `minitx train` up to `steps`: its metrics events and peak RSS (GiB)."""
    command = [sys.executable, "-m", "minitx", "train", str(CONFIG), "--run-dir", str(run_dir)]
    overrides = {
        "data.path": data,
        "train.max_steps": steps,
        "train.log_every": log_every,
        "train.eval_every": 100_000,
        "train.eval_max_sentences": 8,
    }
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    env = {**os.environ, "PYTHONPATH": str(code)}
    launched = time.time()
    process = subprocess.Popen(command, cwd=code, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"minitx train failed in {run_dir} (status {status})")
    metrics = run_dir / "metrics.jsonl"
    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    return {"launched": launched, "events": events, "peak_rss_gib": usage.ru_maxrss / 2**20}


def seconds_to_step(result: dict, step: int) -> float:
    logged = next(e for e in result["events"] if e["event"] == "train" and e["step"] == step)
    return logged["time"] - result["launched"]


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def startup(code: Path, source: Path, work: Path, millions: float) -> dict:
    pairs = round(millions * 1e6)
    data, run_dir = work / f"corpus_{pairs}", work / f"run_{pairs}"
    make_corpus(source, data, pairs)
    shutil.rmtree(run_dir, ignore_errors=True)
    fresh = train(code, run_dir, data, steps=1, log_every=1)
    cached = train(code, run_dir, data, steps=2, log_every=1)
    cache_bytes = directory_bytes(run_dir / "cache")
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    return {
        "pairs": pairs,
        "fresh_seconds_to_first_step": round(seconds_to_step(fresh, 1), 1),
        "fresh_peak_rss_gib": round(fresh["peak_rss_gib"], 2),
        "cached_seconds_to_first_step": round(seconds_to_step(cached, 2), 1),
        "cached_peak_rss_gib": round(cached["peak_rss_gib"], 2),
        "cache_mib": round(cache_bytes / 2**20, 1),
    }


def throughput(code: Path, source: Path, work: Path, steps: int) -> dict:
    """Target tokens per second on the real Multi30k, over the log windows after the first."""
    run_dir = work / "run_throughput"
    shutil.rmtree(run_dir, ignore_errors=True)
    log_every = max(steps // 6, 1)
    result = train(code, run_dir, source, steps=steps, log_every=log_every)
    shutil.rmtree(run_dir, ignore_errors=True)
    rates = [e["tgt_tokens_per_s"] for e in result["events"] if e["event"] == "train"][1:]
    return {
        "steps": steps,
        "tgt_tokens_per_s": round(statistics.median(rates), 1),
        f"seconds_to_step_{log_every}": round(seconds_to_step(result, log_every), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=float, nargs="*", default=[0.29, 1.45, 4.5])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k")
    parser.add_argument("--code", type=Path, default=ROOT, help="the minitx checkout to run")
    parser.add_argument("--throughput-steps", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: temp)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_data_", dir=args.work)).resolve()
    code = args.code.resolve()
    print(f"code: {code}; scratch: {work}", flush=True)
    try:
        for millions in args.pairs:
            row = startup(code, args.data.resolve(), work, millions)
            print(
                f"{row['pairs']:>9,} pairs: fresh {row['fresh_seconds_to_first_step']:7.1f} s, "
                f"{row['fresh_peak_rss_gib']:5.2f} GiB; cached "
                f"{row['cached_seconds_to_first_step']:6.1f} s, "
                f"{row['cached_peak_rss_gib']:5.2f} GiB; cache {row['cache_mib']:7.1f} MiB",
                flush=True,
            )
            print(json.dumps({"measure": "startup", **row}), flush=True)
        if args.throughput_steps:
            row = throughput(code, args.data.resolve(), work, args.throughput_steps)
            print(f"Multi30k: {row['tgt_tokens_per_s']:,.0f} target tokens/s (median window)")
            print(json.dumps({"measure": "throughput", **row}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
