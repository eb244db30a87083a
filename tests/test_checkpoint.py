"""Checkpoints survive failures, and loading one never runs code."""

import os

import pytest
import torch

from minitx.errors import UserError
from minitx.model import checkpoint
from minitx.model.checkpoint import (
    find_checkpoint,
    load_trainer_state,
    load_weights,
    recover_checkpoints,
    save_checkpoint,
)
from minitx.model.transformer import build_model


def _model(cfg):
    return build_model(cfg, 30, 30, 0, True)


def test_a_save_that_fails_half_way_leaves_the_previous_checkpoint(
    tiny_model_config, tmp_path, monkeypatch
):
    ckpt = tmp_path / "checkpoints" / "last"
    first = _model(tiny_model_config)
    save_checkpoint(ckpt, first, {"step": 1}, {"state": {"step": 1}})

    def broken_save(tensors_model, filename, *args, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_model", broken_save)
    with pytest.raises(UserError, match="No space left on device.*previous one is intact"):
        save_checkpoint(ckpt, _model(tiny_model_config), {"step": 2}, {"state": {"step": 2}})
    monkeypatch.undo()

    assert not (tmp_path / "checkpoints" / "last.tmp").exists()
    restored = _model(tiny_model_config)
    load_weights(find_checkpoint(ckpt), restored, torch.device("cpu"))
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), restored.state_dict().values(), strict=True)
    )
    assert load_trainer_state(ckpt)["state"]["step"] == 1


def test_a_half_written_checkpoint_from_a_killed_process_is_removed_on_the_next_start(
    tiny_model_config, tmp_path
):
    ckpt = tmp_path / "checkpoints" / "last"
    save_checkpoint(ckpt, _model(tiny_model_config), {"step": 1})
    (tmp_path / "checkpoints" / "last.tmp").mkdir()
    (tmp_path / "checkpoints" / "last.tmp" / "model.safetensors").write_bytes(b"half")
    recover_checkpoints(tmp_path / "checkpoints")
    assert not (tmp_path / "checkpoints" / "last.tmp").exists()
    assert find_checkpoint(ckpt) == ckpt


def test_a_crash_between_the_renames_keeps_the_old_checkpoint(tiny_model_config, tmp_path):
    ckpt = tmp_path / "checkpoints" / "last"
    save_checkpoint(ckpt, _model(tiny_model_config), {"step": 1})
    os.replace(ckpt, ckpt.with_name("last.old"))  # as if killed right after the first rename
    assert find_checkpoint(ckpt) == ckpt.with_name("last.old")
    recover_checkpoints(ckpt.parent)
    assert find_checkpoint(ckpt) == ckpt


class _WritesAMarker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_trainer_state_that_would_run_code_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    marker = tmp_path / "marker"
    torch.save({"state": _WritesAMarker(marker)}, ckpt / "trainer.pt")
    assert not marker.exists()
    with pytest.raises(UserError, match="cannot load trainer state"):
        load_trainer_state(ckpt)
    assert not marker.exists()


def test_truncated_weights_are_a_user_error(tiny_model_config, tmp_path):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, _model(tiny_model_config), {"step": 1})
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="damaged"):
        load_weights(ckpt, _model(tiny_model_config), torch.device("cpu"))
