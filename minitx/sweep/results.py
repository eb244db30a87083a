"""What a study directory holds, read back: the trials table, the best trial's config as a YAML
file ready for `minitx train`, and the report page (`minitx sweep --show DIR`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from minitx.config import apply_overrides, config_from_dict
from minitx.errors import UserError, require_extra
from minitx.run_dir import RunDir
from minitx.sweep.space import overrides
from minitx.sweep.study import Sweep, make_sweep, open_study, read_validations


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # complete, pruned, fail, running, waiting
    value: float | None
    params: dict[str, Any]
    last_step: int | None  # the last validated step of its run
    run_dir: str


def load_sweep(study_dir: Path) -> Sweep:
    """A study directory written by `minitx sweep`, or one line saying it is not one."""
    require_extra("optuna", "sweep")
    base_file, space_file = study_dir / "base.yaml", study_dir / "space.yaml"
    if not base_file.is_file() or not space_file.is_file():
        raise UserError(f"{study_dir} is not a sweep directory (no base.yaml and space.yaml)")
    base = yaml.safe_load(base_file.read_text(encoding="utf-8"))
    return make_sweep(study_dir, base, space_file)


def trial_rows(sweep: Sweep) -> list[TrialRow]:
    rows = []
    for trial in open_study(sweep).trials:
        run_dir = trial.user_attrs.get("run_dir", "")
        steps = [step for step, _ in read_validations(RunDir(run_dir).metrics_file, sweep.metric)]
        rows.append(
            TrialRow(
                trial.number,
                trial.state.name.lower(),
                trial.value if trial.values else None,
                dict(trial.params),
                steps[-1] if steps else None,
                run_dir,
            )
        )
    return rows


def best_row(sweep: Sweep, rows: list[TrialRow]) -> TrialRow | None:
    scored = [row for row in rows if row.state == "complete" and row.value is not None]
    if not scored:
        return None
    pick = min if sweep.lower_is_better else max
    return pick(scored, key=lambda row: row.value)


def write_best_config(sweep: Sweep, best: TrialRow) -> Path:
    """The base config with the best trial's values: STUDY/best.yaml."""
    raw = apply_overrides(sweep.base, overrides(best.params))
    config_from_dict(raw, source="best.yaml")
    path = sweep.study_dir / "best.yaml"
    header = (
        f"# minitx sweep {sweep.study_dir}: trial {best.number}, validation {sweep.metric} "
        f"{best.value:g}\n"
    )
    path.write_text(header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), "utf-8")
    return path


def table(sweep: Sweep, rows: list[TrialRow]) -> str:
    """The trials as a text table, one line per trial."""
    keys = [p.key for p in sweep.parameters]
    header = ["trial", "state", sweep.metric, "steps", *keys]
    lines = [header]
    for row in rows:
        value = "" if row.value is None else f"{row.value:.4g}"
        steps = "" if row.last_step is None else str(row.last_step)
        params = [_shown(row.params.get(key, "")) for key in keys]
        lines.append([str(row.number), row.state, value, steps, *params])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
