"""What a model is trained to predict: the logits and targets of a batch, and the summed cross-entropy.

Translation predicts every target token; classification predicts one class per text. Training and
evaluation both go through here, so the loss they report is the same quantity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minitx.data.batching import Batch, LabelBatch
from minitx.model.transformer import Classifier, Seq2Seq

IGNORED = -100  # target value that adds nothing to the loss: padding


def logits_and_targets(
    model: Seq2Seq | Classifier, batch: Batch | LabelBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, V or C), targets (N,)); padded target positions are IGNORED."""
    if isinstance(batch, LabelBatch):
        return model(batch.src), batch.labels
    targets = batch.tgt_out.flatten()
    return model(batch.src, batch.tgt_in).flatten(0, 1), targets.masked_fill(
        targets == model.pad_id, IGNORED
    )


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
