"""The step-by-step record of attention (`recording_attention(steps=True)`): for every score and
position option, grouped-query heads and local or dilated windows, the recorded terms put back
together reproduce what each attention module outputs in an ordinary forward pass."""

from __future__ import annotations

import pytest
import torch
from test_attention_variants import POSITIONS, SCORES
from test_attention_variants import _model as small_model

from minitx.model.attention import MultiHeadAttention, recording_attention
from minitx.views.attention_page import bias_by_distance


def _model(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return small_model(**options)


def _batch():
    src = torch.randint(4, 40, (2, 11))
    src[1, 8:] = 0  # padding: the second sentence is shorter
    tgt = torch.randint(4, 40, (2, 7))
    return src, tgt


def _outputs(model, src, tgt, steps: bool) -> dict[str, tuple[torch.Tensor, dict | None]]:
    """Each attention module's output for (src, tgt), and its record when `steps`."""
    outputs, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, MultiHeadAttention):
            hooks.append(module.register_forward_hook(_keep(outputs, name)))
    with torch.no_grad(), recording_attention(model, steps=steps):
        model(src, tgt)
        records = {
            name: module.steps
            for name, module in model.named_modules()
            if isinstance(module, MultiHeadAttention)
        }
    for hook in hooks:
        hook.remove()
    return {name: (out, records[name]) for name, out in outputs.items()}


def _keep(outputs: dict, name: str):
    def hook(module, args, output):
        outputs[name] = output.detach()

    return hook


def _rebuilt(steps: dict) -> torch.Tensor:
    """The layer output from the record alone: scores → weights → Σ w·v → shares → sum."""
    scores = steps["raw"] * steps["scale"][:, None, None]
    if "bias" in steps:
        scores = scores + steps["bias"]
    if "allowed" in steps:
        scores = scores.masked_fill(~steps["allowed"], float("-inf"))
    weights = scores.softmax(-1)
    torch.testing.assert_close(weights, steps["weights"], atol=1e-6, rtol=0)
    head_out = weights @ steps["v"]
    if "gate" in steps:
        head_out = head_out * steps["gate"][:, None, None]
    torch.testing.assert_close(head_out, steps["head_out"], atol=1e-5, rtol=0)
    return steps["share"].sum(dim=1) + steps["out_bias"]


def _check(model, real_rows_only: bool = False) -> None:
    src, tgt = _batch()
    plain = _outputs(model, src, tgt, steps=False)
    recorded = _outputs(model, src, tgt, steps=True)
    assert plain.keys() == recorded.keys() and len(plain) == 6  # 2 encoder, 2×2 decoder modules
    for name, (output, _) in plain.items():
        steps = recorded[name][1]
        rows = _real_rows(name, src, real_rows_only)
        torch.testing.assert_close(_rebuilt(steps)[rows], output[rows], atol=1e-5, rtol=0)
        # the raw scores are q·k of the recorded vectors (where computed: a window skips keys)
        product = steps["q"] @ steps["k"].transpose(-2, -1)
        computed = steps.get("allowed", torch.tensor(True)).expand_as(product)
        torch.testing.assert_close(steps["raw"][computed], product[computed], atol=1e-5, rtol=0)
        if "bias" in steps:  # the page stores it by distance: nothing is lost
            _, queries, keys = steps["bias"].shape
            distance = torch.arange(keys)[None, :] - torch.arange(queries)[:, None]
            by_distance = bias_by_distance(steps["bias"])[:, distance + queries - 1]
            torch.testing.assert_close(by_distance, steps["bias"], atol=0, rtol=0)


def _real_rows(name: str, src: torch.Tensor, real_rows_only: bool):
    """Padding queries of the encoder are never read; banded attention lets them see only
    themselves, full attention sees the real keys, so compare real rows only where asked."""
    if real_rows_only and name.startswith("encoder"):
        return src != 0
    return slice(None)


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("score", SCORES)
def test_the_record_reproduces_each_layer_output(score, positions):
    _check(_model(attention=score, positions=positions))


@pytest.mark.parametrize("n_kv_heads", [2, 1])
def test_the_record_reproduces_grouped_query_heads(n_kv_heads):
    model = _model(n_kv_heads=n_kv_heads, positions="rope")
    _check(model)
    steps = _outputs(model, *_batch(), steps=True)["encoder.layers.0.self_attention"][1]
    assert steps["k"].shape[1] == 4  # one key per query head: the shared ones repeated


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("positions", ["relative", "alibi"])
def test_the_record_reproduces_local_and_dilated_windows(dilation, positions):
    model = _model(window=2, dilation=dilation, positions=positions, attention="cosine")
    _check(model, real_rows_only=True)
    src, tgt = _batch()
    steps = _outputs(model, src, tgt, steps=True)["encoder.layers.0.self_attention"][1]
    allowed = steps["allowed"][0, 0]  # (T, T) of the first sentence
    distance = torch.arange(11)[None, :] - torch.arange(11)[:, None]
    in_window = (distance.abs() <= 2 * dilation) & (distance % dilation == 0)
    assert torch.equal(allowed, in_window)


def test_the_record_keeps_a_masked_head_masked():
    model = _model()
    attention = model.encoder.layers[0].self_attention
    attention.head_gate = torch.tensor([1.0, 0.0, 1.0, 1.0])
    _check(model)
    steps = _outputs(model, *_batch(), steps=True)["encoder.layers.0.self_attention"][1]
    assert float(steps["share"][:, 1].abs().max()) == 0.0


def test_recording_ends_with_the_block():
    model = _model()
    src, tgt = _batch()
    _outputs(model, src, tgt, steps=True)
    assert all(
        module.steps is None and not module.keep_steps
        for module in model.modules()
        if isinstance(module, MultiHeadAttention)
    )
