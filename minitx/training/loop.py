"""train(): one training run's lifecycle, set-up → steps (log, validate, checkpoint) → one stop decision.

`Training.__init__` sets up each component (compute, data, model and trainer, metrics log,
resume); `Training.run` is the loop; `_step` is one step with its bookkeeping; `_stop_decision` is
the one place that decides to stop (limits, patience, signals, agreement between ranks); `_finish`
saves and says why it stopped.

Under torchrun the same code runs in every process: each step's group of batches is split between
the ranks, DistributedDataParallel all-reduces the gradients, rank 0 alone validates and writes,
and the ranks agree every step on whether to stop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minitx import runtime
from minitx.config import Config, parse_duration
from minitx.data.prefetch import Prefetched
from minitx.data.run_data import RunData, load_run_data
from minitx.errors import ReportedElsewhere, TrainingInterrupted, UserError
from minitx.metrics import MetricsLog
from minitx.model.checkpoint import (
    check_free_space,
    find_checkpoint,
    link_checkpoint,
    load_weights,
    recover_checkpoints,
)
from minitx.progress import bar, log_to_file
from minitx.run_dir import RunDir, config_differences
from minitx.runtime import Compute
from minitx.tasks import configured, get_task
from minitx.training.average import average_snapshots
from minitx.training.distributed import Ranks
from minitx.training.origin import adopt_vocabulary, check_compatible, find_origin
from minitx.training.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepBatches:
    """One step's share of batches for this rank, with what the whole step (all ranks) holds."""

    batches: list  # Batch or LabelBatch
    n_targets: int  # loss terms over every rank's batches
    n_groups: int  # batches over every rank, skipped ones included


@dataclass(frozen=True)
class Stop:
    reason: str
    signal_number: int | None = None  # set when a signal asked to stop: save, then exit 128+N


def train(cfg: Config, run: RunDir, ranks: Ranks | None = None) -> dict:
    """Train (or resume) the run in `run`; return the final validation scores (rank 0; the other
    ranks of a torchrun group return {})."""
    ranks = ranks or Ranks(device=runtime.resolve_device(cfg.run.device))
    # Every status line of the run also goes to RUN_DIR/train.log, from rank 0.
    with log_to_file(run.train_log) if ranks.is_main else contextlib.nullcontext():
        return Training(cfg, run, ranks).run()


def is_better(score: float, best: float | None, metric: str, lower_is_better) -> bool:
    if not math.isfinite(score):
        return False
    if best is None:
        return True
    return score < best if metric in lower_is_better else score > best


class Training:
    def __init__(self, cfg: Config, run: RunDir, ranks: Ranks):
        runtime.set_threads(cfg.run.threads)
        runtime.seed_everything(cfg.run.seed, cfg.run.deterministic)
        runtime.use_fast_matmuls(ranks.device)
        # `auto` is settled here and saved resolved in config.yaml, so the run says what it used.
        self.dtype_choice = " chosen by run.dtype auto" if cfg.run.dtype == "auto" else ""
        cfg = runtime.with_resolved_dtype(cfg, ranks.device)
        runtime.warn_if_slow_dtype(cfg.run.dtype, ranks.device)
        cfg = configured(cfg)
        self.task = get_task(cfg.task)
        self.cfg, self.run_dir, self.ranks = cfg, run, ranks
        self.compute = Compute(ranks.device, cfg.run.dtype)
        self.max_time = parse_duration(cfg.train.max_time) if cfg.train.max_time else math.inf
        ranks.main_only(lambda: recover_checkpoints(run.checkpoints_dir))
        self.resumed_from = find_checkpoint(run.checkpoint("last"))
        self.origin = self._find_origin() if self.resumed_from is None else None
        # Rank 0 first: it may train and save the tokenizer, which the other ranks then load.
        self.data: RunData = ranks.main_first(
            lambda: load_run_data(cfg, run, ("train", "validation"), self.task, ranks.is_main)
        )
        model = self.task.build_model(cfg, self.data.codecs, self.data.labels)
        if self.origin is not None:  # fine-tuning: the earlier run's weights, fresh optimizer
            load_weights(self.origin, model, torch.device("cpu"))
        self.trainer = Trainer(model, cfg.train, self.compute, ranks, self.max_time)
        self.n_params = sum(p.numel() for p in model.parameters())
        ranks.main_only(lambda: check_free_space(run.checkpoints_dir, self.n_params))
        main = ranks.is_main
        self.log = MetricsLog(
            run.metrics_file if main else None,
            run.tensorboard_dir if cfg.run.tensorboard and main else None,
        )
        self.last_scores = self._resume() if self.resumed_from else {}
        self.last_validated = self.trainer.state.step if self.last_scores else -1
        if main:
            run.save_config(cfg)
        self._announce()
        # The steps since the last log line: this rank's loss (a resumed run's rank 0 starts from
        # the group's saved sum), the group's targets, and when the window (re)started.
        state = self.trainer.state
        self.window_loss = torch.full((), state.window_loss if main else 0.0, device=ranks.device)
        self.window_started = time.monotonic() - state.window_seconds
        self.started = time.monotonic() - state.elapsed

    def _find_origin(self) -> Path | None:
        """train.init_from: the checkpoint to start from, after checking it fits; its tokenizer
        (and label names) are copied into this run."""
        if not self.cfg.train.init_from:
            return None
        init_from = self.cfg.train.init_from
        # rank 0 first: an hf: origin is imported once, then read by every rank
        origin_run, checkpoint = self.ranks.main_first(lambda: find_origin(init_from, self.run_dir))
        check_compatible(self.cfg, origin_run, self.task)
        self.ranks.main_only(lambda: adopt_vocabulary(origin_run, self.run_dir))
        log.info(f"starting from the weights and tokenizer of {checkpoint} (fine-tuning)")
        return checkpoint

    def _resume(self) -> dict:
        scores = self.trainer.restore(self.resumed_from)
        if self.ranks.is_main:  # the others must not read what rank 0 rewrites
            # RunDir.prepare refused changes to data, tokenizer and model; the rest is noted here.
            previous = self.run_dir.config()
            changed = config_differences(previous, self.cfg, ("train", "decode", "run"))
            step = self.trainer.state.step
            self.log.write("resume", step=step, changed=changed)
            log.info(
                f"resuming {self.run_dir} from step {step} (epoch {self.trainer.state.epoch + 1})"
                + (f" with {'; '.join(changed)}" if changed else "")
            )
        return scores

    def _announce(self) -> None:
        cfg, data, ranks = self.cfg, self.data, self.ranks
        examples = len(data.splits["train"])
        classes = f", {len(data.labels)} classes" if data.labels else ""
        log.info(
            f"training a {cfg.task} model on {ranks.device} ({cfg.run.dtype}{self.dtype_choice}): "
            f"{self.n_params / 1e6:.1f}M parameters, {examples} training examples, vocabulary "
            f"{data.codecs.tgt.vocab_size}{classes}"
            + (f"; {ranks.world_size} processes" if ranks.distributed else "")
        )
        if self.resumed_from is None:
            self.log.write(
                "start",
                task=cfg.task,
                parameters=self.n_params,
                train_examples=examples,
                device=str(ranks.device),
                dtype=cfg.run.dtype,
                processes=ranks.world_size,
                init_from=str(self.origin) if self.origin else None,
            )

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> dict:
        state = self.trainer.state
        progress = bar(
            total=self.cfg.train.max_steps, initial=state.step, desc="train", unit="step"
        )
        with runtime.StopRequest() as signals, progress:
            stop = self._stop_decision(signals)  # a resumed run may have nothing left to do
            while stop is None:
                groups, epoch = self._epoch_batches(), state.epoch
                with Prefetched(self._epoch_steps(groups, state.batch_in_epoch)) as steps:
                    while stop is None and state.epoch == epoch:
                        step = next(steps, None)
                        if step is None:  # fewer batches left than ranks: a resume with more
                            self.trainer.end_epoch()  # processes than the run saved with
                            break
                        self._step(step, len(groups), progress)
                        stop = self._stop_decision(signals)
        return self._finish(stop)

    def _epoch_batches(self) -> list[np.ndarray]:
        """This epoch's batches, as groups of example indices in training order (the same on
        every rank): their tensors are made later, as the steps need them."""
        cfg, state, world = self.cfg, self.trainer.state, self.ranks.world_size
        train = self.data.splits["train"]
        groups = train.batch_groups(cfg.train.batch_tokens, cfg.run.seed + state.epoch)
        if len(groups) < world:
            raise UserError(
                f"the training data makes {len(groups)} batches per epoch, fewer than the "
                f"{world} processes; lower train.batch_tokens or start fewer processes"
            )
        if state.step == 0 and state.batch_in_epoch == 0:
            padding = train.padding_fraction(groups)
            log.info(f"epoch of {len(groups)} batches, {100 * padding:.1f}% padding")
        return groups

    def _epoch_steps(self, groups: list[np.ndarray], start: int) -> Iterator[StepBatches]:
        """From batch `start` on, each step's batches for this rank, made as they are needed (on
        the data thread: see data/prefetch.py)."""
        train, ranks = self.data.splits["train"], self.ranks
        codec = self.data.codecs.tgt  # classification: the one codec (src and tgt are the same)
        world, per_step = ranks.world_size, self.cfg.train.accumulate * ranks.world_size
        pin = self.compute.device.type == "cuda"  # page-locked: copies to the GPU run async
        for first in range(start, len(groups), per_step):
            # A step takes `accumulate` batches per rank. Like DistributedSampler(drop_last=True),
            # an epoch skips its last batches when fewer than one per rank remain (other batches
            # each epoch: the order is reshuffled).
            group = groups[first : first + per_step]
            share = len(group) // world
            if share == 0:
                return
            # The sizes of every rank's batches are known here, so the global number of targets
            # needs no communication.
            n_targets = sum(train.n_targets(indices) for indices in group[: share * world])
            mine = group[ranks.rank * share : (ranks.rank + 1) * share]
            batches = [train.batch(indices.tolist(), codec) for indices in mine]
            if pin:
                batches = [batch.pin_memory() for batch in batches]
            yield StepBatches(batches, n_targets, len(group))

    def _step(self, step: StepBatches, n_groups: int, progress) -> None:
        """One optimizer step on this rank's batches of the step, then its log line and
        validation. `n_groups`: the batches of the epoch."""
        cfg, state, ranks = self.cfg.train, self.trainer.state, self.ranks
        world, n_targets = ranks.world_size, step.n_targets
        if ranks.distributed:
            # Every rank has the same weights and batch order; dropout must differ between ranks,
            # and a resumed run must draw the same masks again (only rank 0's random state is
            # saved): each rank seeds each step from the run's seed, its rank and the step.
            torch.manual_seed(hash((self.cfg.run.seed, ranks.rank, state.step)) % 2**63)
        # DDP averages gradients over ranks; dividing each rank's loss by targets / world makes
        # that average the gradient of the loss summed over the step's batches divided by their
        # targets: N ranks train like one process with N× the batch.
        loss_sum, grad_norm = self.trainer.step(step.batches, n_targets / world)
        if self.trainer.diverged(loss_sum, grad_norm):
            self._stop_on_divergence(loss_sum, grad_norm)
        lr = self.trainer.lr  # the rate this step used
        epoch_done = n_groups - (state.batch_in_epoch + step.n_groups) < world
        self.trainer.count_step(step.n_groups, n_targets, epoch_done)
        self.window_loss += loss_sum
        state.window_targets += n_targets
        state.elapsed = time.monotonic() - self.started
        progress.update(1)
        if state.step % cfg.log_every == 0:
            self._log_progress(lr, grad_norm, progress)
        if state.step % cfg.eval_every == 0:
            self._checkpoint_window()
            self.last_validated = state.step
            if ranks.is_main:
                self._validate()

    def _stop_decision(self, signals: runtime.StopRequest) -> Stop | None:
        """Why training stops after this step, the same on every rank; None to go on."""
        cfg, state = self.cfg.train, self.trainer.state
        reason = None
        if state.step >= cfg.max_steps:
            reason = f"reached train.max_steps ({cfg.max_steps})"
        elif state.epoch >= cfg.max_epochs:
            reason = f"reached train.max_epochs ({cfg.max_epochs})"
        elif state.elapsed >= self.max_time:
            reason = f"reached train.max_time ({self.max_time:g} s)"
        elif cfg.patience is not None and state.bad_validations >= cfg.patience:
            reason = f"no improvement in {cfg.patience} validations"
        signal_number = signals.signal_number
        if self.ranks.distributed:  # clocks, signals and validations are per rank: agree
            # (the slowest clock on every rank, so a time-bounded schedule sets one rate)
            flags = [signal_number is not None, reason is not None, state.elapsed]
            signalled, stopping, state.elapsed = self.ranks.maximum(flags)
            if signalled and signal_number is None:
                signal_number = signal.SIGTERM  # as torchrun forwards it
            if stopping and reason is None:
                reason = "stopped with the other ranks"
        if reason is None and signal_number is not None:
            return Stop(f"stopped by {signal.Signals(signal_number).name}", signal_number)
        return Stop(reason) if reason else None

    # --- logging, validation, checkpoints ---------------------------------------------------

    def _log_progress(self, lr: float, grad_norm: torch.Tensor, progress) -> None:
        state = self.trainer.state
        seconds = max(time.monotonic() - self.window_started, 1e-9)
        loss = float(self.ranks.sum(self.window_loss)) / max(state.window_targets, 1)
        throughput = state.window_targets / seconds
        self.log.write(
            "train",
            step=state.step,
            epoch=state.epoch,
            loss=round(loss, 4),
            lr=lr,
            grad_norm=round(float(grad_norm), 4),
            **{self.task.throughput_key: round(throughput, 1)},
            elapsed=round(state.elapsed, 1),
        )
        progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", per_s=f"{throughput:.0f}")
        self.window_loss = torch.zeros((), device=self.compute.device)
        state.window_targets, self.window_started = 0, time.monotonic()

    def _checkpoint_window(self) -> None:
        """Put the log window, summed over ranks, into the state a checkpoint saves (every rank
        calls this at the same step)."""
        state = self.trainer.state
        state.window_loss = float(self.ranks.sum(self.window_loss))
        state.window_seconds = time.monotonic() - self.window_started

    def _validate(self) -> None:
        state, metric = self.trainer.state, self.cfg.train.early_stopping_metric
        valid = self.data.splits["validation"]
        if self.cfg.train.eval_max_sentences:
            valid = valid.subset(self.cfg.train.eval_max_sentences)
        model, cfg, compute = self.trainer.model, self.cfg, self.compute
        scores = self.task.validation_scores(model, valid, self.data, cfg, compute)
        improved = is_better(scores[metric], state.best_score, metric, self.task.lower_is_better)
        if improved:
            state.best_score, state.bad_validations = scores[metric], 0
        else:
            state.bad_validations += 1
        self.log.write("validation", step=state.step, epoch=state.epoch, best=improved, **scores)
        shown = ", ".join(f"{key} {scores[key]:g}" for key in self.task.metrics)
        log.info(f"step {state.step}: validation {shown}" + (" (best)" if improved else ""))
        # best first: a crash between the two must not leave `last` claiming a best never saved
        if improved:
            self.trainer.save(self.run_dir.checkpoint("best"), resumable=False, scores=scores)
        last = self.run_dir.checkpoint("last")
        self.trainer.save(last, scores=scores)
        if self.cfg.train.keep_last > 1:  # `last` itself is never deleted
            link_checkpoint(last, self.run_dir.snapshot(state.step))
            for old in self.run_dir.snapshots()[: -self.cfg.train.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        self.last_scores = scores

    def _average(self, count: int) -> None:
        """train.average_last: the mean of the last `count` kept checkpoints, as `averaged`."""
        try:
            target = average_snapshots(self.run_dir, last=count)
        except UserError as exc:  # a run shorter than `count` validations: it still finished
            log.warning(f"no averaged checkpoint: {exc}")
            return
        log.info(f"averaged the last {count} checkpoints into {target}")

    def _stop_on_divergence(self, loss_sum: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Keep the last finite weights as a crash checkpoint (never `best`) and stop with the step.

        Every rank of a torchrun group comes here at the same step; rank 0 saves and reports."""
        crash, failed_step = self.run_dir.checkpoint("crash"), self.trainer.state.step + 1
        if self.ranks.is_main:
            self.trainer.save(crash, failed_step=failed_step)
        self.ranks.barrier()
        raise (UserError if self.ranks.is_main else ReportedElsewhere)(
            f"the loss or gradient became non-finite at step {failed_step} (loss "
            f"{float(loss_sum):.4g}, gradient norm {float(grad_norm):.4g}); the weights before it "
            f"are in {crash}; lower train.lr or raise train.warmup_steps"
        )

    def _finish(self, stop: Stop) -> dict:
        state, ranks = self.trainer.state, self.ranks
        self._checkpoint_window()  # the last checkpoint is written below
        if stop.signal_number is not None:
            last = self.run_dir.checkpoint("last")
            if ranks.is_main:
                self.trainer.save(last)
                self.log.write("end", step=state.step, epoch=state.epoch, reason=stop.reason)
            ranks.barrier()  # no rank exits (and has torchrun stop the rest) before the save
            raise TrainingInterrupted(
                stop.signal_number,
                f"{stop.reason} at step {state.step}; saved {last}; run the same command to resume",
            )
        if not ranks.is_main:
            return {}
        if self.last_validated != state.step:
            self._validate()
        if self.cfg.train.average_last:
            self._average(self.cfg.train.average_last)
        elapsed = round(state.elapsed, 1)
        self.log.write(
            "end", step=state.step, epoch=state.epoch, reason=stop.reason, elapsed=elapsed
        )
        metric = self.cfg.train.early_stopping_metric
        log.info(
            f"stopped at step {state.step}: {stop.reason}; best validation {metric} "
            f"{state.best_score}"
        )
        return self.last_scores
