"""Head pruning (Michel et al., 2019, §4.2): remove the least important attention heads a few at a
time, measuring the importance again after each round, and write the smaller model as a new run
directory (`model.pruned_heads` in its config) that loads, evaluates, fine-tunes and exports like
any run."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

from minitx.errors import UserError
from minitx.heads.measure import gradient_importance, split_for_heads
from minitx.model.checkpoint import save_checkpoint
from minitx.model.transformer import attention_modules
from minitx.run_dir import RunDir, staged_directory

if TYPE_CHECKING:
    from minitx.api import Model

ROUND_SHARE = 0.1  # heads removed per round, as a share of all heads (Michel et al.: 10%)


def prune_run(
    model: Model, split: str, limit: int | None, count: int, kind: str | None, out: Path
) -> dict:
    """Remove `count` heads (of `kind` only, when given) and write the pruned run to `out`;
    returns what was removed and the validation scores before and after."""
    network, encoded, score = split_for_heads(model, split, limit)
    modules = attention_modules(network)
    if kind is not None and not any(k == kind for k, _ in modules):
        kinds = sorted({k for k, _ in modules})
        raise UserError(f"--kind {kind}: this model's attention kinds are {', '.join(kinds)}")
    cfg = model.config
    before = score()
    batches = encoded.batches(cfg.train.batch_tokens, None, model.codecs.tgt)
    per_round = max(1, math.ceil(ROUND_SHARE * sum(m.n_heads for m in modules.values())))
    removed: list[tuple[str, int, int]] = []
    while len(removed) < count:
        importance = gradient_importance(network, batches, model.compute)
        # Michel et al. rank the heads of every layer together, by the per-layer normalised
        # importance; each module keeps one head.
        ranked = sorted(
            (importance[key][position], key, module.head_ids[position])
            for key, module in modules.items()
            if kind in (None, key[0])
            for position in range(module.n_heads)
        )
        left = {key: module.n_heads for key, module in modules.items()}
        chosen = []
        for _, key, head in ranked:
            if len(chosen) == min(per_round, count - len(removed)):
                break
            if left[key] > 1:
                chosen.append((key, head))
                left[key] -= 1
        if not chosen:
            raise UserError(
                f"only {len(removed)} heads can be removed: every attention module keeps one"
            )
        for key, head in chosen:
            modules[key].prune([head])
            removed.append((*key, head))
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
