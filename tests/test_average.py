"""Checkpoint averaging: `minitx average`, `train.average_last` and `--checkpoint averaged`, with
the mean recomputed here from the step_N checkpoints' safetensors files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import minitx
from minitx.config import load_config
from minitx.errors import UserError
from minitx.model.checkpoint import average_checkpoints
from minitx.run_dir import RunDir
from minitx.training.average import average_snapshots

from conftest import train_run
from test_cli import minitx as minitx_cli

WEIGHTS = "model.safetensors"


@pytest.fixture
def averaged_run(tiny_translation_run) -> dict:
    """The session's tiny translation run: 12 steps, validated every 3, keeping step_3..step_12
    and averaging the last 3 at the end. Read only: a test that writes works on `_copy`."""
    shared = tiny_translation_run
    return {"root": shared.root, "config": shared.config, "run": shared.run}


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / WEIGHTS))


def _mean(run: Path, steps: list[int]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the step_N checkpoints' weights, summed in float64."""
    loaded = [_weights(run / "checkpoints" / f"step_{step:08d}") for step in steps]
    mean = {}
    for name in loaded[0]:
        total = torch.zeros(loaded[0][name].shape, dtype=torch.float64)
        for weights in loaded:
            total += weights[name].double()
        mean[name] = (total / len(loaded)).to(loaded[0][name].dtype)
    return mean


def _assert_same_weights(found: dict, expected: dict) -> None:
    assert sorted(found) == sorted(expected)
    for name in expected:
        assert torch.equal(found[name], expected[name]), name


def _meta(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "meta.json").read_text())


def _copy(run: Path, tmp: Path) -> Path:
    target = tmp / "run"
    shutil.copytree(run, target, ignore=shutil.ignore_patterns(".lock"))
    return target


def test_training_keeps_the_snapshots_it_was_asked_to(averaged_run):
    kept = sorted(p.name for p in (averaged_run["run"] / "checkpoints").glob("step_*"))
    assert kept == [f"step_{s:08d}" for s in (3, 6, 9, 12)]
    # the snapshots differ, so a mean of them is not any one of them
    first = _weights(averaged_run["run"] / "checkpoints" / kept[0])
    last = _weights(averaged_run["run"] / "checkpoints" / kept[-1])
    assert any(not torch.equal(first[name], last[name]) for name in first)


def test_average_last_writes_the_mean_of_the_last_snapshots_at_the_end(averaged_run):
    run = averaged_run["run"]
    averaged = run / "checkpoints" / "averaged"
    expected = _mean(run, [6, 9, 12])
    _assert_same_weights(_weights(averaged), expected)
    assert _meta(averaged)["averaged_steps"] == [6, 9, 12]
    assert _meta(averaged)["step"] == 12
    assert not (averaged / "trainer.pt").exists()  # weights only: not a point to resume from
    last = _weights(run / "checkpoints" / "last")
    assert any(not torch.equal(expected[name], last[name]) for name in last)
    # the end event comes after the averaging, and training ended normally
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "end" and events[-1]["step"] == 12


def test_cli_average_steps_picks_exactly_those(averaged_run, tmp_path):
    run = _copy(averaged_run["run"], tmp_path)
    result = minitx_cli("average", run, "--steps", "3,9", "--quiet")
    assert result.returncode == 0, result.stderr
    averaged = run / "checkpoints" / "averaged"
    assert result.stdout.strip() == f"wrote {averaged}"
    _assert_same_weights(_weights(averaged), _mean(run, [3, 9]))
    assert _meta(averaged)["averaged_steps"] == [3, 9]
    assert _meta(averaged)["step"] == 9


def test_library_average_last_takes_the_newest_snapshots(averaged_run, tmp_path):
    run = _copy(averaged_run["run"], tmp_path)
    target = average_snapshots(RunDir(run), last=2)
    assert target == run / "checkpoints" / "averaged"
    _assert_same_weights(_weights(target), _mean(run, [9, 12]))
    assert _meta(target)["averaged_steps"] == [9, 12]
    target = average_snapshots(RunDir(run), last=4)
    _assert_same_weights(_weights(target), _mean(run, [3, 6, 9, 12]))
    with pytest.raises(UserError, match="needs 5 kept step_N checkpoints"):
        average_snapshots(RunDir(run))  # the default is the last 5


def test_library_average_steps_refuses_unkept_steps(averaged_run, tmp_path):
    run = _copy(averaged_run["run"], tmp_path)
    before = _weights(run / "checkpoints" / "averaged")
    with pytest.raises(UserError, match="no checkpoint step_00000004") as info:
        average_snapshots(RunDir(run), steps=[3, 4])
    assert "step_00000003" in str(info.value).split("kept:")[1]  # lists what there is
    with pytest.raises(UserError, match="at least 2 checkpoints"):
        average_snapshots(RunDir(run), steps=[3])
    _assert_same_weights(_weights(run / "checkpoints" / "averaged"), before)


def test_average_checkpoints_refuses_checkpoints_of_different_models(tmp_path):
    for name, tensors in (("a", {"w": torch.ones(2)}), ("b", {"v": torch.ones(2)})):
        (tmp_path / name).mkdir()
        save_file(tensors, str(tmp_path / name / WEIGHTS))
        (tmp_path / name / "meta.json").write_text('{"step": 1}')
    with pytest.raises(UserError, match="not from one run"):
        average_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "averaged")
    assert not (tmp_path / "averaged").exists()


def test_average_checkpoints_is_the_exact_mean_of_given_tensors(tmp_path):
    values = [
        torch.tensor([1.0, 2.0, -3.0]),
        torch.tensor([2.0, 2.0, 0.5]),
        torch.tensor([0.0, 5.0, 1.0]),
    ]
    for step, value in enumerate(values, start=1):
        directory = tmp_path / f"step_{step}"
        directory.mkdir()
        save_file({"w": value, "count": torch.tensor([7])}, str(directory / WEIGHTS))
        (directory / "meta.json").write_text(json.dumps({"step": step * 10}))
    target = tmp_path / "averaged"
    average_checkpoints([tmp_path / f"step_{s}" for s in (1, 2, 3)], target)
    found = load_file(str(target / WEIGHTS))
    assert torch.equal(found["w"], torch.tensor([1.0, 3.0, -0.5]))
    assert torch.equal(found["count"], torch.tensor([7]))  # integers are kept, not averaged
    assert _meta(target) == {"step": 30, "averaged_steps": [10, 20, 30]}


def test_averaged_checkpoint_loads_and_evaluates(averaged_run, tmp_path):
    run = _copy(averaged_run["run"], tmp_path)  # eval writes into the run directory
    model = minitx.load(run, checkpoint="averaged")
    assert model.checkpoint_step == 12
    expected = _weights(run / "checkpoints" / "averaged")
    state = model.engine.model.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name
    report = model.evaluate("test")
    result = minitx_cli("eval", run, "--checkpoint", "averaged", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    cli = json.loads(result.stdout)
    assert cli["checkpoint_step"] == 12
    assert cli["loss"] == report["loss"] and cli["bleu"] == report["bleu"]
    best = minitx.load(run).evaluate("test")
    assert best["loss"] != report["loss"]  # not the best checkpoint's weights under another name


def test_translate_with_the_averaged_checkpoint(averaged_run):
    run = averaged_run["run"]
    expected = minitx.load(run, checkpoint="averaged").translate(["ein hund rennt"])[0].text
    result = minitx_cli("translate", run, "ein hund rennt", "--checkpoint", "averaged", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [expected]


def test_average_last_with_too_few_snapshots_still_finishes(averaged_run, tmp_path):
    """A run shorter than average_last validations warns and ends without an averaged checkpoint."""
    overrides = [
        "train.max_steps=3",
        "train.eval_every=3",
        "train.keep_last=3",
        "train.average_last=3",
    ]
    cfg = load_config(averaged_run["config"], overrides)
    scores = train_run(cfg, tmp_path / "short")
    assert "bleu" in scores
    assert not (tmp_path / "short" / "checkpoints" / "averaged").exists()
    log = (tmp_path / "short" / "train.log").read_text()
    assert "no averaged checkpoint" in log and "needs 3 kept step_N checkpoints" in log
