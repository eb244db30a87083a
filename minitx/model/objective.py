"""What a model is trained to predict: the logits and targets of a batch, and the summed cross-entropy.

Translation predicts every target token; classification predicts one class per text. Training and
evaluation both go through here, so the loss they report is the same quantity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minitx.data.batching import IGNORED, Batch, LabelBatch


def logits_and_targets(
    model: torch.nn.Module, batch: Batch | LabelBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, V or C), targets (N,)); padded target positions are IGNORED.

    `model` is a Seq2Seq or Classifier, or a DDP or compiled wrapper of one."""
    if isinstance(batch, LabelBatch):
        return model(batch.src), batch.labels
    return model(batch.src, batch.tgt_in).flatten(0, 1), batch.tgt_out.flatten()


def summed_loss(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy summed over targets, in fp32 whatever the autocast dtype of the logits."""
    return F.cross_entropy(
        logits.float(),
        targets,
        ignore_index=IGNORED,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
