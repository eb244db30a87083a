import pytest
import torch

from minitx.model.attention import (
    AttentionSpec,
    MultiHeadAttention,
    causal_mask,
    explicit_attention,
)
from minitx.model.checkpoint import load_weights, save_checkpoint
from minitx.model.positions import SinusoidalPositions
from minitx.model.transformer import build_model

PAD = 0


def _model(cfg, vocab=40, joint=True):
    return build_model(cfg, vocab, vocab, PAD, joint).eval()


def test_padding_does_not_change_outputs_at_real_positions(tiny_model_config):
    model = _model(tiny_model_config)
    src = torch.randint(4, 40, (2, 6))
    tgt = torch.randint(4, 40, (2, 5))
    padded_src = torch.cat([src, torch.full((2, 4), PAD)], dim=1)
    padded_tgt = torch.cat([tgt, torch.full((2, 3), PAD)], dim=1)
    with torch.no_grad():
        plain = model(src, tgt)
        padded = model(padded_src, padded_tgt)
    torch.testing.assert_close(padded[:, :5], plain, rtol=1e-5, atol=1e-5)


def test_sentences_in_a_batch_do_not_affect_each_other(tiny_model_config):
    model = _model(tiny_model_config)
    short = torch.tensor([[5, 6, 7]])
    long = torch.tensor([[8, 9, 10, 11, 12, 13]])
    batch = torch.tensor([[5, 6, 7, PAD, PAD, PAD], [8, 9, 10, 11, 12, 13]])
    tgt = torch.tensor([[4, 5], [6, 7]])
    with torch.no_grad():
        together = model(batch, tgt)
        alone = torch.cat([model(short, tgt[:1]), model(long, tgt[1:])])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_causal_mask_hides_the_future(tiny_model_config):
    model = _model(tiny_model_config)
    src = torch.randint(4, 40, (1, 6))
    tgt = torch.randint(4, 40, (1, 7))
    changed = tgt.clone()
    changed[0, 4:] = torch.randint(4, 40, (3,))
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_source_mask_hides_padding_from_every_query():
    attention = MultiHeadAttention(AttentionSpec(16, 2)).eval()
    x = torch.randn(1, 5, 16)
    mask = torch.tensor([True, True, True, False, False])[None, None, None, :]
    changed = x.clone()
    changed[0, 3:] = torch.randn(2, 16)
    with torch.no_grad():
        a = attention(x, x, mask=mask)
        b = attention(x, changed, mask=mask)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("causal", [False, True])
def test_explicit_attention_matches_fused_kernel(causal):
    q, k, v = (torch.randn(3, 2, 6, 8, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    mask[0, ..., 4:] = False
    reference = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=None if causal else mask, is_causal=causal
    )
    allowed = causal_mask(6, 6, q.device) if causal else mask
    mine, _ = explicit_attention(q, k, v, allowed, dropout=0.0)
    torch.testing.assert_close(mine, reference)


def test_causal_mask_lets_each_query_see_itself_and_the_past_only():
    assert causal_mask(3, 3, torch.device("cpu")).tolist() == [
        [True, False, False],
        [True, True, False],
        [True, True, True],
    ]
    # Two new queries after a cached prefix of two: they are positions 2 and 3 of 4.
    assert causal_mask(2, 4, torch.device("cpu")).tolist() == [
        [True, True, True, False],
        [True, True, True, True],
    ]


def test_explicit_attention_is_softmax_qk_v():
    q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    weights = torch.softmax(q[0, 0] @ k[0, 0].T / 2.0, dim=-1)  # √d_k = 2
    torch.testing.assert_close(explicit_attention(q, k, v, None)[0][0, 0], weights @ v[0, 0])


def test_sinusoidal_positions_follow_the_formula():
    table = SinusoidalPositions(8)(5, offset=3)
    position, i = 4, 1  # row 1 is position 4; column 2i
    assert table[1, 2 * i].item() == pytest.approx(
        torch.sin(torch.tensor(position / 10000 ** (2 * i / 8))).item()
    )
    assert table[1, 2 * i + 1].item() == pytest.approx(
        torch.cos(torch.tensor(position / 10000 ** (2 * i / 8))).item()
    )
    assert SinusoidalPositions(8, initial_length=4)(10, offset=20).shape == (10, 8)


def test_joint_vocabulary_shares_one_embedding_table(tiny_model_config):
    joint = _model(tiny_model_config, joint=True)
    assert joint.encoder.embedding is joint.decoder.embedding
    assert joint.decoder.output.weight is joint.encoder.embedding.tokens.weight
    separate = _model(tiny_model_config, joint=False)
    assert separate.encoder.embedding is not separate.decoder.embedding


def test_post_norm_and_gelu_build_and_run(tiny_model_config):
    from dataclasses import replace

    cfg = replace(tiny_model_config, norm="post", activation="gelu", tie_embeddings=False)
    out = _model(cfg)(torch.randint(4, 40, (2, 5)), torch.randint(4, 40, (2, 3)))
    assert out.shape == (2, 3, 40) and torch.isfinite(out).all()


def test_save_then_load_gives_identical_logits(tiny_model_config, tmp_path):
    model = _model(tiny_model_config)
    save_checkpoint(tmp_path / "ckpt", model, {"step": 1})
    restored = _model(tiny_model_config)
    load_weights(tmp_path / "ckpt", restored, torch.device("cpu"))
    src, tgt = torch.randint(4, 40, (2, 6)), torch.randint(4, 40, (2, 4))
    with torch.no_grad():
        assert torch.equal(model(src, tgt), restored(src, tgt))
    assert not (tmp_path / "ckpt.tmp").exists() and not (tmp_path / "ckpt.old").exists()


def test_loading_weights_into_another_shape_is_a_user_error(tiny_model_config, tmp_path):
    from dataclasses import replace

    from minitx.errors import UserError

    save_checkpoint(tmp_path / "ckpt", _model(tiny_model_config), {"step": 1})
    wider = _model(replace(tiny_model_config, d_ff=128))
    with pytest.raises(UserError, match="different model config"):
        load_weights(tmp_path / "ckpt", wider, torch.device("cpu"))


def test_fast_cpu_dropout_keeps_the_right_share_and_the_expectation():
    from minitx.model.dropout import Dropout, apply_dropout

    x = torch.ones(1000, 1000, dtype=torch.bfloat16)
    out = apply_dropout(x, 0.3, training=True)
    kept = (out != 0).float().mean().item()
    assert abs(kept - 0.7) < 0.003  # 1e6 draws: the standard error is 0.0005
    assert abs(out.float().mean().item() - 1.0) < 0.01
    assert torch.equal(apply_dropout(x, 0.3, training=False), x)
    torch.manual_seed(5)
    a = apply_dropout(x, 0.5, training=True)
    torch.manual_seed(5)
    assert torch.equal(a, apply_dropout(x, 0.5, training=True))  # seeded like every torch draw
    layer = Dropout(0.2).eval()
    assert layer(x) is x
