"""Greedy and beam-search decoding over `Seq2Seq.encode`/`decode`, batched, with a key/value cache.

The source is encoded once; with the cache each step feeds only the newest token. Without it
(`use_cache=False`) the same loop recomputes the whole prefix each step: slower, same output, and
the reference the cache is tested against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minitx.config import DecodeConfig
from minitx.data.batching import pad
from minitx.data.tokenizer import Codecs, SpecialIds
from minitx.model.attention import KVCache
from minitx.model.transformer import Seq2Seq
from minitx.runtime import Compute


def max_lengths(src: torch.Tensor, pad_id: int, cfg: DecodeConfig) -> torch.Tensor:
    """Per-sentence output limit (tokens, EOS included): ratio × source length + offset."""
    src_len = (src != pad_id).sum(dim=1).float()
    return torch.clamp((src_len * cfg.max_len_ratio).ceil().long() + cfg.max_len_offset, min=1)


def _next_log_probs(
    model: Seq2Seq,
    tokens: torch.Tensor,
    memory: torch.Tensor,
    src_mask: torch.Tensor,
    cache: list[tuple[KVCache, KVCache]] | None,
) -> torch.Tensor:
    """Log-probabilities (N, V) of the token after `tokens` (N, t)."""
    if cache is not None:
        step = tokens.shape[1] - 1
        logits = model.decode(tokens[:, -1:], memory, src_mask, cache=cache, offset=step)
    else:
        logits = model.decode(tokens, memory, src_mask)
    return F.log_softmax(logits[:, -1].float(), dim=-1)


def _strip(rows: torch.Tensor, eos_id: int) -> list[list[int]]:
    """Drop BOS and cut each row at its first EOS."""
    out = []
    for row in rows[:, 1:].tolist():
        out.append(row[: row.index(eos_id)] if eos_id in row else row)
    return out


@torch.no_grad()
def greedy(
    model: Seq2Seq, src: torch.Tensor, ids: SpecialIds, cfg: DecodeConfig, use_cache: bool = True
) -> list[list[int]]:
    """The most likely next token at every step, for a batch of sources (B, S)."""
    eos_id, pad_id = ids.eos_id, ids.pad_id
    memory, src_mask = model.encode(src)
    limits = max_lengths(src, pad_id, cfg)
    cache = model.new_cache() if use_cache else None
    tokens = torch.full((src.shape[0], 1), ids.bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for step in range(int(limits.max())):
        next_tokens = _next_log_probs(model, tokens, memory, src_mask, cache).argmax(dim=-1)
        next_tokens = torch.where(step >= limits - 1, eos_id, next_tokens)
        next_tokens = torch.where(finished, pad_id, next_tokens)
        tokens = torch.cat([tokens, next_tokens.unsqueeze(1)], dim=1)
        finished |= next_tokens == eos_id
        if bool(finished.all()):
            break
    return _strip(tokens, eos_id)


@torch.no_grad()
def beam_search(
    model: Seq2Seq, src: torch.Tensor, ids: SpecialIds, cfg: DecodeConfig, use_cache: bool = True
) -> list[list[int]]:
    """Keep the `cfg.beam_size` best unfinished prefixes of each sentence; return the best finished
    one.

    As in fairseq: each step looks at the 2·K best extensions; those ending in EOS among the top K
    are finished and scored by log-prob / length**length_penalty, the best K others live on. A
    sentence is done once K hypotheses have finished. With beam_size 1 this is greedy decoding.
    """
    batch, k, device = src.shape[0], cfg.beam_size, src.device
    eos_id = ids.eos_id
    memory, src_mask = model.encode(src)
    memory = memory.repeat_interleave(k, dim=0)  # (B·K, S, D)
    src_mask = src_mask.repeat_interleave(k, dim=0)
    limits = max_lengths(src, ids.pad_id, cfg)  # (B,)
    cache = model.new_cache() if use_cache else None

    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = -math.inf  # all beams start identical: expand only the first
    tokens = torch.full((batch * k, 1), ids.bos_id, dtype=torch.long, device=device)
    beam_base = torch.arange(batch, device=device).unsqueeze(1) * k  # (B, 1)
    best = _Finished(batch, int(limits.max()) + 1, ids.pad_id, device)

    for step in range(int(limits.max())):
        log_probs = _next_log_probs(model, tokens, memory, src_mask, cache)  # (B·K, V)
        vocab = log_probs.shape[1]
        at_limit = (step >= limits - 1).repeat_interleave(k)
        log_probs[at_limit] = torch.where(
            torch.arange(vocab, device=device) == eos_id, log_probs[at_limit], -math.inf
        )
        candidates = (scores.view(-1, 1) + log_probs).view(batch, k * vocab)
        top_scores, top = candidates.topk(2 * k, dim=1)  # (B, 2K)
        origin = beam_base + top // vocab  # (B, 2K): the hypothesis each candidate extends
        new_token = top % vocab
        ends = (new_token == eos_id) & torch.isfinite(top_scores)

        normalised = top_scores[:, :k] / (step + 1) ** cfg.length_penalty
        best.add(tokens, normalised, origin[:, :k], ends[:, :k], eos_id)
        if bool(best.done(k).all()):
            break
        # The K best candidates that do not end here live on.
        scores, keep = top_scores.masked_fill(ends, -math.inf).topk(k, dim=1)
        survivors = origin.gather(1, keep).view(-1)
        tokens = torch.cat([tokens[survivors], new_token.gather(1, keep).view(-1, 1)], dim=1)
        if cache is not None:
            # Cross-attention caches need no reordering: all K beams of a sentence share its source.
            for self_cache, _ in cache:
                self_cache.reorder(survivors)
    return _strip(best.tokens, eos_id)


class _Finished:
    """Per sentence: the best finished hypothesis so far, its normalised score, how many finished."""

    def __init__(self, batch: int, width: int, pad_id: int, device: torch.device):
        self.score = torch.full((batch,), -math.inf, device=device)
        self.count = torch.zeros(batch, dtype=torch.long, device=device)
        self.tokens = torch.full((batch, width + 1), pad_id, dtype=torch.long, device=device)

    def add(self, tokens, scores, origin, ends, eos_id) -> None:
        """Record the candidates (B, K) with length-normalised `scores` that end with EOS."""
        normalised = scores.masked_fill(~ends, -math.inf)
        top_score, top_index = normalised.max(dim=1)  # (B,)
        improved = top_score > self.score
        self.count += ends.sum(dim=1)
        if bool(improved.any()):
            rows = tokens[origin.gather(1, top_index.unsqueeze(1)).squeeze(1)]  # (B, length)
            rows = torch.cat([rows, torch.full_like(rows[:, :1], eos_id)], dim=1)
            self.tokens[improved, : rows.shape[1]] = rows[improved]
            self.score = torch.where(improved, top_score, self.score)

    def done(self, beam_size: int) -> torch.Tensor:
        return self.count >= beam_size


def translate(
    model: Seq2Seq,
    src_ids: list[list[int]],
    codecs: Codecs,
    cfg: DecodeConfig,
    compute: Compute,
) -> list[str]:
    """Decode many sources in length-sorted batches of `cfg.batch_size`; return detokenized text in
    input order. Beam search with `cfg.beam_size` > 1, else greedy."""
    model.eval()
    search = greedy if cfg.beam_size == 1 else beam_search
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]))
    outputs: list[str] = [""] * len(src_ids)
    src_codec, tgt_codec = codecs.src, codecs.tgt
    for start in range(0, len(order), cfg.batch_size):
        chosen = order[start : start + cfg.batch_size]
        src = pad([src_ids[i] + [src_codec.eos_id] for i in chosen], src_codec.pad_id)
        with compute.autocast():
            ids = search(model, src.to(compute.device), tgt_codec.special_ids, cfg)
        for i, text in zip(chosen, tgt_codec.decode(ids), strict=True):
            outputs[i] = text
    return outputs
