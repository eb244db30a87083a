"""AdamW and the learning-rate schedules: linear warmup, then inverse square root, cosine or constant."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from minitx.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight matrices of linear layers and embeddings only:
    decaying biases, norm gains or the per-head scale of cosine attention does not regularise.

    `fused` (for CUDA) updates all parameters in one kernel instead of a few per tensor."""
    matrices = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, (nn.Linear, nn.Embedding))
    }
    decay, no_decay = [], []
    for param in model.parameters():  # tied weights are listed once
        if param.requires_grad:
            (decay if id(param) in matrices else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)


def lr_factor(
    step: int,
    schedule: str,
    warmup_steps: int,
    max_steps: int,
    min_ratio: float,
    time_progress: float = 0.0,
) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based).

    `time_progress`: the share of the time budget (train.max_time) after warmup already spent.
    Cosine decays over whichever of max_steps and max_time ends training first, so a run bounded
    by time reaches its final rate when it stops, whatever the machine's speed.
    """
    step = step + 1
    if warmup_steps and step < warmup_steps:
        return step / warmup_steps
    if schedule == "inverse_sqrt":  # Vaswani et al. (2017), 5.3, peak at the end of warmup
        return math.sqrt(max(warmup_steps, 1) / step)
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        progress = min(1.0, max(progress, time_progress))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    time_progress: Callable[[], float] = lambda: 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Peak `cfg.lr` × lr_factor at each step (train.schedule, warmup_steps, max_steps, min_lr);
    `time_progress()` says how much of the time budget after warmup is spent."""
    min_ratio = cfg.min_lr / cfg.lr if cfg.lr else 0.0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(
            step, cfg.schedule, cfg.warmup_steps, cfg.max_steps, min_ratio, time_progress()
        ),
    )
