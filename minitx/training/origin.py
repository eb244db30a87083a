"""Fine-tuning: a new run that starts from the weights and the tokenizer of an earlier one
(`train.init_from`), with a fresh optimizer, schedule and counters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from minitx.config import Config, config_to_dict
from minitx.errors import UserError
from minitx.model.checkpoint import find_checkpoint
from minitx.run_dir import RunDir

# Model keys that shape the weights; the others (dropout, window) may differ when fine-tuning.
SHAPE_KEYS = (
    "d_model",
    "n_heads",
    "n_kv_heads",
    "n_encoder_layers",
    "n_decoder_layers",
    "d_ff",
    "activation",
    "norm",
    "attention",
    "positions",
    "max_positions",
    "tie_embeddings",
    "output_bias",
)


def find_origin(init_from: str, run: RunDir) -> tuple[RunDir, Path]:
    """The run and the checkpoint directory `train.init_from` names: a run directory (its best
    checkpoint), a checkpoint directory inside one (RUN/checkpoints/NAME), or hf:SOURCE, a
    Marian model imported once into `run`'s origin/ directory."""
    if init_from.startswith("hf:"):
        init_from = str(_imported(init_from, run))
    path = Path(init_from).expanduser()
    as_run, as_checkpoint = RunDir(path), RunDir(path.parent.parent)
    if as_run.config_file.is_file():
        run, checkpoint = as_run, find_checkpoint(as_run.checkpoint("best"))
    elif path.parent == as_checkpoint.checkpoints_dir and as_checkpoint.config_file.is_file():
        run, checkpoint = as_checkpoint, find_checkpoint(path)
    else:
        raise UserError(
            f"train.init_from: {init_from} is neither a run directory (with config.yaml) nor a "
            "checkpoint directory inside one (RUN/checkpoints/NAME)"
        )
    if checkpoint is None:
        raise UserError(
            f"train.init_from: {init_from} has no checkpoint to start from; train it first"
        )
    return run, checkpoint


def _imported(source: str, run: RunDir) -> Path:
    target = run.root / "origin"
    record = target / "import.json"
    if not record.is_file():
        from minitx.interop.marian import import_marian

        import_marian(source, target)
    elif json.loads(record.read_text(encoding="utf-8")).get("imported_from") != source:
        raise UserError(
            f"{target} holds another import than train.init_from: {source}; remove it to import "
            "this one"
        )
    return target


def check_compatible(cfg: Config, origin: RunDir, task) -> None:
    """Refuse an origin of another task or with other weight shapes, naming every difference;
    `task` (the run's) names what else must match."""
    before = origin.config()
    differences = task.incompatibilities(before, cfg)
    old, new = config_to_dict(before)["model"], config_to_dict(cfg)["model"]
    differences += [
        f"model.{key}: {old[key]!r} → {new[key]!r}" for key in SHAPE_KEYS if old[key] != new[key]
    ]
    if differences:
        raise UserError(
            f"train.init_from: {origin} does not fit this config ({'; '.join(differences)}); "
            "fine-tune with the same task and model shape"
        )


def adopt_vocabulary(origin: RunDir, run: RunDir) -> None:
    """Copy the origin's tokenizer (and label names) into a new run, so that its ids mean what the
    origin's weights learned; a run that has its own already keeps it."""
    if run.has_tokenizer():
        return
    for source, target in (
        (origin.tokenizer_file, run.tokenizer_file),
        (origin.src_tokenizer_file, run.src_tokenizer_file),
        (origin.tgt_tokenizer_file, run.tgt_tokenizer_file),
        (origin.labels_file, run.labels_file),
    ):
        if source.is_file():
            shutil.copyfile(source, target)
