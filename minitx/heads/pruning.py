"""Head pruning (Michel et al., 2019, §4.2): remove the least important attention heads a few at a
time, measuring the importance again after each round, and write the smaller model as a new run
directory (`model.pruned_heads` in its config) that loads, evaluates, fine-tunes and exports like
any run."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from minitx.errors import UserError
from minitx.heads.measure import gated, gradient_importance, masking_gate, split_for_heads
from minitx.model.checkpoint import save_checkpoint
from minitx.model.transformer import attention_modules
from minitx.run_dir import RunDir, staged_directory

if TYPE_CHECKING:
    from minitx.api import Model

ROUND_SHARE = 0.1  # heads removed per round, as a share of all heads (Michel et al.: 10%)


def prune_run(
    model: Model,
    split: str,
    limit: int | None,
    kind: str | None,
    out: Path,
    count: int | None = None,
    max_drop: float | None = None,
) -> dict:
    """Remove `count` heads (of `kind` only, when given), or as many as keep the validation metric
    within `max_drop` of the full model's, and write the pruned run to `out`; returns what was
    removed and the validation scores before and after."""
    network, encoded, metric, score = split_for_heads(model, split, limit)
    modules = attention_modules(network)
    if kind is not None and not any(k == kind for k, _ in modules):
        kinds = sorted({k for k, _ in modules})
        raise UserError(f"--kind {kind}: this model's attention kinds are {', '.join(kinds)}")
    cfg = model.config
    before = after = score()
    worse = -1 if metric in model.task.lower_is_better else 1  # a drop is a positive number
    batches = encoded.batches(cfg.train.batch_tokens, None, model.codecs.tgt)
    per_round = max(1, math.ceil(ROUND_SHARE * sum(m.n_heads for m in modules.values())))
    removed: list[tuple[str, int, int]] = []
    while count is None or len(removed) < count:
        wanted = per_round if count is None else min(per_round, count - len(removed))
        chosen = _least_important(network, batches, model.compute, kind, wanted)
        if not chosen:
            if count is None:
                break
            raise UserError(
                f"only {len(removed)} heads can be removed: every attention module keeps one"
            )
        if max_drop is not None:
            # Masking a head computes what removing it does (tested): try the round masked first.
            positions = defaultdict(list)
            for key, head in chosen:
                positions[key].append(modules[key].head_ids.index(head))
            gates = {key: masking_gate(modules[key], found) for key, found in positions.items()}
            with gated(network, gates):
                trial = score()
            if worse * (before[metric] - trial[metric]) > max_drop:
                break
            after = trial
        for key, head in chosen:
            modules[key].prune([head])
            removed.append((*key, head))
    if max_drop is None:
        after = score()
    pruned = {
        f"{k}.{layer}": sorted(set(range(cfg.model.n_heads)) - set(module.head_ids))
        for (k, layer), module in modules.items()
        if module.n_heads < cfg.model.n_heads
    }
    pruned_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pruned_heads=pruned))
    info = {"pruned_from": str(model.run.root), "removed": [list(r) for r in removed]}
    with staged_directory(out, "--out") as staging:
        run = RunDir(staging)
        run.save_config(pruned_cfg)
        model.codecs.save(run)
        if model.labels is not None:
            from minitx.data.labels import save_label_names

            save_label_names(model.labels, run.labels_file)
        meta = {"step": model.checkpoint_step, **info}
        save_checkpoint(run.checkpoint("best"), network, meta)
    return {**info, "pruned_heads": pruned, "before": before, "after": after}


def _least_important(
    network, batches, compute, kind: str | None, wanted: int
) -> list[tuple[tuple[str, int], int]]:
    """The `wanted` heads of least importance (Michel et al. rank every layer's heads together by
    the per-layer normalised importance), never the last head of a module."""
    modules = attention_modules(network)
    importance = gradient_importance(network, batches, compute)
    ranked = sorted(
        (importance[key][position], key, module.head_ids[position])
        for key, module in modules.items()
        if kind in (None, key[0])
        for position in range(module.n_heads)
    )
    left = {key: module.n_heads for key, module in modules.items()}
    chosen = []
    for _, key, head in ranked:
        if len(chosen) == wanted:
            break
        if left[key] > 1:
            chosen.append((key, head))
            left[key] -= 1
    return chosen
