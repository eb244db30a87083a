"""Which attention heads matter, measured on a split with the model's own forward passes.

Per head of every layer and kind (encoder self-, decoder self-, cross-attention):
- **masked**: the validation metric and loss with that head alone masked (its gate set to 0), the
  rest of the model unchanged (Michel et al., 2019, §3);
- **importance**: the gradient-based importance of Michel et al. (§4.1), I_h = E|∂L/∂ξ_h| for a
  gate ξ_h = 1 on the head's output, the expectation taken per batch as their code does, then
  normalised to unit L2 norm within each layer;
- **statistics** of its attention weights (Clark et al., 2019), averaged over the real (unpadded)
  queries: entropy (nats), mean distance |i − j| to the keys it attends to, the weight on the key
  one before (`prev`), at (`same`) and one after (`next`) the query's position, and the weight on
  the sequence's start and end tokens (`special`). For cross-attention, positions are those of
  two different sentences: `same` is the weight on the source token at the target's position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from minitx.data.batching import Batch, LabelBatch
from minitx.data.run_data import RunData
from minitx.data.tokenizer import TextCodec
from minitx.model.attention import recording_attention
from minitx.model.objective import logits_and_targets, summed_loss
from minitx.model.transformer import attention_modules
from minitx.progress import bar
from minitx.runtime import Compute
from minitx.tasks.shared import pytorch_model

if TYPE_CHECKING:
    from minitx.api import Model

KINDS = ("encoder_self", "decoder_self", "cross")
STATISTICS = ("entropy", "distance", "prev", "same", "next", "special")


@contextlib.contextmanager
def gated(network: nn.Module, gates: dict[tuple[str, int], torch.Tensor]) -> Iterator[None]:
    """Within the block, each module named in `gates` multiplies its heads' outputs by its gate."""
    modules = attention_modules(network)
    try:
        for key, gate in gates.items():
            modules[key].head_gate = gate
        yield
    finally:
        for key in gates:
            modules[key].head_gate = None


def masking_gate(module: nn.Module, positions: list[int]) -> torch.Tensor:
    """A gate for `module` that masks the heads at `positions` and keeps the others."""
    gate = torch.ones(module.n_heads, device=module.out_proj.weight.device)
    gate[positions] = 0.0
    return gate


def gradient_importance(
    network: nn.Module, batches: list[Batch | LabelBatch], compute: Compute
) -> dict[tuple[str, int], list[float]]:
    """Michel et al.'s importance of every head, normalised within its layer."""
    modules = attention_modules(network)
    gates = {
        key: torch.ones(m.n_heads, device=compute.device, requires_grad=True)
        for key, m in modules.items()
    }
    totals = {key: torch.zeros(m.n_heads, device=compute.device) for key, m in modules.items()}
    network.eval()  # no dropout: the importance of the model as it translates
    with gated(network, gates):
        for batch in batches:
            with compute.autocast():
                logits, targets = logits_and_targets(network, batch.to(compute.device))
            loss = summed_loss(logits, targets)
            grads = torch.autograd.grad(loss, list(gates.values()))
            for key, grad in zip(gates, grads, strict=True):
                totals[key] += grad.abs()
    normalised = {}
    for key, total in totals.items():
        norm = float(total.norm())
        normalised[key] = (total / norm if norm > 0 else total).tolist()
    return normalised


def masked_scores(
    network: nn.Module,
    score: Callable[[], dict],
    progress: Callable[[], None] = lambda: None,
) -> dict[tuple[str, int, int], dict]:
    """`score()` (the task's validation scores) with each head alone masked, by (kind, layer,
    the head's position in its module)."""
    results = {}
    for key, module in attention_modules(network).items():
        for head in range(module.n_heads):
            with gated(network, {key: masking_gate(module, [head])}):
                results[(*key, head)] = score()
            progress()
    return results


@torch.no_grad()
def attention_statistics(
    network: nn.Module,
    batches: list[Batch | LabelBatch],
    codec: TextCodec,
    compute: Compute,
) -> dict[tuple[str, int], dict[str, list[float]]]:
    """Clark et al.'s statistics per head, averaged over every real query of `batches`."""
    network.eval()
    modules = attention_modules(network)
    sums: dict[tuple[str, int], torch.Tensor] = {}
    counts: dict[tuple[str, int], int] = {}
    special = torch.tensor([codec.bos_id, codec.eos_id], device=compute.device)
    with recording_attention(network), compute.autocast():
        for batch in batches:
            batch = batch.to(compute.device)
            sides = _sides(network, batch)
            for key, module in modules.items():
                query_side, key_side = _QUERY_KEY_SIDES[key[0]]
                queries, keys = sides[query_side], sides[key_side]
                weights = module.weights.float()
                found = _head_statistics(weights, queries, keys, special, codec.pad_id)
                sums[key] = sums.get(key, 0) + found
                counts[key] = counts.get(key, 0) + int((queries != codec.pad_id).sum())
    return {
        key: {name: (total[i] / max(counts[key], 1)).tolist() for i, name in enumerate(STATISTICS)}
        for key, total in sums.items()
    }


# Which token ids a kind's queries and keys are.
_QUERY_KEY_SIDES = {
    "encoder_self": ("source", "source"),
    "decoder_self": ("target", "target"),
    "cross": ("target", "source"),
}


def _sides(network: nn.Module, batch: Batch | LabelBatch) -> dict:
    """Run the batch teacher-forced (the modules record their weights); its source and target
    ids."""
    if isinstance(batch, LabelBatch):
        network(batch.src)
        return {"source": batch.src}
    network(batch.src, batch.tgt_in)
    return {"source": batch.src, "target": batch.tgt_in}


def split_for_heads(model: Model, split: str, limit: int | None):
    """The run's network, `split` encoded (its first `limit` examples), the name of the task's
    validation metric, and a function giving that metric and the loss on the split as the network
    is now."""
    cfg, codecs, task = model.config, model.codecs, model.task
    network = pytorch_model(model, "heads")
    encoded = task.encode_split(task.load_split(cfg, split), codecs, model.labels, split)
    if limit is not None:
        encoded = encoded.subset(limit)
    data = RunData(codecs, {}, model.labels)
    metric = cfg.train.early_stopping_metric or task.metrics[0]

    def score() -> dict:
        scores = task.validation_scores(network, encoded, data, cfg, model.compute)
        return {metric: scores[metric], "loss": scores["loss"]}

    return network, encoded, metric, score


def measure_heads(model: Model, split: str, limit: int | None = None) -> dict:
    """Every head's scores on `split` (its first `limit` examples): the report heads.json holds.
    Heads are numbered as trained (a pruned model's remaining heads keep their numbers)."""
    network, encoded, metric, score = split_for_heads(model, split, limit)
    batches = encoded.batches(model.config.train.batch_tokens, None, model.codecs.tgt)
    baseline = score()
    importance = gradient_importance(network, batches, model.compute)
    statistics = attention_statistics(network, batches, model.codecs.tgt, model.compute)
    modules = attention_modules(network)
    with bar(total=sum(m.n_heads for m in modules.values()), desc="mask", unit=" heads") as shown:
        masked = masked_scores(network, score, lambda: shown.update(1))
    heads = []
    for (kind, layer), module in modules.items():
        for position, head in enumerate(module.head_ids):
            scores = masked[kind, layer, position]
            heads.append(
                {
                    "kind": kind,
                    "layer": layer,
                    "head": head,
                    "importance": round(importance[kind, layer][position], 4),
                    f"masked_{metric}": scores[metric],
                    f"delta_{metric}": round(scores[metric] - baseline[metric], 4),
                    "masked_loss": scores["loss"],
                    "delta_loss": round(scores["loss"] - baseline["loss"], 4),
                    **{
                        name: round(values[position], 4)
                        for name, values in statistics[kind, layer].items()
                    },
                }
            )
    return {
        "run": str(model.run.root),
        "checkpoint_step": model.checkpoint_step,
        "split": split,
        "examples": len(encoded),
        "metric": metric,
        "baseline": baseline,
        "heads": heads,
    }


def _head_statistics(
    weights: torch.Tensor,
    queries: torch.Tensor,
    keys: torch.Tensor,
    special: torch.Tensor,
    pad_id: int,
) -> torch.Tensor:
    """Sums over the real queries of each statistic: (len(STATISTICS), H). `weights` (B, H, Tq,
    Tk); `queries` (B, Tq) and `keys` (B, Tk) are token ids, padding where they are `pad_id`."""
    real = (queries != pad_id).to(weights.dtype)[:, None, :]  # (B, 1, Tq)
    q_len, k_len = weights.shape[-2:]
    position_q = torch.arange(q_len, device=weights.device)[:, None]
    position_k = torch.arange(k_len, device=weights.device)[None, :]
    offset = position_k - position_q  # (Tq, Tk)
    entropy = -(weights * torch.log(weights.clamp(min=1e-12))).sum(-1)  # (B, H, Tq)
    values = [
        entropy,
        (weights * offset.abs().to(weights.dtype)).sum(-1),
        *((weights * (offset == shift).to(weights.dtype)).sum(-1) for shift in (-1, 0, 1)),
        (weights * torch.isin(keys, special).to(weights.dtype)[:, None, None, :]).sum(-1),
    ]
    return torch.stack([(value * real).sum(dim=(0, 2)) for value in values])
