import contextlib
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from minitx.config import DecodeConfig
from minitx.data.tokenizer import SpecialIds
from minitx.inference import searches
from minitx.inference.decode import translate
from minitx.inference.searches import beam_search, greedy, max_lengths, sample
from minitx.model.attention import KVCache
from minitx.model.transformer import build_model

PAD, BOS, EOS = 0, 2, 3
IDS = SpecialIds(bos_id=BOS, eos_id=EOS, pad_id=PAD)
GREEDY = DecodeConfig(beam_size=1)


def best(found) -> list[list[int]]:
    """The best hypothesis' tokens of each source."""
    return [hypotheses[0].tokens for hypotheses in found]


def _beam(size: int, **options) -> DecodeConfig:
    return DecodeConfig(beam_size=size, **options)


def _model(cfg, vocab=30):
    return build_model(cfg, vocab, vocab, PAD, True).eval()


def _sources():
    src = torch.randint(4, 30, (5, 7))
    src[1, 4:] = PAD
    src[3, 2:] = PAD
    return src


def test_cached_greedy_equals_full_recomputation(tiny_model_config):
    model, src = _model(tiny_model_config), _sources()
    assert best(greedy(model, src, IDS, GREEDY)) == best(
        greedy(model, src, IDS, GREEDY, use_cache=False)
    )


def test_cached_beam_search_equals_full_recomputation(tiny_model_config):
    model, src = _model(tiny_model_config), _sources()
    cached = best(beam_search(model, src, IDS, _beam(4)))
    assert cached == best(beam_search(model, src, IDS, _beam(4), use_cache=False))


def test_cached_step_logits_equal_full_forward(tiny_model_config):
    model, src = _model(tiny_model_config), _sources()
    tgt = torch.randint(4, 30, (5, 6))
    memory, src_mask = model.encode(src)
    cache = model.new_cache()
    with torch.no_grad():
        steps = [
            model.decode(tgt[:, t : t + 1], memory, src_mask, cache=cache, offset=t)
            for t in range(6)
        ]
        full = model.decode(tgt, memory, src_mask)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_beam_size_one_equals_greedy(tiny_model_config):
    model, src = _model(tiny_model_config), _sources()
    assert best(beam_search(model, src, IDS, _beam(1))) == best(greedy(model, src, IDS, GREEDY))


def test_outputs_respect_the_length_limit(tiny_model_config):
    model, src = _model(tiny_model_config), _sources()
    cfg = _beam(3, max_len_ratio=0.5, max_len_offset=1)
    limits = max_lengths(src, PAD, cfg)
    assert limits.tolist() == [5, 3, 5, 2, 5]  # ⌈0.5 × real tokens⌉ + 1
    for out, limit in zip(best(beam_search(model, src, IDS, cfg)), limits, strict=True):
        assert len(out) < int(limit)


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(tiny_model_config):
    model, src = _model(tiny_model_config), _sources()
    # An untrained model almost never ends a sentence by itself; lifting the EOS logit makes it
    # end after a few tokens, so that greedy and beam compare whole hypotheses.
    decode, lift = model.decode, torch.zeros(30)
    lift[EOS] = 3.0
    model.decode = lambda *args, **kwargs: decode(*args, **kwargs) + lift

    def log_prob(row_src, out):
        tokens = torch.tensor([[BOS] + out])
        target = torch.tensor([out + [EOS]])
        with torch.no_grad():
            logits = model(row_src[None], tokens)
        return F.log_softmax(logits, -1).gather(-1, target[..., None]).sum().item()

    greedy_out = best(greedy(model, src, IDS, DecodeConfig(beam_size=1, max_len_offset=4)))
    beam_out = best(beam_search(model, src, IDS, _beam(5, length_penalty=0.0, max_len_offset=4)))
    compared = 0
    for row, g, b in zip(src, greedy_out, beam_out, strict=True):
        row = row[row != PAD]
        if len(g) < len(row) * 1.5 + 3:  # greedy hit EOS itself rather than the length limit
            assert log_prob(row, b) >= log_prob(row, g) - 1e-4
            compared += 1
    assert compared >= 3  # most rows: greedy ended them itself


def test_tiny_model_overfits_a_handful_of_pairs(tiny_model_config):
    torch.manual_seed(0)
    pairs = [
        ([5, 6, 7], [9, 8]),
        ([6, 5], [8, 9, 10]),
        ([7, 7, 5, 6], [10, 11, 8]),
        ([8, 5, 9], [12]),
    ]
    model = build_model(tiny_model_config, 16, 16, PAD, True)
    src = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(s + [EOS]) for s, _ in pairs], batch_first=True
    )
    tgt_in = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor([BOS] + t) for _, t in pairs], batch_first=True
    )
    tgt_out = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(t + [EOS]) for _, t in pairs], batch_first=True
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = F.cross_entropy(
            model(src, tgt_in).flatten(0, 1), tgt_out.flatten(), ignore_index=PAD
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert loss.item() < 0.05
    assert best(greedy(model, src, IDS, GREEDY)) == [t for _, t in pairs]
    assert best(beam_search(model, src, IDS, _beam(3))) == [t for _, t in pairs]


class _TableModel:
    """A stand-in decoder whose next-token probabilities depend only on the last token."""

    A, B, C = 4, 5, 6
    NEXT = {
        BOS: {EOS: 0.4, A: 0.35, B: 0.25},
        A: {C: 0.9, EOS: 0.1},
        B: {C: 0.99, EOS: 0.01},
        C: {EOS: 0.99, A: 0.01},
    }

    def encode(self, src):
        return torch.zeros(src.shape[0], src.shape[1], 1), (src != PAD)[:, None, None, :]

    def decode(self, tokens, memory, src_mask):
        probs = torch.full((tokens.shape[0], tokens.shape[1], 7), 1e-9)
        for row, last in enumerate(tokens[:, -1].tolist()):
            for token, p in self.NEXT[last].items():
                probs[row, -1, token] = p
        return probs.log()


def test_a_hypothesis_that_finishes_early_does_not_take_a_beam_slot():
    src = torch.tensor([[7, 8, 9]])
    model = _TableModel()
    # [EOS] finishes first (log 0.4); "a c" (log 0.35·0.9·0.99, length 3) is better per token.
    assert best(beam_search(model, src, IDS, _beam(2), use_cache=False)) == [[model.A, model.C]]
    assert best(greedy(model, src, IDS, GREEDY, use_cache=False)) == [[]]


@pytest.mark.parametrize(
    ("positions", "n_kv_heads"), [("rope", 1), ("rope", 2), ("relative", 2), ("alibi", 1)]
)
def test_cached_beam_search_with_grouped_heads_and_positions_in_attention(
    positions, n_kv_heads, monkeypatch, tiny_model_config
):
    """The self-attention cache holds rotated keys of n_kv_heads heads; beam search reorders it as
    hypotheses are dropped and duplicated. The result must equal recomputing every prefix."""
    model_cfg = replace(tiny_model_config, positions=positions, n_kv_heads=n_kv_heads)
    model, src = _model(model_cfg), _sources()
    reorders, logits = [], {True: [], False: []}
    reorder, decode = KVCache.reorder, model.decode

    def recording_reorder(self, index):
        reorders.append(index.clone())
        assert self.k.shape[1] == n_kv_heads
        reorder(self, index)

    def recording_decode(*args, **kwargs):
        out = decode(*args, **kwargs)
        logits[len(args) > 3 or "cache" in kwargs].append(out[:, -1])  # next-token logits
        return out

    monkeypatch.setattr(KVCache, "reorder", recording_reorder)
    model.decode = recording_decode
    cfg = _beam(3, max_len_ratio=1.0, max_len_offset=2)  # up to 9 steps
    cached = best(beam_search(model, src, IDS, cfg))
    assert cached == best(beam_search(model, src, IDS, cfg, use_cache=False))
    # the same hypotheses were scored alike at every step, not just the same winners
    assert len(logits[True]) == len(logits[False]) > 2
    for with_cache, without in zip(logits[True], logits[False], strict=True):
        torch.testing.assert_close(with_cache, without, rtol=1e-4, atol=1e-4)
    # the cache really was reshuffled: some step kept a beam twice or moved one
    identity = torch.arange(5 * 3)
    assert any(not torch.equal(index, identity) for index in reorders)


@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_reordered_cache_continues_like_the_reordered_prefixes(n_kv_heads, tiny_model_config):
    """Decode 4 steps with the cache, keep rows [2, 0, 0] (row 0 twice, as beam search does), then
    decode 2 more steps with different tokens per row: the logits must equal a full forward pass
    over the reordered prefixes."""
    model_cfg = replace(tiny_model_config, positions="rope", n_kv_heads=n_kv_heads)
    model, src = _model(model_cfg), _sources()[:3]
    prefix = torch.randint(4, 30, (3, 4))
    with torch.no_grad():
        memory, src_mask = model.encode(src)
        cache = model.new_cache()
        for t in range(4):
            model.decode(prefix[:, t : t + 1], memory, src_mask, cache=cache, offset=t)
        index = torch.tensor([2, 0, 0])
        for self_cache, cross_cache in cache:
            self_cache.reorder(index)
            cross_cache.reorder(index)  # rows come from different sources here
        memory, src_mask = memory[index], src_mask[index]
        tokens = torch.cat([prefix[index], torch.tensor([[7, 8], [9, 10], [11, 12]])], dim=1)
        steps = [
            model.decode(tokens[:, t : t + 1], memory, src_mask, cache=cache, offset=t)
            for t in (4, 5)
        ]
        full = model.decode(tokens, memory, src_mask)
    assert cache[0][0].k.shape == (3, n_kv_heads, 6, 8)
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, 4:], rtol=1e-5, atol=1e-5)
    # rows 1 and 2 share a prefix but went on differently: the copies are independent
    assert not torch.allclose(steps[0][1], steps[0][2])


# --- n-best and sampling ------------------------------------------------------------------------


def _teacher_forced_log_prob(model, row_src, tokens) -> float:
    """log P(tokens + EOS | source) from one full forward pass: the reference for the scores."""
    row_src = row_src[row_src != PAD]
    with torch.no_grad():
        logits = model(row_src[None], torch.tensor([[BOS, *tokens]]))
    target = torch.tensor([[*tokens, EOS]])
    return F.log_softmax(logits.float(), -1).gather(-1, target[..., None]).sum().item()


def _draws(model, src, cfg, seed, use_cache=True):
    found = sample(model, src, IDS, replace(cfg, seed=seed), use_cache=use_cache)
    return [[h.tokens for h in hypotheses] for hypotheses in found]


def test_n_best_is_ranked_scored_and_led_by_the_beam_output(tiny_model_config):
    model, src = _model(tiny_model_config), _sources()
    cfg = _beam(4, n_best=4, length_penalty=0.6)
    found = beam_search(model, src, IDS, cfg)
    assert best(found) == best(beam_search(model, src, IDS, _beam(4, length_penalty=0.6)))
    for row, hypotheses in zip(src, found, strict=True):
        assert len(hypotheses) == 4
        assert len({tuple(h.tokens) for h in hypotheses}) == 4  # four different outputs
        assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)
        for h in hypotheses:
            assert h.log_prob == pytest.approx(
                _teacher_forced_log_prob(model, row, h.tokens), abs=1e-4
            )
            assert h.score == pytest.approx(h.log_prob / (len(h.tokens) + 1) ** 0.6, abs=1e-6)


def test_n_best_with_the_cache_equals_without(tiny_model_config):
    model, src = _model(tiny_model_config), _sources()
    cfg = _beam(3, n_best=3)
    cached = beam_search(model, src, IDS, cfg)
    full = beam_search(model, src, IDS, cfg, use_cache=False)
    assert [[h.tokens for h in hs] for hs in cached] == [[h.tokens for h in hs] for hs in full]


@pytest.mark.parametrize(
    "options",
    [{"top_k": 1}, {"temperature": 1e-4}, {"top_p": 1e-6}],
    ids=["top_k", "temp", "top_p"],
)
def test_sampling_that_keeps_only_the_likeliest_token_is_greedy(tiny_model_config, options):
    model, src = _model(tiny_model_config), _sources()
    drawn = _draws(model, src, DecodeConfig(sample=True, **options), seed=1)
    assert [d[0] for d in drawn] == best(greedy(model, src, IDS, GREEDY))


def test_sampling_repeats_with_its_seed_and_differs_with_another(tiny_model_config):
    model, src = _model(tiny_model_config), _sources()
    cfg = DecodeConfig(sample=True, n_best=3)
    first = _draws(model, src, cfg, seed=7)
    assert all(len(samples) == 3 for samples in first)
    assert _draws(model, src, cfg, seed=7) == first
    assert _draws(model, src, cfg, seed=8) != first
    # an untrained model's distribution is wide: three samples of a source differ
    assert any(len({tuple(s) for s in samples}) > 1 for samples in first)


def test_sampling_with_the_cache_equals_without(tiny_model_config):
    model, src = _model(tiny_model_config), _sources()
    cfg = DecodeConfig(sample=True, n_best=2, top_k=5, top_p=0.9, temperature=0.8)
    assert _draws(model, src, cfg, seed=3) == _draws(model, src, cfg, seed=3, use_cache=False)


def test_samples_carry_their_log_probability_and_stay_within_top_k(tiny_model_config):
    model, src = _model(tiny_model_config), _sources()
    cfg = DecodeConfig(sample=True, n_best=2, top_k=3)
    found = sample(model, src, IDS, replace(cfg, seed=0))
    for row, hypotheses in zip(src, found, strict=True):
        for h in hypotheses:
            assert h.log_prob == pytest.approx(
                _teacher_forced_log_prob(model, row, h.tokens), abs=1e-4
            )
            # every drawn token was among the 3 likeliest at its step (EOS may be forced at the end)
            with torch.no_grad():
                logits = model(row[row != PAD][None], torch.tensor([[BOS, *h.tokens]]))[0]
            top3 = logits.topk(3, dim=-1).indices.tolist()
            assert all(token in top3[t] for t, token in enumerate(h.tokens))


def test_a_sentence_draws_the_same_samples_alone_or_in_any_batch(tiny_model_config):
    """Streamed input is batched by arrival: a sample may not depend on its neighbours."""
    model, src = _model(tiny_model_config), _sources()
    cfg = DecodeConfig(sample=True, n_best=2, seed=5)
    together = _draws(model, src, cfg, seed=5)
    alone = [_draws(model, src[i : i + 1, : int((src[i] != PAD).sum())], cfg, seed=5)[0]
             for i in range(len(src))]  # fmt: skip
    assert alone == together


def test_beam_search_of_a_sentence_does_not_depend_on_its_batch(tiny_model_config):
    """A sentence whose K hypotheses have finished takes no later ones, even while a longer
    neighbour keeps the batch decoding (an EOS-heavy model ends short sentences early)."""
    model, src = _model(tiny_model_config), _sources()
    decode, lift = model.decode, torch.zeros(30)
    lift[EOS] = 2.5
    model.decode = lambda *args, **kwargs: decode(*args, **kwargs) + lift
    cfg = _beam(3, n_best=3)
    together = beam_search(model, src, IDS, cfg)
    for i in range(len(src)):
        row = src[i : i + 1, : int((src[i] != PAD).sum())]
        (alone,) = beam_search(model, row, IDS, cfg)
        assert [h.tokens for h in alone] == [h.tokens for h in together[i]]


# --- the registry of searches -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"beam_size": 1}, "greedy"),
        ({"beam_size": 4}, "beam"),
        ({"sample": True}, "sampling"),
        ({"sample": True, "beam_size": 4}, "sampling"),
    ],
)
def test_the_decode_settings_pick_one_registered_search(options, name):
    assert searches.search_for(DecodeConfig(**options)).name == name


def test_translate_runs_the_registered_search_with_each_sources_own_inputs(monkeypatch):
    """A new search is one registry entry; per-sentence inputs reach it beside their sources,
    through the length sort and the batching."""
    seen = []

    def echo(model, src, ids, cfg, inputs=None, use_cache=True):
        lengths = (src != PAD).sum(dim=1).tolist()
        seen.append(list(zip(lengths, inputs, strict=True)))
        return [[searches.Hypothesis([n], 0.0, 0.0)] for n in lengths]

    monkeypatch.setattr(searches, "_SEARCHES", {})
    searches.register_search(searches.Search("echo", lambda cfg, constrained: True, echo))
    codec = _IdentityCodec()
    codecs = type("Codecs", (), {"src": codec, "tgt": codec})()
    model = type("Model", (), {"eval": lambda self: None})()
    src_ids = [[5, 6, 7], [5], [5, 6, 7, 8, 9], [5, 6]]
    cfg = DecodeConfig(batch_size=3)
    a, b, c, d = (searches.SentenceSteering(prefix=(n,)) for n in (11, 12, 13, 14))
    found = translate(model, src_ids, codecs, cfg, _CPU, inputs=[a, b, c, d])
    assert [h[0].tokens for h in found] == [[4], [2], [6], [3]]  # lengths with EOS, input order
    # two length-sorted batches, each source with its own input
    assert seen == [[(2, b), (3, d), (4, a)], [(6, c)]]


class _IdentityCodec:
    eos_id, pad_id = EOS, PAD
    special_ids = IDS

    def decode(self, rows):
        return [" ".join(map(str, row)) for row in rows]


class _Compute:
    device = torch.device("cpu")

    def autocast(self):
        return contextlib.nullcontext()


_CPU = _Compute()
