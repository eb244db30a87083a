"""Checkpoints: weights in safetensors, trainer state through `torch.load(weights_only=True)`, atomic writes.

A checkpoint is a directory (`checkpoints/last`, `checkpoints/best`). It is written complete under
`NAME.tmp`, every file fsynced, then swapped in by renames, so a crash at any moment leaves either
the old or the new checkpoint whole: if it strikes between the two renames, `NAME.old` is used.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from minitx.errors import UserError

WEIGHTS, TRAINER, META = "model.safetensors", "trainer.pt", "meta.json"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    directory: Path, model: nn.Module, meta: dict, trainer_state: dict | None = None
) -> None:
    """Write a complete checkpoint at `directory`, replacing the one there only once it is whole."""
    _save_atomically(directory, lambda path: save_model(model, str(path)), meta, trainer_state)


def average_checkpoints(sources: list[Path], target: Path) -> None:
    """Save the element-wise mean of the weights of `sources` as a weights-only checkpoint at
    `target` (Vaswani et al., 2017 averaged their last 5 or 20 checkpoints)."""
    try:
        weights = [load_file(str(source / WEIGHTS)) for source in sources]
    except (SafetensorError, OSError) as exc:  # removed by a training that pruned it, or damaged
        reason = str(exc).splitlines()[0][:200]
        raise UserError(f"cannot read a checkpoint to average ({reason})") from None
    if any(w.keys() != weights[0].keys() for w in weights):
        raise UserError(
            f"the checkpoints {', '.join(s.name for s in sources)} hold different tensors; they "
            "are not from one run"
        )
    mean = {}
    for name, first in weights[0].items():
        if first.is_floating_point():  # summed in float64: no rounding drift over many inputs
            total = sum(w[name].double() for w in weights)
            mean[name] = (total / len(weights)).to(first.dtype)
        else:
            mean[name] = first
    steps = [load_meta(source).get("step") for source in sources]
    meta = {"step": max(s for s in steps if s is not None), "averaged_steps": steps}
    _save_atomically(target, lambda path: save_file(mean, str(path)), meta, None)


def _save_atomically(
    directory: Path, write_weights, meta: dict, trainer_state: dict | None
) -> None:
    tmp = directory.with_name(directory.name + ".tmp")
    try:
        _write_complete(tmp, write_weights, meta, trainer_state)
    except OSError as exc:  # disk full, quota, permissions: the previous checkpoint is untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(
            f"cannot write checkpoint {directory} ({exc.strerror or exc}); the previous one is "
            "intact: free disk space, then run the same command to resume"
        ) from None
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    _fsync(directory.parent)
    shutil.rmtree(old, ignore_errors=True)


def _write_complete(tmp: Path, write_weights, meta: dict, trainer_state: dict | None) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_weights(tmp / WEIGHTS)  # save_model handles tied (shared) tensors
    if trainer_state is not None:
        torch.save(trainer_state, tmp / TRAINER)
    (tmp / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    for file in tmp.iterdir():
        _fsync(file)
    _fsync(tmp)


def check_free_space(checkpoints_dir: Path, n_params: int) -> None:
    """Refuse to start when the disk cannot hold the checkpoints a run writes.

    fp32 weights plus AdamW's two moments for `last`, written beside the old one before the
    swap, and the weights of `best`: 4 bytes × (3 × 2 + 1) per parameter.
    """
    needed = 4 * 7 * n_params
    free = shutil.disk_usage(
        checkpoints_dir if checkpoints_dir.exists() else checkpoints_dir.parent
    ).free
    if free < needed:
        raise UserError(
            f"{checkpoints_dir} has {free / 2**20:.0f} MiB free, and checkpoints of this model need "
            f"about {needed / 2**20:.0f} MiB; free disk space or choose another --run-dir"
        )


def link_checkpoint(source: Path, target: Path) -> None:
    """Keep the checkpoint `source` also at `target`: hard links (no copy), swapped in whole."""
    if target.exists():
        return
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for file in source.iterdir():
        os.link(file, tmp / file.name)
    os.replace(tmp, target)


def recover_checkpoints(checkpoints_dir: Path) -> None:
    """Finish what a crash interrupted: drop half-written `*.tmp`, restore an `*.old` left alone."""
    if not checkpoints_dir.is_dir():
        return
    for leftover in checkpoints_dir.glob("*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    for old in checkpoints_dir.glob("*.old"):
        current = old.with_name(old.name.removesuffix(".old"))
        if current.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, current)


def find_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint at `directory`, or the previous one if a swap was interrupted."""
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / META).is_file() and (candidate / WEIGHTS).is_file():
            return candidate
    return None


def load_meta(directory: Path) -> dict:
    try:
        return json.loads((directory / META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"checkpoint {directory} has an unreadable {META} ({exc}); it is damaged"
        ) from None


def load_weights(directory: Path, model: nn.Module, device: torch.device) -> None:
    try:
        missing, unexpected = load_model(
            model, str(directory / WEIGHTS), strict=False, device=str(device)
        )
    except (SafetensorError, OSError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise UserError(
            f"cannot load weights from {directory / WEIGHTS} ({reason}); the checkpoint is damaged "
            "or was trained with a different model config"
        ) from None
    if missing or unexpected:
        raise UserError(
            f"weights in {directory / WEIGHTS} do not fit this model (missing {len(missing)}, "
            f"unexpected {len(unexpected)} tensors); it was trained with a different model config"
        )


def load_trainer_state(directory: Path) -> dict:
    """Optimizer, scheduler, counters and RNG states; `weights_only` refuses pickled code."""
    try:
        return torch.load(directory / TRAINER, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {directory} has no {TRAINER}; it cannot be resumed") from None
    except Exception as exc:  # unpickling raises many types; none of them may become a traceback
        reason = str(exc).splitlines()[0][:200]
        raise UserError(f"cannot load trainer state {directory / TRAINER} ({reason})") from None
