"""Time from `minitx train` to the first optimizer step on Multi30k: a fresh run (tokenizer trained)
and a resumed one (tokenizer and checkpoint in the run directory). Prints one JSON line.

    python scripts/bench_startup.py [--data ../shared/data/multi30k]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from minitx.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]


def seconds_to_step(run_dir: Path, data: str, step: int) -> float:
    """Launch training up to `step`; the time from launch to that step's log line."""
    launched = time.time()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "minitx",
            "train",
            "configs/multi30k_de_en_raw.yaml",
            "--run-dir",
            str(run_dir),
            "--quiet",
            "--set",
            f"data.path={data}",
            "--set",
            f"train.max_steps={step}",
            "--set",
            "train.log_every=1",
            "--set",
            "train.eval_max_sentences=8",
        ],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    events = [json.loads(line) for line in RunDir(run_dir).metrics_file.read_text().splitlines()]
    logged = next(e for e in events if e["event"] == "train" and e["step"] == step)
    return logged["time"] - launched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    parser.add_argument("--run-dir", default="runs/bench_startup")
    args = parser.parse_args()
    run_dir = ROOT / args.run_dir
    shutil.rmtree(run_dir, ignore_errors=True)
    fresh = seconds_to_step(run_dir, args.data, 1)
    resumed = seconds_to_step(run_dir, args.data, 2)
    print(f"fresh run (trains the tokenizer):        {fresh:6.1f} s to the first step")
    print(f"resumed run (tokenizer, checkpoint kept): {resumed:6.1f} s to the first step")
    print(
        json.dumps(
            {
                "fresh_seconds_to_first_step": round(fresh, 2),
                "cached_seconds_to_first_step": round(resumed, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
