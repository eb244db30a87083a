"""`minitx export`: a trained model as a self-contained directory another engine runs.

The directory holds the engine's model beside what minitx needs to use it: config.yaml, the
tokenizer (and labels.json) and export.json, which says what it is and where it came from. It is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

from minitx.config import Config
from minitx.data.labels import save_label_names
from minitx.data.tokenizer import Codecs
from minitx.export.formats import ExportFormat
from minitx.model.transformer import Classifier, Seq2Seq, attention_modules
from minitx.run_dir import RunDir, staged_directory


def export_model(
    model: Seq2Seq | Classifier,
    cfg: Config,
    codecs: Codecs,
    labels: list[str] | None,
    out: Path,
    fmt: ExportFormat,
    quantization: str,
    origin: dict,
) -> dict:
    """Write the export of `model` into `out` (absent or empty); `origin` (run, checkpoint, step)
    goes into export.json, which is returned."""
    if cfg.model.pruned_heads:
        # The formats have one head count for all layers: the pruned heads go back in as zeros,
        # which add nothing (the same outputs, at the full model's cost).
        model = copy.deepcopy(model)
        for module in attention_modules(model).values():
            module.restore_heads(cfg.model.n_heads)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pruned_heads={}))
    with staged_directory(out, "--out") as staging:
        target = RunDir(staging)
        info = {"format": fmt.name, "task": cfg.task, "quantization": quantization, **origin}
        target.save_config(cfg)
        codecs.save(target)
        if labels is not None:
            save_label_names(labels, target.labels_file)
        info.update(fmt.write(model, cfg, codecs, target, quantization, RunDir(origin["run"])))
        target.export_file.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
