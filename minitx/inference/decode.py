"""Greedy decoding, beam search (n-best) and sampling over `Seq2Seq.encode`/`decode`, batched, with
a key/value cache.

The source is encoded once; with the cache each step feeds only the newest token. Without it
(`use_cache=False`) the same loops recompute the whole prefix each step: slower, same output, and
the reference the cache is tested against. Every search returns, per source, a ranked list of
`Hypothesis`es with their log-probabilities.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import dataclass, replace

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


@dataclass
class Hypothesis:
    """One output for one source: its tokens (no BOS or EOS) and how likely the model finds them."""

    tokens: list[int]
    log_prob: float  # summed log-probability of the tokens and the final EOS
    score: float  # log_prob / length**length_penalty (length with EOS): what ranks hypotheses
    text: str = ""  # detokenized, filled in by `translate`
    alignment: list[tuple[int, int]] | None = None  # (source word, target word), when asked


@torch.no_grad()
def greedy(
    model: Seq2Seq, src: torch.Tensor, ids: SpecialIds, cfg: DecodeConfig, use_cache: bool = True
) -> list[list[Hypothesis]]:
    """The most likely next token at every step, for a batch of sources (B, S): one hypothesis each."""
    return _token_by_token(model, src, ids, replace(cfg, n_best=1), _most_likely, use_cache)


@torch.no_grad()
def sample(
    model: Seq2Seq, src: torch.Tensor, ids: SpecialIds, cfg: DecodeConfig, use_cache: bool = True
) -> list[list[Hypothesis]]:
    """`cfg.n_best` samples per source, each token drawn from the model's distribution reshaped by
    `temperature`, `top_k` and `top_p` (Holtzman et al., 2020); ranked by score.

    The draws of a sample depend only on `cfg.seed`, its source and which copy it is, never on the
    other sources in the batch: the same seed gives the same samples however the input is split
    into batches or streamed. Without a seed, one is drawn from the OS."""
    seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(7), "little")
    keys = torch.tensor(
        [
            _key(seed, row[row != ids.pad_id].tolist(), copy)
            for row in src.cpu()
            for copy in range(cfg.n_best)
        ],
        dtype=torch.long,
        device=src.device,
    )
    draw = functools.partial(_draw, cfg=cfg, keys=keys)
    return _token_by_token(model, src, ids, cfg, draw, use_cache)


def _most_likely(log_probs: torch.Tensor, step: int) -> torch.Tensor:
    return log_probs.argmax(dim=-1)


def _draw(
    log_probs: torch.Tensor, step: int, cfg: DecodeConfig, keys: torch.Tensor
) -> torch.Tensor:
    """One token per row, drawn from softmax(log_probs / temperature) within top-k and top-p, by
    inverting the cumulative distribution at the row's uniform number for this step."""
    logits = log_probs / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = logits.topk(cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if cfg.top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        before = ordered.softmax(dim=-1).cumsum(dim=-1) - ordered.softmax(dim=-1)
        # Keep each token whose more likely predecessors have not yet reached p (the first always).
        ordered = ordered.masked_fill(before >= cfg.top_p, -math.inf)
        logits = torch.full_like(logits, -math.inf).scatter(-1, order, ordered)
    cumulative = logits.double().softmax(dim=-1).cumsum(dim=-1)  # (N, V)
    target = _uniform(keys, step).unsqueeze(1) * cumulative[:, -1:]
    # right=True: the first token whose cumulative probability exceeds the target, never one
    # with zero probability.
    chosen = torch.searchsorted(cumulative, target, right=True).squeeze(1)
    return chosen.clamp(max=logits.shape[-1] - 1)


def _key(seed: int, source: list[int], copy: int) -> int:
    """A 63-bit key of (seed, source tokens, copy) for `_uniform`."""
    digest = hashlib.blake2b(f"{seed}:{copy}:{source}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _uniform(keys: torch.Tensor, step: int) -> torch.Tensor:
    """A number in [0, 1) per key and step: splitmix64 of (key, step) (Steele et al., 2014), in
    int64 arithmetic that wraps; right shifts are made logical with masks."""

    def shift(z: torch.Tensor, bits: int) -> torch.Tensor:
        return (z >> bits) & ((1 << (64 - bits)) - 1)

    z = keys + torch.full_like(keys, step + 1) * _signed(0x9E3779B97F4A7C15)
    z = (z ^ shift(z, 30)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ shift(z, 27)) * _signed(0x94D049BB133111EB)
    z = z ^ shift(z, 31)
    return shift(z, 11).double() / float(1 << 53)


def _signed(constant: int) -> int:
    """A 64-bit constant as the int64 with the same bits."""
    return constant - (1 << 64) if constant >= 1 << 63 else constant


def _token_by_token(model, src, ids: SpecialIds, cfg: DecodeConfig, choose, use_cache: bool):
    """Decode `cfg.n_best` outputs per source, each token `choose`n from the next-token
    log-probabilities (N, V); returns them ranked by score."""
    copies = cfg.n_best
    memory, src_mask = model.encode(src)
    memory = memory.repeat_interleave(copies, dim=0)  # (B·N, S, D)
    src_mask = src_mask.repeat_interleave(copies, dim=0)
    limits = max_lengths(src, ids.pad_id, cfg).repeat_interleave(copies)  # (B·N,)
    cache = model.new_cache() if use_cache else None
    rows, device = src.shape[0] * copies, src.device
    tokens = torch.full((rows, 1), ids.bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    log_prob = torch.zeros(rows, device=device)
    for step in range(int(limits.max())):
        log_probs = _next_log_probs(model, tokens, memory, src_mask, cache)  # (B·N, V)
        next_tokens = torch.where(step >= limits - 1, ids.eos_id, choose(log_probs, step))
        next_tokens = torch.where(finished, ids.pad_id, next_tokens)
        chosen = log_probs.gather(1, next_tokens.unsqueeze(1)).squeeze(1)
        log_prob += torch.where(finished, 0.0, chosen)
        tokens = torch.cat([tokens, next_tokens.unsqueeze(1)], dim=1)
        finished |= next_tokens == ids.eos_id
        if bool(finished.all()):
            break
    outputs = []
    for row, total in zip(tokens[:, 1:].tolist(), log_prob.tolist(), strict=True):
        row = row[: row.index(ids.eos_id)] if ids.eos_id in row else row
        outputs.append(Hypothesis(row, total, total / (len(row) + 1) ** cfg.length_penalty))
    grouped = [outputs[i : i + copies] for i in range(0, rows, copies)]
    return [sorted(group, key=lambda h: -h.score) for group in grouped]


@torch.no_grad()
def beam_search(
    model: Seq2Seq, src: torch.Tensor, ids: SpecialIds, cfg: DecodeConfig, use_cache: bool = True
) -> list[list[Hypothesis]]:
    """Keep the `cfg.beam_size` best unfinished prefixes of each sentence; return its `cfg.n_best`
    best finished hypotheses, best first.

    As in fairseq: each step looks at the 2·K best extensions; those ending in EOS among the top K
    are finished and scored by log-prob / length**length_penalty, the best K others live on. A
    sentence is done once K hypotheses have finished and no live beam can beat them (`_Finished`).
    """
    batch, k, device = src.shape[0], cfg.beam_size, src.device
    memory, src_mask = model.encode(src)
    memory = memory.repeat_interleave(k, dim=0)  # (B·K, S, D)
    src_mask = src_mask.repeat_interleave(k, dim=0)
    limits = max_lengths(src, ids.pad_id, cfg)  # (B,)
    cache = model.new_cache() if use_cache else None

    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = -math.inf  # all beams start identical: expand only the first
    tokens = torch.full((batch * k, 1), ids.bos_id, dtype=torch.long, device=device)
    beam_base = torch.arange(batch, device=device).unsqueeze(1) * k  # (B, 1)
    finished = _Finished(batch, k, cfg.length_penalty)

    for step in range(int(limits.max())):
        log_probs = _next_log_probs(model, tokens, memory, src_mask, cache)  # (B·K, V)
        vocab = log_probs.shape[1]
        at_limit = (step >= limits - 1).repeat_interleave(k)
        log_probs[at_limit] = torch.where(
            torch.arange(vocab, device=device) == ids.eos_id, log_probs[at_limit], -math.inf
        )
        candidates = (scores.view(-1, 1) + log_probs).view(batch, k * vocab)
        top_scores, top = candidates.topk(2 * k, dim=1)  # (B, 2K)
        origin = beam_base + top // vocab  # (B, 2K): the hypothesis each candidate extends
        new_token = top % vocab
        ends = (new_token == ids.eos_id) & torch.isfinite(top_scores)

        finished.add(tokens, top_scores[:, :k], origin[:, :k], ends[:, :k])
        # The K best candidates that do not end here live on.
        scores, keep = top_scores.masked_fill(ends, -math.inf).topk(k, dim=1)
        # What the best of them would score if it ended at the next step.
        finished.close(scores.max(dim=1).values / (step + 2) ** cfg.length_penalty)
        if finished.done():
            break
        survivors = origin.gather(1, keep).view(-1)
        tokens = torch.cat([tokens[survivors], new_token.gather(1, keep).view(-1, 1)], dim=1)
        if cache is not None:
            # Cross-attention caches need no reordering: all K beams of a sentence share its source.
            for self_cache, _ in cache:
                self_cache.reorder(survivors)
    return finished.best(cfg.n_best)


class _Finished:
    """Per sentence, the hypotheses that have ended (with EOS), their scores, and whether the
    sentence is closed.

    A sentence closes once it has K finished hypotheses and its best live beam, ended at the next
    step, would score no better than the K-th of them (Hugging Face's `early_stopping=False`
    heuristic). Stopping at the first K finished, as fairseq does, let short hypotheses that end
    early shut out the right one (beam 5 on Multi30k: 37.95 against 38.25 BLEU). A closed
    sentence takes no more hypotheses: its beams only run on because others in the batch do, and
    its result must not depend on them.
    """

    def __init__(self, batch: int, beam_size: int, length_penalty: float):
        self.beam_size, self.length_penalty = beam_size, length_penalty
        self.hypotheses: list[list[Hypothesis]] = [[] for _ in range(batch)]
        self.closed = [False] * batch

    def add(self, tokens, log_probs, origin, ends) -> None:
        """Record the candidates (B, K) that end here: prefixes `tokens[origin]` plus EOS, with
        summed `log_probs`."""
        if not bool(ends.any()):
            return
        length = tokens.shape[1]  # BOS + the prefix's tokens = the tokens with EOS
        for sentence, candidate in ends.nonzero().tolist():
            if self.closed[sentence]:
                continue
            total = float(log_probs[sentence, candidate])
            prefix = tokens[origin[sentence, candidate], 1:].tolist()
            score = total / length**self.length_penalty
            self.hypotheses[sentence].append(Hypothesis(prefix, total, score))

    def close(self, best_live: torch.Tensor) -> None:
        """Close the sentences that no live beam (best scores `best_live`, (B,)) can improve."""
        for sentence, live in enumerate(best_live.tolist()):
            found = self.hypotheses[sentence]
            if self.closed[sentence] or len(found) < self.beam_size:
                continue
            kth = sorted((h.score for h in found), reverse=True)[self.beam_size - 1]
            self.closed[sentence] = kth >= live

    def done(self) -> bool:
        return all(self.closed)

    def best(self, n: int) -> list[list[Hypothesis]]:
        return [sorted(found, key=lambda h: -h.score)[:n] for found in self.hypotheses]


def translate(
    model: Seq2Seq,
    src_ids: list[list[int]],
    codecs: Codecs,
    cfg: DecodeConfig,
    compute: Compute,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """Decode many sources in length-sorted batches of `cfg.batch_size`; return each source's
    hypotheses (best first, with their text), in input order. Sampling with `cfg.sample`, else beam
    search with `cfg.beam_size` > 1, else greedy; `use_cache=False` recomputes every prefix."""
    model.eval()
    search = sample if cfg.sample else greedy if cfg.beam_size == 1 else beam_search
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]))
    outputs: list[list[Hypothesis]] = [[] for _ in src_ids]
    src_codec, tgt_codec = codecs.src, codecs.tgt
    for start in range(0, len(order), cfg.batch_size):
        chosen = order[start : start + cfg.batch_size]
        src = pad([src_ids[i] + [src_codec.eos_id] for i in chosen], src_codec.pad_id)
        with compute.autocast():
            found = search(model, src.to(compute.device), tgt_codec.special_ids, cfg, use_cache)
        for i, hypotheses in zip(chosen, found, strict=True):
            texts = tgt_codec.decode([h.tokens for h in hypotheses])
            outputs[i] = [replace(h, text=text) for h, text in zip(hypotheses, texts, strict=True)]
    return outputs
