"""A translation model as a CTranslate2 model: its TransformerSpec filled from the weights.

CTranslate2 (the engine OpenNMT-py, fairseq and Marian models are converted to) runs the same
computation as `model/transformer.py` when the config stays within what its spec can say: token
embeddings × √d_model plus a position table, pre- or post-norm layers with ReLU, GELU or swish,
fused Q/K/V projections (with fewer key/value heads for grouped-query attention), a final norm
after pre-norm stacks, and the output projection (with its bias under `model.output_bias`). The source gets `</s>` appended
(`add_source_eos`), the target starts from `<s>`, as in minitx.
"""

from __future__ import annotations

from pathlib import Path

from minitx.config import ModelConfig
from minitx.errors import UserError
from minitx.model.positions import SinusoidalPositions
from minitx.model.transformer import Seq2Seq

QUANTIZATIONS = ("none", "int8", "int8_float32", "float16")
LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, which minitx's norms use


def check_expressible(cfg: ModelConfig) -> None:
    """Refuse, naming the key, a model CTranslate2's Transformer spec cannot run exactly."""
    problems = {
        "model.attention": cfg.attention if cfg.attention != "scaled_dot" else None,
        "model.positions": cfg.positions
        if cfg.positions not in ("sinusoidal", "learned")
        else None,
        "model.window": cfg.window,
        "model.dilation": cfg.dilation if cfg.dilation != 1 else None,
    }
    for key, value in problems.items():
        if value is not None:
            raise UserError(
                f"CTranslate2 cannot run {key}: {value}; export models with scaled_dot attention, "
                "sinusoidal or learned positions and full (unwindowed) attention"
            )


def build_spec(model: Seq2Seq, cfg: ModelConfig, src_tokens: list[str], tgt_tokens: list[str]):
    """The TransformerSpec of `model`, with its vocabularies (token strings in id order)."""
    from ctranslate2.specs import common_spec, transformer_spec

    check_expressible(cfg)
    activation = {
        "relu": common_spec.Activation.RELU,
        "gelu": common_spec.Activation.GELU,
        "swish": common_spec.Activation.SWISH,
    }
    options = {
        "pre_norm": cfg.norm == "pre",
        "activation": activation[cfg.activation],
        "num_heads_kv": cfg.n_kv_heads,  # grouped-query: CTranslate2 repeats each K/V head too
    }
    spec = transformer_spec.TransformerSpec(
        transformer_spec.TransformerEncoderSpec(cfg.n_encoder_layers, cfg.n_heads, **options),
        transformer_spec.TransformerDecoderSpec(cfg.n_decoder_layers, cfg.n_heads, **options),
    )
    # Copies: CTranslate2 quantizes and reshapes the arrays it is given in place, and the
    # model's own tensors must stay as they are (the caller may go on using the model).
    weights = {
        name: tensor.detach().cpu().float().numpy().copy()
        for name, tensor in model.state_dict().items()
    }
    _set_stack(spec.encoder, weights, "encoder", _position_table(weights, "encoder", cfg))
    _set_stack(spec.decoder, weights, "decoder", _position_table(weights, "decoder", cfg))
    spec.decoder.projection.weight = weights["decoder.output.weight"]
    if "decoder.output.bias" in weights:  # model.output_bias
        spec.decoder.projection.bias = weights["decoder.output.bias"]
    for i in range(cfg.n_encoder_layers):
        layer, scope = spec.encoder.layer[i], f"encoder.layers.{i}"
        _set_self_attention(layer.self_attention, weights, scope, "attention_residual")
        _set_feed_forward(layer.ffn, weights, scope)
    for i in range(cfg.n_decoder_layers):
        layer, scope = spec.decoder.layer[i], f"decoder.layers.{i}"
        _set_self_attention(layer.self_attention, weights, scope, "self_attention_residual")
        _set_cross_attention(layer.attention, weights, scope)
        _set_feed_forward(layer.ffn, weights, scope)
    spec.config.add_source_eos = True
    spec.config.layer_norm_epsilon = LAYER_NORM_EPSILON
    spec.register_source_vocabulary(src_tokens)
    spec.register_target_vocabulary(tgt_tokens)
    return spec


def save_spec(spec, out: Path, quantization: str) -> None:
    spec.validate()
    spec.optimize(quantization=None if quantization == "none" else quantization)
    out.mkdir(parents=True, exist_ok=True)
    spec.save(str(out))


def position_count(cfg: ModelConfig) -> int:
    """Rows of the exported position table: the learned table, or that many sinusoids (minitx's
    own have no limit; CTranslate2 needs a table, and refuses longer inputs)."""
    return cfg.max_positions if cfg.positions == "learned" else max(cfg.max_positions, 4096)


def _position_table(weights: dict, scope: str, cfg: ModelConfig):
    if cfg.positions == "learned":
        return weights[f"{scope}.embedding.positions.table.weight"]
    sinusoids = SinusoidalPositions(cfg.d_model, initial_length=position_count(cfg))
    return sinusoids.table.numpy()


def _set_stack(stack, weights: dict, scope: str, positions) -> None:
    # The encoder spec takes a list of source embeddings (for factored inputs); minitx has one.
    tokens = stack.embeddings[0] if isinstance(stack.embeddings, list) else stack.embeddings
    tokens.weight = weights[f"{scope}.embedding.tokens.weight"]
    stack.scale_embeddings = True  # minitx multiplies token embeddings by √d_model too
    stack.position_encodings.encodings = positions
    if f"{scope}.final_norm.weight" in weights:  # pre-norm
        _set_norm(stack.layer_norm, weights, f"{scope}.final_norm")


def _set_norm(norm, weights: dict, scope: str) -> None:
    norm.gamma, norm.beta = weights[f"{scope}.weight"], weights[f"{scope}.bias"]


def _set_linear(linear, weights: dict, *scopes: str) -> None:
    """One CTranslate2 linear from one or more minitx linears stacked on the output axis."""
    import numpy as np

    linear.weight = np.concatenate([weights[f"{scope}.weight"] for scope in scopes])
    linear.bias = np.concatenate([weights[f"{scope}.bias"] for scope in scopes])


def _set_self_attention(attention, weights: dict, layer: str, residual: str) -> None:
    scope = f"{layer}.{'self_attention'}"
    _set_norm(attention.layer_norm, weights, f"{layer}.{residual}.norm")
    _set_linear(attention.linear[0], weights, f"{scope}.q_proj", f"{scope}.kv_proj")  # [Q; K; V]
    _set_linear(attention.linear[1], weights, f"{scope}.out_proj")


def _set_cross_attention(attention, weights: dict, layer: str) -> None:
    scope = f"{layer}.cross_attention"
    _set_norm(attention.layer_norm, weights, f"{layer}.cross_attention_residual.norm")
    _set_linear(attention.linear[0], weights, f"{scope}.q_proj")
    _set_linear(attention.linear[1], weights, f"{scope}.kv_proj")  # [K; V]
    _set_linear(attention.linear[2], weights, f"{scope}.out_proj")


def _set_feed_forward(ffn, weights: dict, layer: str) -> None:
    _set_norm(ffn.layer_norm, weights, f"{layer}.feed_forward_residual.norm")
    _set_linear(ffn.linear_0, weights, f"{layer}.feed_forward.net.0")
    _set_linear(ffn.linear_1, weights, f"{layer}.feed_forward.net.3")
