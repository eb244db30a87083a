"""Attention maps of one input, recorded from the model's own forward pass (see the tasks'
`attention_maps`): the weights each attention layer computed, per head."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
    """Inside: attention layers keep their weights; read them (into the yielded list) before
    the block ends."""
    maps: list[dict] = []
    with recording_attention(network), compute.autocast():
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
    }
