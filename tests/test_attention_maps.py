"""Seeing attention: weights recorded from the model's own forward pass, `minitx attention` and
`minitx plot` files."""

import json

import pytest
import torch

from minitx.api import load
from minitx.config import ModelConfig
from minitx.model.attention import AttentionSpec, MultiHeadAttention, recording_attention
from minitx.model.transformer import build_model

from test_cli import assert_user_error, minitx


@pytest.fixture
def tiny_run(tiny_translation_run):
    """The session's tiny translation run (2 + 2 layers): read only."""
    return tiny_translation_run.run


def test_recording_returns_the_weights_of_the_same_forward_pass():
    model = build_model(
        ModelConfig(
            d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=64, dropout=0.0
        ),
        30,
        30,
        0,
        True,
    ).eval()
    src, tgt = torch.randint(4, 30, (2, 7)), torch.randint(4, 30, (2, 5))
    src[1, 5:] = 0
    with torch.no_grad():
        plain = model(src, tgt)
        with recording_attention(model):
            recorded = model(src, tgt)
            cross = model.decoder.layers[0].cross_attention.weights
            decoder_self = model.decoder.layers[1].self_attention.weights
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    assert cross.shape == (2, 4, 5, 7) and decoder_self.shape == (2, 4, 5, 5)
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, 4, 5))
    assert cross[1, ..., 5:].abs().max() == 0  # padding gets no attention
    assert decoder_self.triu(1).abs().max() == 0  # nor does the future
    assert model.decoder.layers[0].cross_attention.weights is None  # recording ends with the block


def test_windowed_weights_are_drawn_over_the_whole_sequence():
    attention = MultiHeadAttention(AttentionSpec(16, 2, window=1, dilation=2)).eval()
    x = torch.randn(1, 6, 16)
    with torch.no_grad(), recording_attention(attention):
        attention(x, x)
        weights = attention.weights
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2, 6))
    allowed = torch.zeros(6, 6, dtype=torch.bool)
    for i in range(6):
        for j in (i - 2, i, i + 2):
            if 0 <= j < 6:
                allowed[i, j] = True
    assert weights[..., ~allowed].abs().max() == 0


def test_attention_maps_cover_every_kind_and_layer(tiny_run):
    maps = load(tiny_run).attention("ein hund rennt")
    kinds = [(m["kind"], m["layer"]) for m in maps["maps"]]
    assert kinds == [
        ("encoder_self", 0),
        ("encoder_self", 1),
        ("decoder_self", 0),
        ("cross", 0),
        ("decoder_self", 1),
        ("cross", 1),
    ]
    source, target = len(maps["source_tokens"]), len(maps["target_tokens"])
    assert maps["source_tokens"][-1] == "</s>" and maps["target_tokens"][0] == "<s>"
    assert maps["maps"][3]["weights"].shape == (4, target, source)


def test_attention_command_writes_png_and_json(tiny_run, tmp_path):
    args = ("--out", tmp_path, "--layer", "1", "--head", "1")
    result = minitx("attention", tiny_run, "ein hund rennt", *args)
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [
        f"{kind}_layer1_head1.{ext}"
        for kind in ("cross", "decoder_self", "encoder_self")
        for ext in ("json", "png")
    ]
    record = json.loads((tmp_path / "cross_layer1_head1.json").read_text())
    assert record["heads"] == [1] and len(record["weights"]) == 1
    assert len(record["weights"][0]) == len(record["queries"])
    assert len(record["weights"][0][0]) == len(record["keys"])
    assert (tmp_path / "cross_layer1_head1.png").read_bytes().startswith(b"\x89PNG")
    assert_user_error(minitx("attention", tiny_run, "x", "--layer", "5"), "layers 0 to 1")


def test_plot_command_draws_the_curves(tiny_translation_run, tmp_path):
    run = tiny_translation_run.copy(tmp_path)  # the plot is written into the run directory
    result = minitx("plot", run)
    assert result.returncode == 0, result.stderr
    assert "validation bleu" in result.stdout
    assert (run / "plots" / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert_user_error(minitx("plot", tmp_path), "no metrics.jsonl")


def test_tensorboard_logging_writes_event_files_or_says_what_to_install(tmp_path):
    from minitx.errors import UserError
    from minitx.metrics import MetricsLog

    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"pip install 'minitx\[tensorboard\]'"):
            MetricsLog(tmp_path / "metrics.jsonl", tmp_path / "tb")
        return
    log = MetricsLog(tmp_path / "metrics.jsonl", tmp_path / "tb")
    log.write("train", step=1, loss=2.5, lr=1e-3)
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())
