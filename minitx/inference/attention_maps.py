"""Attention maps of one input, recorded from the model's own forward pass (see the tasks'
`attention_maps`): the weights each attention layer computed, per head."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from minitx.data.tokenizer import TextCodec
from minitx.errors import UserError
from minitx.model.attention import recording_attention
from minitx.runtime import Compute

# Attention maps are drawn one cell per token pair; beyond this many tokens a side the picture is
# unreadable and its memory grows past what a plot library can allocate.
MAX_ATTENTION_TOKENS = 200


def token_strings(codec: TextCodec, ids: list[int], what: str) -> list[str]:
    """The tokens of `ids` as the maps label them; refuses more than can be drawn."""
    if len(ids) > MAX_ATTENTION_TOKENS:
        raise UserError(
            f"{what} has {len(ids)} tokens, and attention maps are drawn for at most "
            f"{MAX_ATTENTION_TOKENS}; give a shorter text (one sentence)"
        )
    return [codec.tokenizer.id_to_token(i) for i in ids]


@contextlib.contextmanager
def recorded_maps(network: nn.Module, compute: Compute) -> Iterator[list[dict]]:
    """Inside: attention layers keep their weights and every term of their computation; read them
    (into the yielded list) before the block ends."""
    maps: list[dict] = []
    with recording_attention(network, steps=True), compute.autocast():
        yield maps


def encoder_maps(network: nn.Module) -> list[dict]:
    return [
        attention_map("encoder_self", i, layer.self_attention, "source", "source")
        for i, layer in enumerate(network.encoder.layers)
    ]


def attention_map(kind: str, layer: int, attention: nn.Module, queries: str, keys: str) -> dict:
    return {
        "kind": kind,
        "layer": layer,
        "queries": queries,
        "keys": keys,
        "weights": attention.weights[0].float().cpu(),  # (H, Tq, Tk)
        "steps": _first_sentence(attention.steps),
    }


def _first_sentence(steps: dict) -> dict:
    """One forward pass's terms (`MultiHeadAttention._record`) for sentence 0, in float32 on the
    CPU: per head q (H, Tq, Dh), k and v (H, Tk, Dh), raw scores (H, Tq, Tk), scale (H,), bias
    (H, Tq, Tk) if any, allowed (Tq, Tk) if masked, head output (H, Tq, Dh), share (H, Tq, D),
    gate (H,) if any, out_bias (D,)."""
    batched = {"q", "k", "v", "raw", "weights", "head_out", "share", "allowed"}
    first = {
        name: (t[0] if name in batched else t).cpu()
        for name, t in steps.items()
        if name != "weights"
    }
    if "allowed" in first:  # the same for every head
        first["allowed"] = first["allowed"][0].clone()
    return {name: t if t.dtype == torch.bool else t.float() for name, t in first.items()}


ROLLOUT_KINDS = {"encoder_self": "encoder_rollout", "decoder_self": "decoder_rollout"}


def rollout_maps(maps: list[dict]) -> list[dict]:
    """Attention rollout (Abnar & Zuidema, 2020) of the self-attention `maps`: after each layer,
    how much each input token has flowed into each position through all the layers so far. Each
    layer's heads are averaged and the residual connection added as the identity, A = ½W̄ + ½I
    (rows still sum to 1); the rollout after layer l is A_l · … · A_0. One map per layer, with a
    single "head"."""
    rolled = []
    for kind, rollout_kind in ROLLOUT_KINDS.items():
        flow = None
        for item in sorted((m for m in maps if m["kind"] == kind), key=lambda m: m["layer"]):
            weights = item["weights"].float().mean(0)  # (T, T)
            step = 0.5 * weights + 0.5 * torch.eye(weights.shape[0])
            flow = step if flow is None else step @ flow
            rolled.append(
                {**item, "kind": rollout_kind, "weights": flow[None].clone(), "steps": None}
            )
    return rolled
