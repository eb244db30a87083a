"""Checkpoint averaging: the mean of a run's kept step_N checkpoints, as checkpoints/averaged."""

from __future__ import annotations

from pathlib import Path

from minitx.errors import UserError
from minitx.model.checkpoint import average_checkpoints
from minitx.run_dir import RunDir


def average_snapshots(run: RunDir, last: int | None = None, steps: list[int] | None = None) -> Path:
    """Average the `last` N kept snapshots, or those of `steps`, into checkpoints/averaged."""
    kept = run.snapshots()
    if steps:
        chosen = [run.snapshot(step) for step in steps]
        missing = [path.name for path in chosen if path not in kept]
        if missing:
            raise UserError(
                f"{run} has no checkpoint {', '.join(missing)}; kept: "
                f"{', '.join(p.name for p in kept) or 'none (set train.keep_last)'}"
            )
    else:
        count = last or 5
        if len(kept) < count:
            raise UserError(
                f"averaging the last {count} checkpoints needs {count} kept step_N checkpoints, and "
                f"{run} has {len(kept)}; train with train.keep_last >= {count}, or average fewer"
            )
        chosen = kept[-count:]
    if len(chosen) < 2:
        raise UserError("averaging needs at least 2 checkpoints")
    target = run.checkpoint("averaged")
    average_checkpoints(chosen, target)
    return target
