"""Attention variants: scoring functions against a float64 reference, positions with the KV cache and
long inputs, grouped-query heads, and windowed (dilated) attention."""

import math

import pytest
import torch

from minitx.config import DecodeConfig, ModelConfig
from minitx.data.tokenizer import SpecialIds
from minitx.inference.decode import greedy
from minitx.model.attention import AttentionSpec, MultiHeadAttention, recording_attention
from minitx.model.positions import RelativeBias
from minitx.model.transformer import build_model

POSITIONS = ["sinusoidal", "learned", "rope", "relative", "alibi", "none"]
SCORES = ["scaled_dot", "dot", "cosine"]


def _rotate(t: torch.Tensor) -> torch.Tensor:
    """RoFormer (Su et al., 2021, eq. 34) in float64: features (2i, 2i+1) of the vector at position
    m turned by the angle m·θ_i, θ_i = 10000^(−2i/d), for positions m = 0…T−1."""
    length, d_head = t.shape[-2], t.shape[-1]
    out = torch.empty_like(t)
    for m in range(length):
        for i in range(d_head // 2):
            angle = m * 10000.0 ** (-2 * i / d_head)
            c, s = math.cos(angle), math.sin(angle)
            even, odd = t[..., m, 2 * i], t[..., m, 2 * i + 1]
            out[..., m, 2 * i] = even * c - odd * s
            out[..., m, 2 * i + 1] = even * s + odd * c
    return out


def _position_bias(attention: MultiHeadAttention, positions: str, length: int) -> torch.Tensor:
    """(H, T, T) float64 bias of query i against key j. ALiBi by its formula, −2^(−8h/H)·|j − i|
    for heads h = 1…H; T5's bias from the module's learned table, looked up by bucket (bucketing
    is tested on its own below)."""
    n_heads = attention.n_heads
    distance = torch.arange(length)[None, :] - torch.arange(length)[:, None]  # key − query
    if positions == "alibi":
        slopes = torch.tensor([2.0 ** (-8 * h / n_heads) for h in range(1, n_heads + 1)])
        return -slopes.double()[:, None, None] * distance.abs().double()
    table = attention.bias.bias.weight.double()  # (buckets, H)
    bias = torch.empty(n_heads, length, length, dtype=torch.float64)
    buckets = attention.bias._bucket(distance)
    for i in range(length):
        for j in range(length):
            bias[:, i, j] = table[int(buckets[i, j])]
    return bias


def _reference(
    attention: MultiHeadAttention, x, mask, causal, positions: str = "none"
) -> torch.Tensor:
    """The textbook formula in float64, from the module's weights: no code shared with it."""
    x = x.double()
    n_heads, n_kv, d_head = attention.n_heads, attention.n_kv_heads, attention.d_head
    q = x @ attention.q_proj.weight.double().T + attention.q_proj.bias.double()
    kv = x @ attention.kv_proj.weight.double().T + attention.kv_proj.bias.double()
    k, v = kv[..., : n_kv * d_head], kv[..., n_kv * d_head :]
    batch, length, _ = x.shape
    q = q.view(batch, length, n_heads, d_head).transpose(1, 2)
    k = k.view(batch, length, n_kv, d_head).transpose(1, 2).repeat_interleave(n_heads // n_kv, 1)
    v = v.view(batch, length, n_kv, d_head).transpose(1, 2).repeat_interleave(n_heads // n_kv, 1)
    if positions == "rope":
        q, k = _rotate(q), _rotate(k)
    if attention.score == "scaled_dot":
        scores = q @ k.transpose(-2, -1) / math.sqrt(d_head)
    elif attention.score == "dot":
        scores = q @ k.transpose(-2, -1)
    else:
        scale = attention.log_scale.double().exp()
        scores = (
            scale
            * (q / q.norm(dim=-1, keepdim=True))
            @ (k / k.norm(dim=-1, keepdim=True)).transpose(-2, -1)
        )
    if positions in ("relative", "alibi"):
        scores = scores + _position_bias(attention, positions, length)
    allowed = mask.expand(batch, n_heads, length, length).clone()
    if causal:
        allowed &= torch.ones(length, length, dtype=torch.bool).tril()
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, length, n_heads * d_head)
    return out @ attention.out_proj.weight.double().T + attention.out_proj.bias.double()


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_each_score_matches_a_float64_reference(score, causal, n_kv_heads):
    attention = MultiHeadAttention(AttentionSpec(32, 4, n_kv_heads=n_kv_heads, score=score)).eval()
    x = torch.randn(3, 7, 32)
    mask = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False
    mask[2, ..., 3:] = False
    with torch.no_grad():
        mine = attention(x, x, mask=mask, causal=causal).double()
        reference = _reference(attention, x, mask, causal)
    real = mask[:, 0, 0, :, None].expand_as(mine)  # padded queries' outputs are unused
    error = (mine - reference)[real].norm() / reference[real].norm()
    assert error < 1e-5


def _padded_input(length=7):
    x = torch.randn(3, length, 32)
    mask = torch.ones(3, 1, 1, length, dtype=torch.bool)
    mask[1, ..., 5:] = False
    mask[2, ..., 2:] = False
    return x, mask


# (positions, relative_bidirectional): T5's encoder buckets both directions, its decoder only the past
IN_ATTENTION = [("rope", True), ("relative", True), ("relative", False), ("alibi", True)]


@pytest.mark.parametrize(("positions", "bidirectional"), IN_ATTENTION)
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_kv_heads", [4, 1])
def test_positions_inside_attention_match_a_float64_reference(
    positions, bidirectional, score, causal, n_kv_heads
):
    spec = AttentionSpec(
        32,
        4,
        n_kv_heads=n_kv_heads,
        score=score,
        positions=positions,
        relative_bidirectional=bidirectional,
    )
    attention = MultiHeadAttention(spec).eval()
    x, mask = _padded_input()
    with torch.no_grad():
        mine = attention(x, x, mask=mask, causal=causal).double()
        reference = _reference(attention, x, mask, causal, positions)
        without = _reference(attention, x, mask, causal)  # the same, positions left out
    real = mask[:, 0, 0, :, None].expand_as(mine)  # padded queries' outputs are unused
    error = (mine - reference)[real].norm() / reference[real].norm()
    assert error < 1e-5
    # the positions matter: leaving them out of the reference is far from the module's output
    assert (mine - without)[real].norm() / without[real].norm() > 1e-3


@pytest.mark.parametrize(("positions", "bidirectional"), IN_ATTENTION)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_fused_kernel_with_merged_bias_equals_the_explicit_formula(
    positions, bidirectional, causal, padded, monkeypatch
):
    """Without weights to record, attention runs torch's fused kernel, the position bias merged
    into its mask; recording forces the explicit formula. Both must give the same output."""
    spec = AttentionSpec(
        32, 4, n_kv_heads=2, positions=positions, relative_bidirectional=bidirectional
    )
    attention = MultiHeadAttention(spec).eval()
    x, mask = _padded_input()
    mask = mask if padded else None
    fused_calls = []
    kernel = torch.nn.functional.scaled_dot_product_attention

    def counting_kernel(*args, **kwargs):
        fused_calls.append(kwargs.get("attn_mask"))
        return kernel(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_kernel)
    with torch.no_grad():
        fused = attention(x, x, mask=mask, causal=causal)
        assert len(fused_calls) == 1
        with recording_attention(attention):
            explicit = attention(x, x, mask=mask, causal=causal)
            weights = attention.weights
    assert len(fused_calls) == 1  # the recorded pass did not use the kernel
    assert weights is not None and weights.shape == (3, 4, 7, 7)
    if causal:
        assert (weights[..., torch.ones(7, 7, dtype=torch.bool).triu(1)] == 0).all()
    if padded:
        assert (weights[1, ..., 5:] == 0).all() and (weights[2, ..., 2:] == 0).all()
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
    reference = _reference(
        attention,
        x,
        torch.ones(3, 1, 1, 7, dtype=torch.bool) if mask is None else mask,
        causal,
        positions,
    )
    rows = slice(None) if mask is None else mask[:, 0, 0, :, None].expand_as(fused)
    torch.testing.assert_close(fused.double()[rows], reference[rows], rtol=1e-5, atol=1e-6)


def _model(positions="sinusoidal", **options) -> torch.nn.Module:
    cfg = ModelConfig(
        d_model=32,
        n_heads=4,
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_ff=64,
        dropout=0.0,
        positions=positions,
        max_positions=64,
        **options,
    )
    return build_model(cfg, 40, 40, 0, True).eval()


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("n_kv_heads", [None, 1])
def test_cached_decoding_equals_full_recomputation(positions, n_kv_heads):
    model = _model(positions, n_kv_heads=n_kv_heads, attention="cosine")
    src = torch.randint(4, 40, (3, 9))
    src[1, 6:] = 0
    with torch.no_grad():
        memory, src_mask = model.encode(src)
        tgt = torch.randint(4, 40, (3, 8))
        full = model.decode(tgt, memory, src_mask)
        cache = model.new_cache()
        steps = [
            model.decode(tgt[:, t : t + 1], memory, src_mask, cache=cache, offset=t)
            for t in range(8)
        ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    self_cache = cache[0][0]
    assert self_cache.k.shape[1] == (n_kv_heads or 4)  # the cache holds n_kv_heads heads
    ids, cfg = SpecialIds(bos_id=2, eos_id=3, pad_id=0), DecodeConfig(beam_size=1)
    cached, full = (greedy(model, src, ids, cfg, use_cache=c) for c in (True, False))
    assert [h[0].tokens for h in cached] == [h[0].tokens for h in full]


@pytest.mark.parametrize("positions", ["sinusoidal", "rope", "relative", "alibi", "none"])
def test_sequences_longer_than_training_work_where_the_scheme_allows(positions):
    model = _model(positions)
    src = torch.randint(4, 40, (1, 300))  # max_positions is 64; nothing this long was trained
    with torch.no_grad():
        logits = model(src, src[:, :200])
    assert torch.isfinite(logits).all()


def test_learned_positions_refuse_what_they_cannot_encode():
    model = _model("learned")
    with pytest.raises(ValueError, match="learned positions go up to 64"):
        model(torch.randint(4, 40, (1, 65)), torch.randint(4, 40, (1, 3)))


def test_positions_change_what_the_encoder_sees_except_none():
    """Swapping two tokens changes every position's output unless there are no positions."""
    src = torch.randint(4, 40, (1, 6))
    swapped = src[:, [1, 0, 2, 3, 4, 5]]
    for positions in POSITIONS:
        torch.manual_seed(0)
        model = _model(positions)
        with torch.no_grad():
            a, _ = model.encode(src)
            b, _ = model.encode(swapped)
        same = torch.allclose(a[0, 2:], b[0, 2:], atol=1e-5)
        assert same == (positions == "none"), positions


def test_relative_buckets_are_exact_near_and_logarithmic_far():
    bias = RelativeBias(n_heads=2, bidirectional=True, n_buckets=32, max_distance=128)
    buckets = bias._bucket(torch.tensor([0, 1, 7, -1, -7, 8, 30, 127, 1000, -1000]))
    # 16 buckets per direction, 8 of them exact: 0…15 look back, 16…31 look ahead; from distance
    # 8 to 128 the other 8 buckets grow logarithmically: 8 + ⌊8·log(d/8)/log(16)⌋
    assert buckets.tolist() == [0, 17, 23, 1, 7, 24, 16 + 8 + 3, 31, 31, 15]
    one_way = RelativeBias(n_heads=2, bidirectional=False)
    assert one_way._bucket(torch.tensor([0, -3, 5])).tolist() == [0, 3, 0]  # the future: bucket 0


def _encoder_layer_output(window, dilation, src):
    torch.manual_seed(0)
    model = _model(window=window, dilation=dilation)
    with torch.no_grad():
        x = model.encoder.embedding(src)
        mask = (src != 0)[:, None, None, :]
        return model.encoder.layers[0](x, mask)


def test_a_window_as_long_as_the_sequence_is_full_attention():
    src = torch.randint(4, 40, (2, 12))
    src[1, 9:] = 0
    full = _encoder_layer_output(None, 1, src)
    windowed = _encoder_layer_output(12, 1, src)
    torch.testing.assert_close(windowed[0], full[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(windowed[1, :9], full[1, :9], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dilation", [1, 2])
def test_windowed_outputs_ignore_tokens_outside_the_window(dilation):
    src = torch.randint(4, 40, (1, 20))
    position, window = 10, 2
    seen = {position + j * dilation for j in range(-window, window + 1)}
    base = _encoder_layer_output(window, dilation, src)
    for other in range(20):
        changed = src.clone()
        changed[0, other] = 4 + (int(src[0, other]) - 3) % 36  # another real token
        out = _encoder_layer_output(window, dilation, changed)
        unchanged = torch.allclose(out[0, position], base[0, position], atol=1e-6)
        assert unchanged == (other not in seen), other


def test_grouped_query_attention_has_fewer_key_value_parameters():
    full = MultiHeadAttention(AttentionSpec(32, 4))
    grouped = MultiHeadAttention(AttentionSpec(32, 4, n_kv_heads=1))
    assert full.kv_proj.weight.shape == (64, 32) and grouped.kv_proj.weight.shape == (16, 32)
