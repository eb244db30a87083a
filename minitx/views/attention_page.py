"""The interactive attention page: one self-contained HTML file (data, script and styles inline;
nothing loaded from the network, so it works from file://) to explore every head of every layer.

Two views of the chosen map: lines between query and key tokens (hover or click a token to see
where it looks, as bertviz's head view does) and the weight matrix with its colour scale. Masked
positions (the causal future, keys outside a local window) are drawn as masked, not as zeros.
A third view follows one head's computation for one query token, step by step, with the terms the
model recorded in its forward pass (`MultiHeadAttention._record`): q and the keys, the scores,
scaling, position terms and mask, the softmax, the values, the head's output and its share of the
layer output.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import torch

from minitx.inference.attention_maps import rollout_maps
from minitx.views.attention_template import TEMPLATE

# The numbers, packed as little-endian binary in base64. The attention weights and what the
# step-by-step view's chain runs through (raw scores, position bias, head outputs) are float32,
# exact; the vectors drawn as strips (q, k, v, and each head's share of the layer output, the
# largest: H × Tq × d_model) are float16, 3 significant digits, which keeps a 40-token sentence of
# the Multi30k model under 3 MB.
FULL_PRECISION = ("raw", "head_out")
HALF_PRECISION = ("q", "k", "v", "share")


def page_data(
    examples: list[dict],
    title: str,
    window: int | None,
    dilation: int,
    score: str,
    positions: str,
    steps: bool = True,
) -> dict:
    """What the page embeds: per example its tokens, outcome and maps (weights and a per-map rule
    for masked positions; for a recorded layer, its step-by-step terms unless `steps` is False,
    which keeps a page of many examples light), and the model's score function and positions,
    which the step view names."""
    return {
        "title": title,
        "score": score,
        "positions": positions,
        "examples": [_example(example, window, dilation, steps) for example in examples],
    }


_NUMPY_TYPES = {"f32": "<f4", "f16": "<f2", "u8": "u1"}


def packed(tensor: torch.Tensor, kind: str) -> dict:
    """`tensor` as {shape, type: f32 | f16 | u8, data: base64 of its little-endian bytes}."""
    values = tensor.detach().cpu()
    values = (values if kind == "u8" else values.float()).numpy().astype(_NUMPY_TYPES[kind])
    data = base64.b64encode(values.tobytes()).decode()
    return {"shape": list(tensor.shape), "type": kind, "data": data}


def unpacked(item: dict) -> torch.Tensor:
    """The tensor `packed` stored, as float32 (or bool for u8)."""
    import numpy as np

    values = np.frombuffer(base64.b64decode(item["data"]), dtype=_NUMPY_TYPES[item["type"]])
    tensor = torch.from_numpy(values.astype("float32")).reshape(item["shape"])
    return tensor.bool() if item["type"] == "u8" else tensor


def _steps(steps: dict | None) -> dict | None:
    if steps is None:
        return None
    out = {name: packed(steps[name], "f32") for name in FULL_PRECISION}
    out |= {name: packed(steps[name], "f16") for name in HALF_PRECISION}
    if "bias" in steps:
        out["bias"] = packed(bias_by_distance(steps["bias"]), "f32")
    if "allowed" in steps:
        out["allowed"] = packed(steps["allowed"], "u8")
    out["scale"] = steps["scale"].tolist()
    if "gate" in steps:
        out["gate"] = steps["gate"].tolist()
    return out


def bias_by_distance(bias: torch.Tensor) -> torch.Tensor:
    """A position bias (H, Tq, Tk), which depends only on the distance j − i, as one value per
    distance (H, Tq + Tk − 1), at index j − i + Tq − 1: the same numbers in Tq times less room."""
    _, queries, keys = bias.shape
    index = torch.arange(queries + keys - 1)
    rows = (queries - 1 - index).clamp(min=0)  # query i and key j of each distance
    return bias[:, rows, index + rows - (queries - 1)]


def _example(maps: dict, window: int | None, dilation: int, steps: bool) -> dict:
    tokens = {"source": maps["source_tokens"], "target": maps.get("target_tokens", [])}
    return {
        "source_tokens": tokens["source"],
        "target_tokens": tokens["target"],
        "translation": maps.get("translation"),
        "prediction": maps.get("prediction"),
        "pooling": maps.get("pooling"),
        "maps": [
            {
                "kind": item["kind"],
                "layer": item["layer"],
                "queries": tokens[item["queries"]],  # "source"/"target" → the tokens
                "keys": tokens[item["keys"]],
                # causal: key after query; band: outside the local window (encoder self-attention)
                "mask": "causal"
                if item["kind"] in ("decoder_self", "decoder_rollout")
                else "band"
                if item["kind"] == "encoder_self" and window is not None
                else "none",
                "weights": packed(item["weights"], "f32"),  # (H, Tq, Tk)
                "steps": _steps(item.get("steps")) if steps else None,
            }
            for item in [*maps["maps"], *rollout_maps(maps["maps"])]
        ],
        "window": window,
        "dilation": dilation,
    }


def write_attention_page(data: dict, path: Path) -> Path:
    """Write the page for `page_data(...)` to `path`."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # A JSON string can hold "</script>"; escaping "<" keeps it inside the script element.
    payload = payload.replace("<", "\\u003c")
    page = TEMPLATE.replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
