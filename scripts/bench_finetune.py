"""Fine-tuning against training from scratch: steps to reach the same validation quality.

    python scripts/bench_finetune.py --origin runs/quickstart [--steps 800] [--out runs/finetune]

Both runs train on the quickstart task drawn with another seed (`data.synthetic_seed`: other
numbers, the same language pair); one starts from scratch, the other from the origin run's best
checkpoint (`train.init_from`). Both validate every 50 steps. Reports each run's best validation
exact match and the first step at which the fine-tuned run reached the fresh run's best. Prints a
table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from minitx.run_dir import RunDir

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def train(run_dir: Path, steps: int, *extra: str) -> list[tuple[int, float]]:
    """(step, validation exact match) of a fresh `minitx train` into `run_dir`."""
    sets = [f"train.max_steps={steps}", "train.eval_every=50", "train.max_time=null"]
    sets += ["data.synthetic_seed=2", *extra]
    command = [sys.executable, "-m", "minitx", "train", str(CONFIG), "--run-dir", str(run_dir)]
    command += ["--fresh", "--yes", "--quiet", *[a for s in sets for a in ("--set", s)]]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    events = [json.loads(line) for line in RunDir(run_dir).metrics_file.read_text().splitlines()]
    return [(e["step"], e["exact_match"]) for e in events if e["event"] == "validation"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--origin", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--out", type=Path, default=Path("runs/finetune"))
    args = parser.parse_args()

    fresh = train(args.out / "fresh", args.steps)
    tuned = train(args.out / "tuned", args.steps, f"train.init_from={args.origin}")
    target = max(score for _, score in fresh)
    fresh_step = next(step for step, score in fresh if score >= target)
    tuned_step = next((step for step, score in tuned if score >= target), None)
    print(f"{'run':<10} {'best exact %':>12} {'first step at the fresh best':>30}")
    print(f"{'fresh':<10} {target:>12.2f} {fresh_step:>30}")
    print(f"{'tuned':<10} {max(s for _, s in tuned):>12.2f} {str(tuned_step):>30}")
    summary = {"fresh_best": target, "fresh_steps": fresh_step, "tuned_steps": tuned_step}
    print(
        json.dumps(
            {**summary, "tuned_best": max(s for _, s in tuned), "fresh": fresh, "tuned": tuned}
        )
    )


if __name__ == "__main__":
    main()
