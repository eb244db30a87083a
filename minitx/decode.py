"""Greedy and beam-search decoding over `Seq2Seq.encode`/`decode`, batched, with a key/value cache.

The source is encoded once; with the cache each step feeds only the newest token. Without it
(`use_cache=False`) the same loop recomputes the whole prefix each step: slower, same output, and
the reference the cache is tested against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minitx import runtime
from minitx.data.batching import pad
from minitx.model.attention import KVCache
from minitx.model.transformer import Seq2Seq


def max_lengths(src: torch.Tensor, pad_id: int, ratio: float, offset: int) -> torch.Tensor:
    """Per-sentence output limit (tokens, EOS included): ratio × source length + offset."""
    src_len = (src != pad_id).sum(dim=1).float()
    return torch.clamp((src_len * ratio).ceil().long() + offset, min=1)


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
        logits = model.decode(tokens[:, -1:], memory, src_mask, cache, offset=step)
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
    model: Seq2Seq,
    src: torch.Tensor,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_len_ratio: float = 1.5,
    max_len_offset: int = 10,
    use_cache: bool = True,
) -> list[list[int]]:
    """The most likely next token at every step, for a batch of sources (B, S)."""
    memory, src_mask = model.encode(src)
    limits = max_lengths(src, pad_id, max_len_ratio, max_len_offset)
    cache = model.new_cache() if use_cache else None
    tokens = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
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
    model: Seq2Seq,
    src: torch.Tensor,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    max_len_ratio: float = 1.5,
    max_len_offset: int = 10,
    use_cache: bool = True,
) -> list[list[int]]:
    """Keep the `beam_size` best prefixes of each sentence; return the best finished one.

    A finished hypothesis stays in its beam, extended only by padding at no cost, and the final
    choice divides each score by length**length_penalty (as fairseq's lenpen). With
    beam_size 1 this is exactly greedy decoding.
    """
    batch, k = src.shape[0], beam_size
    memory, src_mask = model.encode(src)
    memory = memory.repeat_interleave(k, dim=0)  # (B·K, S, D)
    src_mask = src_mask.repeat_interleave(k, dim=0)
    limits = max_lengths(src, pad_id, max_len_ratio, max_len_offset).repeat_interleave(k)
    cache = model.new_cache() if use_cache else None

    scores = torch.zeros(batch, k, device=src.device)
    scores[:, 1:] = -math.inf  # all beams start identical: expand only the first
    tokens = torch.full((batch * k, 1), bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=src.device)
    lengths = torch.zeros(batch * k, dtype=torch.long, device=src.device)
    beam_base = torch.arange(batch, device=src.device).unsqueeze(1) * k  # (B, 1)

    for step in range(int(limits.max())):
        log_probs = _next_log_probs(model, tokens, memory, src_mask, cache)  # (B·K, V)
        vocab = log_probs.shape[1]
        at_limit = (step >= limits - 1) & ~finished
        log_probs[at_limit] = torch.where(
            torch.arange(vocab, device=src.device) == eos_id, log_probs[at_limit], -math.inf
        )
        log_probs[finished] = -math.inf
        log_probs[finished, pad_id] = 0.0

        candidates = (scores.view(-1, 1) + log_probs).view(batch, k * vocab)
        scores, flat = candidates.topk(k, dim=1)  # (B, K)
        origin = (beam_base + flat // vocab).view(-1)  # which hypothesis each survivor extends
        new_tokens = (flat % vocab).view(-1, 1)

        was_finished = finished[origin]
        tokens = torch.cat([tokens[origin], new_tokens], dim=1)
        lengths = lengths[origin] + (~was_finished).long()
        finished = was_finished | (new_tokens.view(-1) == eos_id)
        if cache is not None:
            # Cross-attention caches need no reordering: all K beams of a sentence share its source.
            for self_cache, _ in cache:
                self_cache.reorder(origin)
        if bool(finished.all()):
            break

    normalised = scores.view(-1) / lengths.clamp(min=1).float() ** length_penalty
    best = normalised.view(batch, k).argmax(dim=1) + beam_base.view(-1)
    return _strip(tokens[best], eos_id)


def translate(
    model: Seq2Seq,
    src_ids: list[list[int]],
    src_codec,
    tgt_codec,
    device: torch.device,
    dtype: str,
    beam_size: int = 1,
    batch_size: int = 128,
    length_penalty: float = 1.0,
    max_len_ratio: float = 1.5,
    max_len_offset: int = 10,
    use_cache: bool = True,
) -> list[str]:
    """Decode many sources in length-sorted batches; return detokenized text in input order."""
    model.eval()
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]))
    outputs: list[str] = [""] * len(src_ids)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        src = pad([src_ids[i] + [src_codec.eos_id] for i in chosen], src_codec.pad_id).to(device)
        with runtime.autocast(device, dtype):
            if beam_size == 1:
                ids = greedy(
                    model,
                    src,
                    tgt_codec.bos_id,
                    tgt_codec.eos_id,
                    tgt_codec.pad_id,
                    max_len_ratio,
                    max_len_offset,
                    use_cache,
                )
            else:
                ids = beam_search(
                    model,
                    src,
                    tgt_codec.bos_id,
                    tgt_codec.eos_id,
                    tgt_codec.pad_id,
                    beam_size,
                    length_penalty,
                    max_len_ratio,
                    max_len_offset,
                    use_cache,
                )
        for i, text in zip(chosen, tgt_codec.decode(ids), strict=True):
            outputs[i] = text
    return outputs
