"""`minitx sweep`: an Optuna study whose trials are ordinary minitx runs.

Each trial is `minitx train` in a child process, on the sweep's base config plus the trial's values
as `--set` overrides, into STUDY/trial-K. The sweep reads the run's metrics.jsonl as it grows:
each validation is reported to Optuna, whose median pruner may stop the run (SIGTERM: it saves
and exits like any interrupted run). The objective is the best validation value of the run's early-
stopping metric. The study lives in STUDY/study.db (SQLite), so a killed sweep started again goes
on: finished trials are kept, and a trial the kill interrupted is tried again with the same values
in the same run directory, which resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from minitx.config import apply_overrides, config_from_dict, read_config_file
from minitx.errors import UserError, require_extra
from minitx.run_dir import RunDir, held_exclusively
from minitx.runtime import END_WITH_PARENT
from minitx.sweep.space import Parameter, load_space, overrides
from minitx.tasks import configured, get_task

STUDY_NAME = "minitx"
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class SweepRequest:
    """What `minitx sweep` was asked: the base config (with --set applied), the space, where."""

    config: Path
    sets: tuple[str, ...]
    space: Path
    study_dir: Path
    trials: int
    time_per_trial: str | None = None
    jobs: int = 1


@dataclass(frozen=True)
class Sweep:
    """A study directory's fixed parts: the base config and space it was started with."""

    study_dir: Path
    base: dict  # the config as a raw mapping, overrides applied
    parameters: list[Parameter]
    metric: str
    lower_is_better: bool
    eval_every: int  # steps between validations: Optuna's steps are training steps

    @property
    def base_file(self) -> Path:
        return self.study_dir / "base.yaml"

    @property
    def storage(self) -> str:
        return f"sqlite:///{(self.study_dir / 'study.db').resolve()}"


def run_sweep(request: SweepRequest, say: Callable[[str], None]) -> Sweep:
    """Run trials until the study holds `request.trials` finished ones."""
    require_extra("optuna", "sweep")
    sweep = prepare(request)
    with held_exclusively(
        request.study_dir / "sweep.lock",
        f"{request.study_dir} is in use by another minitx sweep (pid {{holder}})",
    ):
        study = open_study(sweep)
        retried = _retry_interrupted(study, sweep)
        done = len(
            [
                t
                for t in study.trials
                if t.state.is_finished() and not t.user_attrs.get("interrupted")
            ]
        )
        remaining = request.trials - done
        say(
            f"study {request.study_dir}: {done} trial(s) finished"
            + (f", {retried} interrupted one(s) to resume" if retried else "")
            + (f", {remaining} to run" if remaining > 0 else ", nothing left to run")
        )
        if remaining > 0:
            objective = _Objective(sweep, request, say)
            study.optimize(objective, n_trials=remaining, n_jobs=request.jobs, catch=(TrialFailed,))
    return sweep


def prepare(request: SweepRequest) -> Sweep:
    """Check the config and the space, and write them into the study directory; a directory that
    already holds a study must have been started with the same ones."""
    if request.trials < 1 or request.jobs < 1:
        raise UserError("--trials and --jobs must be at least 1")
    sweep = make_sweep(request.study_dir, _base_config(request), request.space)
    space_file = request.study_dir / "space.yaml"
    space_text = request.space.read_text(encoding="utf-8")
    base_text = yaml.safe_dump(sweep.base, sort_keys=False, allow_unicode=True)
    if sweep.base_file.exists():
        if sweep.base_file.read_text(encoding="utf-8") != base_text or (
            space_file.read_text(encoding="utf-8") != space_text
        ):
            raise UserError(
                f"{request.study_dir} holds a sweep of another config or space; give a new "
                "--study directory, or the same config, --set and --space to go on"
            )
        return sweep
    request.study_dir.mkdir(parents=True, exist_ok=True)
    space_file.write_text(space_text, encoding="utf-8")
    sweep.base_file.write_text(base_text, encoding="utf-8")  # last: it marks a started study
    return sweep


def make_sweep(study_dir: Path, base: dict, space_file: Path) -> Sweep:
    """The sweep of a base config (a raw mapping) and a space file, both checked."""
    parameters = load_space(space_file, base)
    cfg = configured(config_from_dict(base))
    metric = cfg.train.early_stopping_metric or ""
    lower_is_better = metric in get_task(cfg.task).lower_is_better
    return Sweep(study_dir, base, parameters, metric, lower_is_better, cfg.train.eval_every)


def _base_config(request: SweepRequest) -> dict:
    raw = read_config_file(request.config)
    sets = list(request.sets)
    if request.time_per_trial:
        sets.append(f"train.max_time={request.time_per_trial}")
    base = apply_overrides(raw, sets)
    config_from_dict(base, source=str(request.config))  # one clear line if it is wrong
    return base


def open_study(sweep: Sweep) -> Any:
    """The study of a prepared sweep (Optuna's Study), created on first use."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints its own lines
    seed = int(sweep.base.get("run", {}).get("seed", 1) or 1)
    return optuna.create_study(
        storage=sweep.storage,
        study_name=STUDY_NAME,
        direction="minimize" if sweep.lower_is_better else "maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        # No pruning before five trials have finished (Optuna's default), nor before a trial's
        # third validation: the first ones measure how fast a setting starts, not where it ends
        # (on SST-2, pruning from the second validation stopped 7 of 10 trials).
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=5, n_warmup_steps=2 * sweep.eval_every + 1
        ),
        load_if_exists=True,
    )


def _retry_interrupted(study: Any, sweep: Sweep) -> int:
    """Trials a killed sweep left running, or an interrupt failed: each is marked failed (no
    other sweep holds the study: the lock says so) and queued again with its values and run
    directory, once."""
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState

    storage = RDBStorage(sweep.storage)
    study_id = storage.get_study_id_from_name(STUDY_NAME)
    retried_already = {t.user_attrs.get("retry_of") for t in study.trials}
    queued = 0
    for trial in study.trials:
        interrupted = trial.state == TrialState.RUNNING or (
            trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted")
        )
        if not interrupted or trial.number in retried_already:
            continue
        if trial.state == TrialState.RUNNING:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        attrs = {"run_dir": trial.user_attrs["run_dir"], "retry_of": trial.number}
        study.enqueue_trial(trial.params, user_attrs=attrs)
        queued += 1
    return queued


class TrialFailed(Exception):
    """The trial's run exited with an error: the trial fails and the sweep goes on."""


class _Objective:
    """One trial: its values, its `minitx train` child process, its validations."""

    def __init__(self, sweep: Sweep, request: SweepRequest, say: Callable[[str], None]):
        self.sweep, self.request, self.say = sweep, request, say
        self.lock = threading.Lock()  # one line printed at a time with --jobs

    def __call__(self, trial: Any) -> float:
        import optuna

        values = {p.key: p.suggest(trial) for p in self.sweep.parameters}
        run_dir = trial.user_attrs.get("run_dir") or str(
            self.sweep.study_dir / f"trial-{trial.number}"
        )
        trial.set_user_attr("run_dir", run_dir)
        shown = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
        )
        try:
            best = self._train(trial, run_dir, values)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except TrialFailed as exc:
            self._say(f"trial {trial.number} failed ({exc}): {shown}")
            raise
        except optuna.TrialPruned:
            self._say(f"trial {trial.number} pruned: {shown}")
            raise
        self._say(f"trial {trial.number}: {self.sweep.metric} {best:g}: {shown}")
        return best

    def _say(self, line: str) -> None:
        with self.lock:
            self.say(line)

    def _train(self, trial: Any, run_dir: str, values: dict) -> float:
        import optuna

        command = [sys.executable, "-m", "minitx", "train", str(self.sweep.base_file)]
        command += ["--run-dir", run_dir, "--quiet"]
        sets = overrides(values)
        if self.request.jobs > 1:  # the cores shared between the trials running at once
            sets.append(f"run.threads={max(1, (os.cpu_count() or 1) // self.request.jobs)}")
        command += [item for override in sets for item in ("--set", override)]
        log_file = Path(run_dir).with_name(Path(run_dir).name + ".log")
        if trial.user_attrs.get("retry_of") is not None:
            _wait_for_release(RunDir(run_dir))  # the killed sweep's child may still be saving
        with log_file.open("a", encoding="utf-8") as log:
            # The child ends with the sweep (runtime.end_with_parent): no orphaned run trains on
            # after a SIGKILL; it saves and stops, and the next sweep resumes it.
            env = {**os.environ, END_WITH_PARENT: str(os.getpid())}
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                scores = self._follow(trial, child, RunDir(run_dir).metrics_file)
            finally:
                if child.poll() is None:  # pruned, or the sweep itself is stopping
                    child.send_signal(signal.SIGTERM)
                    child.wait()
        if scores is None:
            raise optuna.TrialPruned()
        if child.returncode != 0:
            raise TrialFailed(_last_error(log_file, child.returncode))
        if not scores:
            raise TrialFailed(f"no validation of {self.sweep.metric} in {run_dir}")
        return min(scores) if self.sweep.lower_is_better else max(scores)

    def _follow(self, trial: Any, child: subprocess.Popen, metrics: Path) -> list[float] | None:
        """Report each validation as it is logged; None when the pruner stops the trial."""
        scores: list[float] = []
        seen = 0
        while True:
            finished = child.poll() is not None
            events = read_validations(metrics, self.sweep.metric)
            for step, value in events[seen:]:
                trial.report(value, step)
                scores.append(value)
                if trial.should_prune():
                    return None
            seen = len(events)
            if finished:
                return scores
            time.sleep(POLL_SECONDS)


def _wait_for_release(run: RunDir, seconds: float = 120.0) -> None:
    """Wait until no process holds the run's training lock (or give up and let train say so)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and run.lock_file.exists():
        try:
            with held_exclusively(run.lock_file, ""):
                return
        except UserError:
            time.sleep(POLL_SECONDS)


def read_validations(metrics: Path, metric: str) -> list[tuple[int, float]]:
    """(step, value) of each validation logged so far (a last line being written is skipped)."""
    try:
        lines = metrics.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "validation" and metric in event:
            found.append((int(event["step"]), float(event[metric])))
    return found


def _last_error(log_file: Path, returncode: int) -> str:
    lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    detail = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"exit code {returncode}: {detail}; see {log_file}"
