"""The training loop in-process: stopping, resuming, and what it writes."""

import json

import pytest
import torch
import yaml

from minitx.config import config_from_dict

from conftest import tiny_config, tiny_config_yaml, train_run


def _config(data_dir, **train_overrides):
    return tiny_config(data_dir, model={"dropout": 0.1}, train=train_overrides)


def _train(cfg, run_dir):
    return train_run(cfg, run_dir)


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {e["step"]: e["loss"] for e in map(json.loads, lines) if e["event"] == "train"}


def test_stops_at_max_steps_and_does_not_step_past_it_on_resume(parallel_dir, tmp_path):
    import minitx

    cfg = _config(parallel_dir, max_steps=4, eval_every=2, log_every=1)
    _train(cfg, tmp_path / "run")
    assert sorted(_losses(tmp_path / "run")) == [1, 2, 3, 4]
    again = _train(cfg, tmp_path / "run")
    assert sorted(_losses(tmp_path / "run")) == [1, 2, 3, 4]
    # What the finished run reports is the step-4 weights' greedy validation score, as `minitx
    # eval` computes it anew from the checkpoint.
    report = minitx.load(tmp_path / "run", "last").evaluate("validation", beam_size=1)
    assert report["checkpoint_step"] == 4
    assert {k: again[k] for k in ("bleu", "chrf", "loss")} == {
        k: report[k] for k in ("bleu", "chrf", "loss")
    }


def test_the_first_log_line_after_a_resume_averages_the_same_steps(parallel_dir, tmp_path):
    """Log every 3 steps, stop at 5 (mid-window), resume to 7: the step-6 line averages steps
    4-6 as in an uninterrupted run, not only step 6."""
    whole = _config(parallel_dir, max_steps=7, eval_every=100, log_every=3)
    _train(whole, tmp_path / "whole")
    _train(_config(parallel_dir, max_steps=5, eval_every=100, log_every=3), tmp_path / "parts")
    _train(whole, tmp_path / "parts")
    assert sorted(_losses(tmp_path / "whole")) == [3, 6]
    assert _losses(tmp_path / "parts") == _losses(tmp_path / "whole")


def test_max_epochs_stops_at_the_end_of_an_epoch(parallel_dir, tmp_path):
    from minitx.data.run_data import load_run_data
    from minitx.run_dir import RunDir
    from minitx.tasks import get_task

    cfg = _config(parallel_dir, max_steps=1000, max_epochs=2, eval_every=1000, log_every=1)
    _train(cfg, tmp_path / "run")
    end = _events(tmp_path / "run")[-1]
    data = load_run_data(cfg, RunDir(tmp_path / "run"), ("train",), get_task(cfg.task))
    per_epoch = len(data.splits["train"].batch_groups(cfg.train.batch_tokens, cfg.run.seed))
    assert end["reason"] == "reached train.max_epochs (2)"
    assert (end["step"], end["epoch"]) == (2 * per_epoch, 2)


def test_max_time_stops_after_that_much_training(parallel_dir, tmp_path):
    cfg = _config(parallel_dir, max_steps=100000, max_time="1s", eval_every=100000)
    _train(cfg, tmp_path / "run")
    end = _events(tmp_path / "run")[-1]
    assert end["reason"] == "reached train.max_time (1 s)"
    assert 1.0 <= end["elapsed"] < 60 and 1 <= end["step"] < 100000


def test_cosine_with_max_time_reaches_its_floor_when_time_runs_out(parallel_dir, tmp_path):
    """max_steps is far away; the schedule decays over the 3 s budget instead, so the last
    steps train near min_lr and the rate falls step by step after warmup."""
    cfg = _config(
        parallel_dir,
        max_steps=100000,
        max_time="3s",
        eval_every=100000,
        log_every=1,
        schedule="cosine",
        warmup_steps=2,
        lr=1e-3,
        min_lr=1e-5,
    )
    _train(cfg, tmp_path / "run")
    rates = [e["lr"] for e in _events(tmp_path / "run") if e["event"] == "train"]
    assert len(rates) >= 10 and rates[1] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[1:], rates[2:], strict=False))
    assert rates[-1] < 0.1 * 1e-3  # within the last tenth of the cosine: its floor is near


def test_bf16_on_a_cpu_without_native_bf16_warns_with_the_fix(
    parallel_dir, tmp_path, monkeypatch, caplog
):
    from dataclasses import replace

    from minitx import runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    cfg = _config(parallel_dir, max_steps=1, eval_every=1)
    _train(replace(cfg, run=replace(cfg.run, dtype="bf16")), tmp_path / "bf16")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "no native bf16" in warnings[0]
    assert "--set run.dtype=fp32" in warnings[0]
    caplog.clear()
    _train(replace(cfg, run=replace(cfg.run, dtype="auto")), tmp_path / "auto")  # picks fp32
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_resume_mid_epoch_continues_like_an_uninterrupted_run(parallel_dir, tmp_path):
    """Stop at step 5 (mid-epoch), resume to 9: same losses and weights as 9 steps in one go."""
    whole = _config(parallel_dir, max_steps=9, eval_every=5, log_every=1)
    _train(whole, tmp_path / "whole")
    part = _config(parallel_dir, max_steps=5, eval_every=5, log_every=1)
    _train(part, tmp_path / "parts")
    _train(whole, tmp_path / "parts")
    assert _losses(tmp_path / "parts") == _losses(tmp_path / "whole")
    from safetensors.torch import load_file

    a = load_file(tmp_path / "whole/checkpoints/last/model.safetensors")
    b = load_file(tmp_path / "parts/checkpoints/last/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_patience_stops_early(parallel_dir, tmp_path):
    cfg = _config(
        parallel_dir,
        max_steps=60,
        eval_every=1,
        log_every=1,
        lr=0.0,
        warmup_steps=0,
        early_stopping_metric="loss",
        patience=2,
    )
    _train(cfg, tmp_path / "run")
    events = [
        json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    ]
    assert (
        events[-1]["event"] == "end" and "no improvement in 2 validations" in events[-1]["reason"]
    )
    assert events[-1]["step"] == 3


@pytest.mark.parametrize("accumulate", [1, 2])
def test_training_lowers_the_loss(parallel_dir, tmp_path, accumulate):
    cfg = _config(parallel_dir, max_steps=30, eval_every=30, log_every=5, accumulate=accumulate)
    _train(cfg, tmp_path / "run")
    losses = _losses(tmp_path / "run")
    assert losses[30] < losses[5]


def test_non_finite_loss_stops_with_a_crash_checkpoint_that_never_becomes_best(
    parallel_dir, tmp_path, monkeypatch
):
    from minitx.errors import UserError
    from minitx.training import trainer

    cfg = _config(parallel_dir, max_steps=8, eval_every=2, log_every=1)
    real_loss = trainer.summed_loss  # the training step's; validation binds its own
    calls = {"n": 0}

    def diverging(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(trainer, "summed_loss", diverging)
    with pytest.raises(UserError, match="non-finite at step 3"):
        _train(cfg, tmp_path / "run")
    crash = json.loads((tmp_path / "run/checkpoints/crash/meta.json").read_text())
    best = json.loads((tmp_path / "run/checkpoints/best/meta.json").read_text())
    assert crash["failed_step"] == 3 and best["step"] == 2
    from safetensors.torch import load_file

    assert all(
        torch.isfinite(t).all()
        for t in load_file(tmp_path / "run/checkpoints/crash/model.safetensors").values()
    )


def test_same_seed_deterministic_runs_write_identical_metrics(parallel_dir, tmp_path):
    cfg = _config(parallel_dir, max_steps=6, eval_every=3, log_every=1)
    from dataclasses import replace

    cfg = replace(cfg, run=replace(cfg.run, deterministic=True))
    timing = {"time", "elapsed", "tgt_tokens_per_s"}

    def metrics(run_dir):
        _train(cfg, run_dir)
        events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in e.items() if k not in timing} for e in events]

    try:
        assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    finally:
        torch.use_deterministic_algorithms(False)


def test_resume_records_changed_training_keys(parallel_dir, tmp_path):
    _train(_config(parallel_dir, max_steps=3, eval_every=3), tmp_path / "run")
    _train(_config(parallel_dir, max_steps=5, eval_every=3), tmp_path / "run")
    events = [
        json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    ]
    resume = [e for e in events if e["event"] == "resume"]
    assert resume == [{**resume[0], "step": 3, "changed": ["train.max_steps: 3 → 5"]}]


def test_keep_last_keeps_that_many_step_checkpoints(parallel_dir, tmp_path):
    cfg = _config(parallel_dir, max_steps=8, eval_every=2, keep_last=2)
    _train(cfg, tmp_path / "run")
    kept = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir())
    assert kept == ["best", "last", "step_00000006", "step_00000008"]
    last = (tmp_path / "run/checkpoints/last/model.safetensors").read_bytes()
    assert (tmp_path / "run/checkpoints/step_00000008/model.safetensors").read_bytes() == last


def test_a_full_disk_is_refused_before_training(parallel_dir, tmp_path, monkeypatch):
    import shutil as shutil_module

    from minitx.errors import UserError

    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage._replace(free=1024))
    with pytest.raises(UserError, match="MiB free"):
        _train(_config(parallel_dir, max_steps=2), tmp_path / "run")
    assert not (tmp_path / "run/checkpoints").exists()


def test_compile_that_fails_falls_back_to_eager_with_a_warning(
    parallel_dir, tmp_path, monkeypatch, caplog
):
    class Broken(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.pad_id = model.pad_id

        def forward(self, *args):
            raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", lambda model: Broken(model))
    cfg = _config(parallel_dir, max_steps=3, eval_every=3, log_every=1, compile=True)
    scores = _train(cfg, tmp_path / "run")
    assert "torch.compile failed (RuntimeError); training eagerly" in caplog.text
    assert sorted(_losses(tmp_path / "run")) == [1, 2, 3] and "bleu" in scores


def test_fp16_trains_with_a_loss_scaler_that_is_saved_and_restored(parallel_dir, tmp_path):
    """fp16 autocast (here on CPU) with dynamic loss scaling: the loss falls, the scaler's state is
    in the checkpoint, and a resumed run continues like an uninterrupted one."""
    raw = yaml.safe_load(tiny_config_yaml(str(parallel_dir)))
    raw["run"] = {**raw.get("run", {}), "dtype": "fp16"}
    raw["train"].update(eval_every=4, log_every=1, max_steps=8)
    whole = config_from_dict(raw)
    _train(whole, tmp_path / "whole")
    losses = _losses(tmp_path / "whole")
    assert all(map(torch.isfinite, map(torch.tensor, losses.values())))
    assert losses[8] < losses[1]
    scaler = torch.load(tmp_path / "whole/checkpoints/last/trainer.pt", weights_only=True)["scaler"]
    assert scaler["scale"] > 0 and scaler["_growth_tracker"] > 0

    raw["train"]["max_steps"] = 4
    _train(config_from_dict(raw), tmp_path / "parts")
    _train(whole, tmp_path / "parts")
    assert _losses(tmp_path / "parts") == losses


def test_auto_dtype_is_resolved_announced_and_saved(parallel_dir, tmp_path, monkeypatch, capsys):
    """run.dtype auto trains in bf16 where the CPU has it and fp32 where not, says which at the
    start, and writes the resolved value into the run's config.yaml."""
    from minitx import runtime
    from minitx.progress import show_status
    from minitx.run_dir import RunDir

    show_status()  # status lines on stderr, as the command line shows them
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(runtime, "cpu_has_bf16", lambda native=native: native)
        raw = yaml.safe_load(tiny_config_yaml(str(parallel_dir)))
        raw["run"] = {**raw.get("run", {}), "dtype": "auto"}
        raw["train"].update(max_steps=2, eval_every=2)
        run_dir = tmp_path / expected
        _train(config_from_dict(raw), run_dir)
        assert RunDir(run_dir).config().run.dtype == expected
        assert f"({expected} chosen by run.dtype auto)" in capsys.readouterr().err


def _copy_task(directory, seed: int = 0):
    """Sequences of 3-6 of twelve lower-case symbols, to be written in upper case in the same
    order: solvable only by reading the source (cross-attention), in order (positions), one token
    after another without seeing the answer (the causal mask)."""
    import random

    from conftest import write_parallel

    rng, seen, pairs = random.Random(seed), set(), []
    while len(pairs) < 2300:
        symbols = [rng.choice("abcdefghijkl") for _ in range(rng.randint(3, 6))]
        if " ".join(symbols) not in seen:
            seen.add(" ".join(symbols))
            pairs.append((" ".join(symbols), " ".join(s.upper() for s in symbols)))
    write_parallel(directory, "train", pairs[:2000])
    write_parallel(directory, "val", pairs[2000:2200])
    write_parallel(directory, "test", pairs[2200:])


def copy_task_exact_match(tmp_path, seed: int = 3, dtype: str = "fp32") -> float:
    """Train a small model on the copy task through minitx's own loop; greedy exact match (%) on
    200 unseen sequences. `seed` is run.seed (the initial weights and the batch order)."""
    _copy_task(tmp_path / "copy")
    raw = yaml.safe_load(tiny_config_yaml(str(tmp_path / "copy")))
    raw["run"] = {"device": "cpu", "seed": seed, "dtype": dtype}
    raw["tokenizer"] = {"vocab_size": 40, "min_frequency": 1}
    raw["model"] = {
        "d_model": 64,
        "n_heads": 4,
        "n_encoder_layers": 2,
        "n_decoder_layers": 2,
        "d_ff": 128,
        "dropout": 0.0,
    }
    raw["train"] = {
        "batch_tokens": 1024,
        "lr": 5e-3,
        "warmup_steps": 30,
        "max_steps": 450,
        "eval_every": 450,
        "log_every": 50,
        "label_smoothing": 0.0,
    }
    raw["decode"] = {"beam_size": 1}
    return _train(config_from_dict(raw), tmp_path / "run")["exact_match"]


@pytest.mark.slow
def test_a_model_learns_a_task_that_needs_the_source_its_order_and_the_causal_mask(tmp_path):
    """The end-to-end quality bar. Measured when it was written (Zen 5, 2 threads, ~25 s): 97.5%
    exact match; with model.positions none 4.0%. A decoder that ignores the source can do no
    better than guessing a sequence of 3-6 of 12 symbols."""
    # Calibrated in fp32 (pinned in the config) over run.seed, on an Ice Lake CPU without native
    # bf16: with 2 threads seeds 3 (this test), 1, 2 gave 96.0, 96.5, 97.5%; with 1 thread seeds
    # 1-7 gave 96.5, 97.0, 82.5, 97.0, 93.0, 97.0, 91.0%; a Zen 3 gave 84.0% for seed 3. The
    # thread count alone moves seed 3 from 96.0 to 82.5: training this short is chaotic, so the
    # bar sits below the worst run seen, far above what a model without positions reaches (4%).
    assert copy_task_exact_match(tmp_path) >= 75.0
