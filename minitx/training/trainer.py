"""Trainer: the model with everything an optimizer step changes, one step, and saving and restoring
all of it (the weights in safetensors; optimizer, schedule, loss scaler, counters and RNGs in
trainer.pt).

Under torchrun the step runs the model through DistributedDataParallel, which all-reduces the
gradients; `torch.compile` wraps it when asked. Both share the model's weights, so saving,
validating and resuming use `model` itself.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from minitx.config import TrainConfig
from minitx.data.batching import Batch, LabelBatch
from minitx.errors import UserError
from minitx.model.checkpoint import load_meta, load_trainer_state, load_weights, save_checkpoint
from minitx.model.objective import logits_and_targets, summed_loss
from minitx.runtime import Compute
from minitx.training.distributed import Ranks
from minitx.training.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Counters that survive a resume (saved in trainer.pt with the optimizer and RNG states)."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    targets: int = 0  # loss terms trained on: target tokens (translation) or examples
    elapsed: float = 0.0  # training wall time in seconds, summed over resumes
    warmup_elapsed: float | None = None  # `elapsed` when warmup ended
    best_score: float | None = None
    bad_validations: int = 0  # validations since the best one, for early stopping
    # The steps since the last log line, summed over ranks, as of the last checkpoint: a resumed
    # run's first log line averages the same steps as an uninterrupted run's.
    window_loss: float = 0.0
    window_targets: int = 0
    window_seconds: float = 0.0


class Trainer:
    """Model, optimizer, learning-rate schedule, loss scaler and counters; `step` trains one step."""

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: TrainConfig,
        compute: Compute,
        ranks: Ranks,
        max_time: float = math.inf,
    ):
        self.cfg, self.compute, self.ranks = cfg, compute, ranks
        self.max_time = max_time  # seconds: train.max_time
        self.model = model.to(compute.device)
        cuda = compute.device.type == "cuda"
        self.optimizer = build_optimizer(self.model, cfg, fused=cuda)
        self.state = TrainState()  # before the scheduler, whose first rate reads it
        self.scheduler = build_scheduler(self.optimizer, cfg, self.time_progress)
        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none (a disabled
        # scaler passes everything through).
        self.scaler = torch.amp.GradScaler(compute.device.type, enabled=compute.dtype == "fp16")
        self.replica = self._replicate() if ranks.distributed else self.model
        self.step_model = torch.compile(self.replica) if cfg.compile else self.replica

    def _replicate(self) -> DistributedDataParallel:
        # The model's buffers are constants computed from the config (sinusoid table, rotary
        # frequencies, ALiBi slopes; no running statistics), and the sinusoid table grows on the
        # ranks that meet a longer batch: broadcasting rank 0's copy every step would be wasted
        # work at best and a shape mismatch at worst.
        # (Recent torch calls the switch forward_sync_buffers; older versions broadcast_buffers.)
        parameters = inspect.signature(DistributedDataParallel).parameters
        switch = (
            "forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers"
        )
        device = self.compute.device
        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=device_ids, **{switch: False})

    def step(
        self, micro_batches: list[Batch] | list[LabelBatch], normaliser: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over `micro_batches`, the loss divided by `normaliser` (the targets
        of the step), so accumulated micro-batches train like one large batch.

        Returns the summed (label-smoothed) loss and the gradient norm as tensors, so that nothing
        waits for the device unless the caller logs them.
        """
        try:
            return self._step(self.step_model, micro_batches, normaliser)
        except Exception as exc:  # torch.compile fails at its first call, in many ways
            if self.step_model is self.replica:
                raise
            log.warning(f"torch.compile failed ({type(exc).__name__}); training eagerly")
            self.optimizer.zero_grad(set_to_none=True)
            self.step_model = self.replica
            return self._step(self.replica, micro_batches, normaliser)

    def _step(self, model, micro_batches, normaliser: float) -> tuple[torch.Tensor, torch.Tensor]:
        model.train()
        loss_sum = torch.zeros((), device=self.compute.device)
        for i, batch in enumerate(micro_batches):
            batch = batch.to(self.compute.device)
            # DDP all-reduces the gradients once, with the last micro-batch.
            last = i == len(micro_batches) - 1
            with contextlib.nullcontext() if last else self._no_sync():
                with self.compute.autocast():
                    logits, targets = logits_and_targets(model, batch)
                loss = summed_loss(logits, targets, self.cfg.label_smoothing)
                self.scaler.scale(loss / normaliser).backward()
            loss_sum += loss.detach()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        max_norm = self.cfg.clip_norm if self.cfg.clip_norm > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # skips the update when a gradient overflowed
            self.scaler.update()
        elif torch.isfinite(grad_norm):
            # A non-finite norm means the loss diverged: skip the update so the weights stay
            # finite, and let the caller stop. One host sync per step, worth it to never save NaN
            # weights.
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, grad_norm

    def _no_sync(self) -> contextlib.AbstractContextManager:
        return self.replica.no_sync() if self.ranks.distributed else contextlib.nullcontext()

    def diverged(self, loss_sum: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Whether the step just taken went non-finite, agreed by every rank.

        fp16: an overflowing gradient is the loss scaler's business (it skips the step and lowers
        the scale); only a non-finite loss means divergence, and the loss is per rank, so the
        ranks agree. Otherwise the gradient norm, computed after the all-reduce, is the same on
        every rank.
        """
        diverged = not bool(torch.isfinite(loss_sum if self.scaler.is_enabled() else grad_norm))
        if self.ranks.distributed and self.scaler.is_enabled():
            (diverged,) = self.ranks.any([diverged])
        return diverged

    @property
    def lr(self) -> float:
        """The learning rate of the current step."""
        return self.scheduler.get_last_lr()[0]

    def time_progress(self) -> float:
        """The share of the time budget after warmup spent so far (0 without train.max_time)."""
        start = self.state.warmup_elapsed
        if start is None or math.isinf(self.max_time):
            return 0.0
        return (self.state.elapsed - start) / max(self.max_time - start, 1e-9)

    def count_step(self, batches: int, targets: int, epoch_done: bool) -> None:
        """Advance the schedule and the counters past a step that did not diverge."""
        if self.state.step + 1 >= self.cfg.warmup_steps and self.state.warmup_elapsed is None:
            self.state.warmup_elapsed = self.state.elapsed
        self.scheduler.step()
        self.state.step += 1
        self.state.targets += targets
        self.state.batch_in_epoch += batches
        if epoch_done:
            self.end_epoch()

    def end_epoch(self) -> None:
        self.state.epoch += 1
        self.state.batch_in_epoch = 0

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": asdict(self.state),
            "rng": {
                "python": random.getstate(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }

    def load_state_dict(self, saved: dict) -> None:
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):  # written by fp16 runs only (and not by older versions)
            self.scaler.load_state_dict(saved["scaler"])
        self.state = TrainState(**saved["state"])
        random.setstate(_as_tuple(saved["rng"]["python"]))
        torch.set_rng_state(saved["rng"]["torch"])
        if saved["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        elif saved["rng"]["cuda"]:
            log.info("note: this run was saved on CUDA; its CUDA random state cannot apply here")

    def save(self, directory: Path, resumable: bool = True, **meta) -> None:
        """A checkpoint of the weights (with everything to resume from, when `resumable`)."""
        meta = {"step": self.state.step, "epoch": self.state.epoch, **meta}
        save_checkpoint(directory, self.model, meta, self.state_dict() if resumable else None)

    def restore(self, directory: Path) -> dict:
        """Load a checkpoint written by `save`; return its validation scores."""
        meta = load_meta(directory)
        load_weights(directory, self.model, self.compute.device)
        saved = load_trainer_state(directory)
        try:
            self.load_state_dict(saved)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise UserError(
                f"cannot resume from {directory}: its trainer state does not fit ({exc})"
            ) from None
        return meta.get("scores", {})


def _as_tuple(value):
    """random.setstate needs tuples where serialisation may have produced lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
