"""Fine-tuning with `train.init_from`: a new run starts from an earlier run's weights and tokenizer
with fresh counters, optimizer and schedule; misfits are refused naming each difference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from minitx.config import load_config
from minitx.errors import UserError

from conftest import train_run, write_tiny_config

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> dict:
    """A tiny translation run: 12 steps, every step logged, step_6 and step_12 kept."""
    root = tmp_path_factory.mktemp("finetune")
    config = write_tiny_config(root)
    run = root / "origin"
    train_run(load_config(config, ["train.log_every=1", "train.keep_last=2"]), run)
    return {"root": root, "config": config, "run": run}


def _fine_tune(origin: dict, run: Path, init_from: Path | str, *overrides: str) -> dict:
    cfg = load_config(origin["config"], [f"train.init_from={init_from}", *overrides])
    return train_run(cfg, run)


@pytest.fixture(scope="module")
def frozen(origin) -> Path:
    """One step at learning rate 0 from the origin (with another dropout: not a weight shape)."""
    run = origin["root"] / "frozen"
    _fine_tune(
        origin,
        run,
        origin["run"],
        "train.lr=0",
        "train.max_steps=1",
        "train.log_every=1",
        "model.dropout=0.1",
    )
    return run


@pytest.fixture(scope="module")
def moving(origin) -> dict:
    """Two steps at the origin's learning rate, from a copy of the origin (removed by a test)."""
    source = origin["root"] / "origin_copy"
    shutil.copytree(origin["run"], source, ignore=shutil.ignore_patterns(".lock"))
    run = origin["root"] / "moving"
    _fine_tune(origin, run, source, "train.max_steps=2", "train.log_every=1")
    return {"origin": source, "run": run}


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / WEIGHTS))


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(found: dict, expected: dict) -> None:
    assert sorted(found) == sorted(expected)
    for name in expected:
        assert torch.equal(found[name], expected[name]), name


def test_a_fine_tuned_run_starts_from_the_origin_best_weights(origin, frozen):
    expected = _weights(origin["run"] / "checkpoints" / "best")
    _assert_same_weights(_weights(frozen / "checkpoints" / "last"), expected)
    # best is the origin's step 6 (by BLEU), not its last weights (step 12)
    last = _weights(origin["run"] / "checkpoints" / "last")
    assert any(not torch.equal(last[name], expected[name]) for name in expected)
    # same weights and same tokenizer: the same validation loss as the origin's best validation
    best_loss = [e["loss"] for e in _events(origin["run"]) if e.get("best")][-1]
    assert [e["loss"] for e in _events(frozen) if e["event"] == "validation"] == [best_loss]


def test_the_origin_tokenizer_is_copied(origin, frozen):
    assert (frozen / "tokenizer.json").read_bytes() == (
        origin["run"] / "tokenizer.json"
    ).read_bytes()


def test_init_from_is_recorded_in_the_start_event_and_the_config(origin, frozen):
    starts = [e for e in _events(frozen) if e["event"] == "start"]
    assert len(starts) == 1
    assert starts[0]["init_from"] == str(origin["run"] / "checkpoints" / "best")
    saved = yaml.safe_load((frozen / "config.yaml").read_text())
    assert saved["train"]["init_from"] == str(origin["run"])
    assert saved["model"]["dropout"] == 0.1
    # the origin's own start event has no origin
    assert [e["init_from"] for e in _events(origin["run"]) if e["event"] == "start"] == [None]


def test_counters_and_optimizer_start_fresh(frozen):
    train_events = [e for e in _events(frozen) if e["event"] == "train"]
    assert [e["step"] for e in train_events] == [1]
    assert [e["step"] for e in _events(frozen) if e["event"] == "validation"] == [1]
    saved = torch.load(frozen / "checkpoints" / "last" / "trainer.pt", weights_only=True)
    assert saved["state"]["step"] == 1 and saved["state"]["epoch"] == 0
    steps = {float(s["step"]) for s in saved["optimizer"]["state"].values()}
    assert steps == {1.0}  # AdamW has taken one step, not the origin's 12 + 1


def test_the_schedule_starts_again_from_its_first_step(origin, moving):
    """The origin warms up over 5 steps: a fresh schedule's first rate is the origin's first."""
    origin_lr = {e["step"]: e["lr"] for e in _events(origin["run"]) if e["event"] == "train"}
    tuned_lr = {e["step"]: e["lr"] for e in _events(moving["run"]) if e["event"] == "train"}
    assert sorted(tuned_lr) == [1, 2]
    assert tuned_lr[1] == origin_lr[1] and tuned_lr[2] == origin_lr[2]
    assert origin_lr[12] != origin_lr[1]  # the comparison can tell a continued schedule apart


def test_init_from_a_checkpoint_directory(origin, tmp_path):
    checkpoint = origin["run"] / "checkpoints" / "step_00000012"
    run = tmp_path / "from_step"
    _fine_tune(origin, run, checkpoint, "train.lr=0", "train.max_steps=1")
    expected = _weights(checkpoint)
    _assert_same_weights(_weights(run / "checkpoints" / "last"), expected)
    best = _weights(origin["run"] / "checkpoints" / "best")  # what init_from: RUN would take
    assert any(not torch.equal(best[name], expected[name]) for name in expected)
    starts = [e for e in _events(run) if e["event"] == "start"]
    assert starts[0]["init_from"] == str(checkpoint)


def test_resuming_a_fine_tuned_run_continues_from_its_own_checkpoint(origin, moving, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(moving["run"], run, ignore=shutil.ignore_patterns(".lock"))
    shutil.rmtree(moving["origin"])  # init_from is not read again on resume
    scores = _fine_tune(origin, run, moving["origin"], "train.max_steps=4", "train.log_every=1")
    assert "bleu" in scores
    events = _events(run)
    assert [e["event"] for e in events].count("start") == 1
    assert [e["step"] for e in events if e["event"] == "resume"] == [2]
    assert [e["step"] for e in events if e["event"] == "train"] == [1, 2, 3, 4]
    assert json.loads((run / "checkpoints" / "last" / "meta.json").read_text())["step"] == 4
    assert (run / "tokenizer.json").read_bytes() == (origin["run"] / "tokenizer.json").read_bytes()


# --- refusals --------------------------------------------------------------------------------


def test_another_model_shape_is_refused_naming_each_key(origin, tmp_path):
    with pytest.raises(UserError) as info:
        _fine_tune(origin, tmp_path / "r", origin["run"], "model.d_ff=128", "model.n_heads=2")
    message = str(info.value)
    assert "model.d_ff: 64 → 128" in message
    assert "model.n_heads: 4 → 2" in message
    assert "dropout" not in message
    assert not (tmp_path / "r" / "checkpoints" / "last").exists()


def test_an_origin_of_the_other_task_is_refused(origin, tmp_path):
    data = tmp_path / "cls"
    data.mkdir()
    for split in ("train", "validation"):
        (data / f"{split}.tsv").write_text("text\tlabel\ngood film\tpos\nbad film\tneg\n")
    config = tmp_path / "cls.yaml"
    config.write_text(
        f"task: classification\ndata: {{path: {data}}}\n"
        "tokenizer: {vocab_size: 40, min_frequency: 1}\n"
        "model: {d_model: 32, n_heads: 4, n_encoder_layers: 1, d_ff: 64}\n"
        f"train: {{max_steps: 1, batch_tokens: 64, init_from: {origin['run']}}}\n"
        "run: {device: cpu}\n"
    )
    with pytest.raises(UserError, match="task: 'translation' → 'classification'"):
        train_run(load_config(config), tmp_path / "r")


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        (lambda o, t: t, "is neither a run directory"),
        (lambda o, t: t / "missing", "is neither a run directory"),
        (lambda o, t: o / "checkpoints", "is neither a run directory"),
        (lambda o, t: o / "checkpoints" / "step_00000099", "has no checkpoint to start from"),
    ],
    ids=["empty-directory", "missing", "checkpoints-directory", "checkpoint-not-kept"],
)
def test_a_path_that_is_not_a_run_or_checkpoint_is_refused(origin, tmp_path, where, fragment):
    init_from = where(origin["run"], tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(UserError, match=fragment) as info:
        _fine_tune(origin, tmp_path / "r", init_from)
    assert str(init_from) in str(info.value)


def test_a_tokenizer_path_with_init_from_is_a_config_error(origin):
    tokenizer = origin["run"] / "tokenizer.json"
    with pytest.raises(UserError, match="train.init_from brings the earlier run's tokenizer"):
        load_config(
            origin["config"], [f"train.init_from={origin['run']}", f"tokenizer.path={tokenizer}"]
        )


def test_a_classification_fine_tune_copies_the_label_names(tmp_path):
    data = tmp_path / "cls"
    data.mkdir()
    rows = "".join(f"{w} film\t{'pos' if i % 2 else 'neg'}\n" for i, w in enumerate("abcdefgh"))
    for split in ("train", "validation"):
        (data / f"{split}.tsv").write_text("text\tlabel\n" + rows)
    config = tmp_path / "cls.yaml"
    config.write_text(
        f"task: classification\ndata: {{path: {data}}}\n"
        "tokenizer: {vocab_size: 40, min_frequency: 1}\n"
        "model: {d_model: 16, n_heads: 2, n_encoder_layers: 1, d_ff: 32, dropout: 0.0}\n"
        "train: {max_steps: 3, eval_every: 3, batch_tokens: 64, lr: 0.01, warmup_steps: 1}\n"
        "run: {device: cpu, dtype: fp32}\n"
    )
    first = tmp_path / "first"
    train_run(load_config(config), first)
    tuned = tmp_path / "tuned"
    cfg = load_config(config, [f"train.init_from={first}", "train.lr=0", "train.max_steps=1"])
    train_run(cfg, tuned)
    assert (tuned / "labels.json").read_bytes() == (first / "labels.json").read_bytes()
    assert (tuned / "tokenizer.json").read_bytes() == (first / "tokenizer.json").read_bytes()
    _assert_same_weights(
        _weights(tuned / "checkpoints" / "last"), _weights(first / "checkpoints" / "best")
    )
