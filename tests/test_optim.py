"""Learning-rate schedules and AdamW parameter groups (minitx/training/optim.py), against formulas
written out here: linear warmup, then inverse square root (Vaswani et al., 2017, 5.3), cosine or
constant; weight decay on matrices only, decoupled as in AdamW (Loshchilov & Hutter, 2019)."""

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from minitx.config import ModelConfig, TrainConfig
from minitx.model.transformer import build_model
from minitx.training.optim import build_optimizer, build_scheduler, lr_factor


def _expected(step: int, schedule: str, warmup: int, max_steps: int, min_ratio: float) -> float:
    """The schedule as documented: steps are 0-based, step s is the (s+1)-th update; warmup rises
    linearly to the peak reached at step warmup-1."""
    n = step + 1
    if n < warmup:
        return n / warmup
    if schedule == "inverse_sqrt":
        return math.sqrt(max(warmup, 1) / n)
    if schedule == "cosine":
        progress = min(1.0, (n - warmup) / max(1, max_steps - warmup))
        return min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * progress)) / 2
    return 1.0


# --- lr_factor: values worked out by hand ---------------------------------------------------------


@pytest.mark.parametrize("schedule", ["inverse_sqrt", "cosine", "constant"])
def test_warmup_rises_linearly_to_the_peak_at_its_last_step(schedule):
    # warmup 4: steps 0, 1, 2 are 1/4, 2/4, 3/4 of the peak; step 3 (the 4th update) is the peak.
    values = [lr_factor(s, schedule, 4, 100, 0.0) for s in range(4)]
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0], abs=1e-12)


def test_inverse_sqrt_decays_as_one_over_the_root_of_the_step():
    # sqrt(warmup / (step + 1)) with warmup 4
    assert lr_factor(3, "inverse_sqrt", 4, 10**6, 0.0) == pytest.approx(1.0)
    assert lr_factor(8, "inverse_sqrt", 4, 10**6, 0.0) == pytest.approx(2 / 3)  # sqrt(4/9)
    assert lr_factor(15, "inverse_sqrt", 4, 10**6, 0.0) == pytest.approx(0.5)  # sqrt(4/16)
    assert lr_factor(35, "inverse_sqrt", 4, 10**6, 0.0) == pytest.approx(1 / 3)  # sqrt(4/36)
    assert lr_factor(399, "inverse_sqrt", 4, 10**6, 0.0) == pytest.approx(0.1)  # sqrt(4/400)
    # max_steps and min_ratio play no part
    assert lr_factor(399, "inverse_sqrt", 4, 50, 0.9) == pytest.approx(0.1)


def test_cosine_passes_halfway_and_ends_at_min_lr():
    # warmup 10, max_steps 110: 100 cosine steps after the peak at step 9
    warmup, max_steps, min_ratio = 10, 110, 0.1
    assert lr_factor(9, "cosine", warmup, max_steps, min_ratio) == pytest.approx(1.0)
    # step 59: progress 50/100 → cos(π/2) = 0 → halfway between peak and floor
    assert lr_factor(59, "cosine", warmup, max_steps, min_ratio) == pytest.approx(0.55)
    # step 34: progress 1/4 → 0.1 + 0.9·(1 + cos(π/4))/2
    quarter = 0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2
    assert lr_factor(34, "cosine", warmup, max_steps, min_ratio) == pytest.approx(quarter)
    # the last of the max_steps updates (0-based max_steps-1) is at the floor, and it stays there
    assert lr_factor(max_steps - 1, "cosine", warmup, max_steps, min_ratio) == pytest.approx(0.1)
    assert lr_factor(max_steps - 2, "cosine", warmup, max_steps, min_ratio) > 0.1
    assert lr_factor(5 * max_steps, "cosine", warmup, max_steps, min_ratio) == pytest.approx(0.1)


def test_cosine_is_monotone_and_never_below_its_floor_after_warmup():
    warmup, max_steps, min_ratio = 7, 60, 0.25
    values = [lr_factor(s, "cosine", warmup, max_steps, min_ratio) for s in range(warmup - 1, 200)]
    assert values[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert min(values) >= min_ratio - 1e-12
    assert values[-1] == pytest.approx(min_ratio)


def test_constant_schedule_stays_at_the_peak_after_warmup():
    assert [lr_factor(s, "constant", 3, 10, 0.5) for s in range(2, 50)] == [1.0] * 48


def test_no_warmup_starts_at_the_peak():
    assert lr_factor(0, "constant", 0, 100, 0.0) == 1.0
    assert lr_factor(0, "inverse_sqrt", 0, 100, 0.0) == pytest.approx(1.0)
    assert lr_factor(3, "inverse_sqrt", 0, 100, 0.0) == pytest.approx(0.5)  # 1/sqrt(4)
    assert lr_factor(99, "inverse_sqrt", 0, 100, 0.0) == pytest.approx(0.1)  # 1/sqrt(100)
    # cosine over all 100 steps: step 49 is halfway, step 99 at the floor
    assert lr_factor(49, "cosine", 0, 100, 0.2) == pytest.approx(0.6)
    assert lr_factor(99, "cosine", 0, 100, 0.2) == pytest.approx(0.2)
    assert lr_factor(0, "cosine", 0, 100, 0.2) == pytest.approx(
        0.2 + 0.8 * (1 + math.cos(math.pi / 100)) / 2
    )


def test_cosine_follows_the_time_budget_when_it_runs_out_before_max_steps():
    warmup, max_steps = 10, 10**6
    # a quarter of the time after warmup spent at step 20: the rate of progress 1/4
    quarter = (1 + math.sqrt(0.5)) / 2
    assert lr_factor(20, "cosine", warmup, max_steps, 0.0, 0.25) == pytest.approx(quarter)
    assert lr_factor(20, "cosine", warmup, max_steps, 0.1, 1.0) == pytest.approx(0.1)
    assert lr_factor(20, "cosine", warmup, max_steps, 0.1, 3.0) == pytest.approx(0.1)  # overrun
    # whichever limit is nearer decides: 59 of 100 steps beat a tenth of the time
    assert lr_factor(59, "cosine", warmup, 110, 0.0, 0.1) == pytest.approx(0.5)
    # warmup and the other schedules do not look at the clock
    assert lr_factor(4, "cosine", warmup, max_steps, 0.0, 0.9) == pytest.approx(0.5)
    assert lr_factor(99, "inverse_sqrt", warmup, max_steps, 0.0, 0.9) == pytest.approx(
        math.sqrt(0.1)
    )


# --- build_scheduler on a real optimizer ----------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "warmup", "max_steps", "lr", "min_lr"),
    [
        ("inverse_sqrt", 5, 1000, 2e-3, 0.0),
        ("cosine", 5, 30, 1e-3, 1e-4),
        ("cosine", 0, 20, 1e-3, 0.0),
        ("constant", 4, 1000, 3e-4, 0.0),
        ("inverse_sqrt", 0, 1000, 1e-3, 0.0),
    ],
)
def test_scheduler_sets_the_learning_rate_of_every_step(schedule, warmup, max_steps, lr, min_lr):
    cfg = TrainConfig(
        lr=lr, schedule=schedule, warmup_steps=warmup, max_steps=max_steps, min_lr=min_lr
    )
    model = nn.Linear(3, 2)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    model(torch.randn(4, 3)).sum().backward()
    seen = []
    for step in range(max_steps + 5 if schedule == "cosine" else 60):
        expected = lr * _expected(step, schedule, warmup, max_steps, min_lr / lr)
        for group in optimizer.param_groups:  # both groups follow the schedule
            assert group["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-15), step
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    if warmup:
        assert seen[warmup - 1] == pytest.approx(lr)  # the peak, at the end of warmup
        assert seen[0] == pytest.approx(lr / warmup)
    if schedule == "cosine":
        assert seen[max_steps - 1] == pytest.approx(min_lr, abs=1e-15)
        assert min(seen[max(warmup - 1, 0) :]) >= min_lr * (1 - 1e-9)


def test_scheduler_ends_cosine_at_min_lr_in_absolute_terms():
    cfg = TrainConfig(lr=5e-4, schedule="cosine", warmup_steps=2, max_steps=12, min_lr=5e-5)
    optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    scheduler = build_scheduler(optimizer, cfg)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:2] == pytest.approx([2.5e-4, 5e-4])
    assert lrs[6] == pytest.approx(5e-5 + 4.5e-4 * (1 + math.cos(math.pi * 0.5)) / 2)  # 2.75e-4
    assert lrs[-1] == pytest.approx(5e-5)


# --- weight-decay groups --------------------------------------------------------------------------


def _small_model(positions="sinusoidal"):
    cfg = ModelConfig(
        d_model=16,
        n_heads=2,
        n_encoder_layers=1,
        n_decoder_layers=1,
        d_ff=32,
        dropout=0.0,
        positions=positions,
    )
    return build_model(cfg, 20, 20, 0, True)


def _by_kind(model: nn.Module) -> tuple[set[int], set[int]]:
    """Ids of the parameters that should decay (Linear and Embedding weights) and that should not
    (biases, LayerNorm gains and shifts), from the module types."""
    decay, no_decay = set(), set()
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            decay.add(id(module.weight))
            if getattr(module, "bias", None) is not None:
                no_decay.add(id(module.bias))
        elif isinstance(module, nn.LayerNorm):
            no_decay.update({id(module.weight), id(module.bias)})
    return decay, no_decay


@pytest.mark.parametrize("positions", ["sinusoidal", "relative"])
def test_matrices_decay_and_biases_and_norms_do_not(positions):
    model = _small_model(positions)
    cfg = TrainConfig(lr=1e-3, weight_decay=0.01, betas=[0.8, 0.95])
    optimizer = build_optimizer(model, cfg)
    by_decay = {g["weight_decay"]: [id(p) for p in g["params"]] for g in optimizer.param_groups}
    assert set(by_decay) == {0.01, 0.0}
    decay, no_decay = _by_kind(model)
    assert decay and no_decay
    assert set(by_decay[0.01]) == decay
    assert set(by_decay[0.0]) == no_decay
    # every trainable parameter in exactly one group, once (the tied embedding included)
    grouped = by_decay[0.01] + by_decay[0.0]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters()}
    assert model.decoder.output.weight is model.encoder.embedding.tokens.weight
    assert optimizer.defaults["lr"] == 1e-3
    assert tuple(optimizer.defaults["betas"]) == (0.8, 0.95)


def test_frozen_parameters_are_left_out():
    model = _small_model()
    frozen = model.encoder.layers[0].feed_forward.net[0]
    frozen.weight.requires_grad_(False)
    frozen.bias.requires_grad_(False)
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.1))
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)) and set(grouped) == trainable
    assert id(frozen.weight) not in grouped and id(frozen.bias) not in grouped


def test_one_adamw_step_with_zero_gradients_decays_only_the_matrices():
    """With a zero gradient Adam's moments stay 0 and its update is 0, so all that moves a
    parameter is the decoupled decay p ← p·(1 − lr·wd), on the decaying group only."""
    model = _small_model()
    lr, wd = 0.1, 0.5
    with torch.no_grad():  # non-zero biases and norms, so that a decay on them would show
        for p in model.parameters():
            if p.dim() < 2:
                p.uniform_(0.5, 1.5)
    optimizer = build_optimizer(model, TrainConfig(lr=lr, weight_decay=wd))
    before = {name: p.detach().double().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    params = dict(model.named_parameters())
    matrix = "encoder.layers.0.self_attention.q_proj.weight"
    bias = "encoder.layers.0.self_attention.q_proj.bias"
    norm = "encoder.layers.0.attention_residual.norm.weight"
    embedding = "encoder.embedding.tokens.weight"
    for name in (matrix, embedding):
        expected = before[name] * (1 - lr * wd)  # × 0.95
        torch.testing.assert_close(params[name].double(), expected, rtol=1e-6, atol=1e-7)
        assert not torch.allclose(params[name].double(), before[name])
    for name in (bias, norm):
        torch.testing.assert_close(params[name].double(), before[name], rtol=0, atol=0)


def test_the_cosine_attention_scale_is_a_gain_and_does_not_decay():
    """log_scale has shape (H, 1, 1): three dimensions, yet a per-head gain, not a matrix."""
    cfg = ModelConfig(d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32)
    model = build_model(replace(cfg, attention="cosine"), 20, 20, 0, True)
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.1))
    no_decay = {
        id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]
    }
    scales = [m.log_scale for m in model.modules() if hasattr(m, "log_scale")]
    assert len(scales) == 3 and all(id(scale) in no_decay for scale in scales)
