"""A translation run as a Hugging Face `transformers` model folder, loadable with `transformers` alone.

minitx's encoder-decoder is the function of one of two `transformers` architectures, chosen by
`model.norm`:
- pre-norm → Pegasus: LayerNorm before each sublayer, a final LayerNorm after each stack;
- post-norm → Marian: LayerNorm after each residual sum, no final LayerNorm.
Both scale token embeddings by √d_model, add sinusoidal positions from 0, use biased Q/K/V/output
projections, scale scores by 1/√d_head and use torch's LayerNorm (ε 1e-5), as minitx does.

Two differences are reparametrised exactly, so the exported model computes minitx's logits:
- Position layout. minitx interleaves the sinusoids (sin at even features, cos at odd ones);
  `transformers` puts the sines in the first half and the cosines in the second. The model width is
  permuted the same way in every weight that reads or writes the residual stream (embeddings,
  projections, LayerNorms, the output layer); LayerNorm and the residual sums do not care about
  the order of features, so the function is unchanged.
- Decoder start. minitx starts the target from `<s>`; Pegasus and Marian (and CTranslate2's
  converter for them) start from the pad token. The exported input embedding table holds `<s>`'s
  vector in the pad row, and the output layer is a separate, exact copy of minitx's, so pad never
  appears as a prediction it was not before. Padding itself is masked, so its vector is never read.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
import yaml
from torch import nn

from minitx.config import Config, ModelConfig, config_to_dict
from minitx.data.sources import SYNTHETIC
from minitx.data.tokenizer import BOS, EOS, PAD, UNK, Codecs, TextCodec
from minitx.errors import UserError
from minitx.model.positions import halves_order
from minitx.model.transformer import Seq2Seq
from minitx.run_dir import RunDir

MAX_POSITIONS = 1024  # rows of the exported sinusoid table, as Marian's and Pegasus' defaults


def check_expressible(cfg: Config) -> None:
    """Refuse, naming the key, a model no `transformers` seq2seq architecture computes exactly."""
    model = cfg.model
    problems = {
        "model.attention": model.attention if model.attention != "scaled_dot" else None,
        "model.positions": model.positions if model.positions != "sinusoidal" else None,
        "model.n_kv_heads": model.n_kv_heads
        if model.n_kv_heads not in (None, model.n_heads)
        else None,
        "model.window": model.window,
        "model.dilation": model.dilation if model.dilation != 1 else None,
        "model.d_model": model.d_model if model.d_model % 2 else None,
        # One tokenizer file: `transformers` tokenizers hold one vocabulary.
        "tokenizer.joint": False if not (cfg.tokenizer.joint or cfg.tokenizer.path) else None,
        # Pegasus has one embedding table for encoder and decoder.
        "model.tie_embeddings": False if model.norm == "pre" and not model.tie_embeddings else None,
    }
    for key, value in problems.items():
        if value is not None:
            raise UserError(
                f"transformers has no seq2seq model with {key}: {value}; export models with "
                "scaled_dot attention, sinusoidal positions, all heads keeping their keys and "
                "values, full attention, an even d_model and a joint vocabulary (tied embeddings "
                "for pre-norm), or use --format ctranslate2"
            )


def hf_model(model: Seq2Seq, cfg: Config, codecs: Codecs) -> nn.Module:
    """The `transformers` model (PegasusForConditionalGeneration or MarianMTModel) computing
    `model`'s function, in eval mode."""
    from transformers import (
        MarianConfig,
        MarianMTModel,
        PegasusConfig,
        PegasusForConditionalGeneration,
    )

    check_expressible(cfg)
    if not codecs.joint:  # e.g. fine-tuned from an import, which brings a tokenizer per side
        raise UserError(
            "this run has a tokenizer per side, and a transformers tokenizer holds one "
            "vocabulary; export it with --format ctranslate2"
        )
    codec, m = codecs.tgt, cfg.model
    common = dict(
        vocab_size=codec.vocab_size,
        d_model=m.d_model,
        encoder_layers=m.n_encoder_layers,
        decoder_layers=m.n_decoder_layers,
        encoder_attention_heads=m.n_heads,
        decoder_attention_heads=m.n_heads,
        encoder_ffn_dim=m.d_ff,
        decoder_ffn_dim=m.d_ff,
        activation_function=m.activation,
        dropout=m.dropout,
        attention_dropout=m.attention_dropout,
        activation_dropout=m.activation_dropout,
        max_position_embeddings=MAX_POSITIONS,
        scale_embedding=True,
        pad_token_id=codec.pad_id,
        eos_token_id=codec.eos_id,
        bos_token_id=codec.bos_id,
        decoder_start_token_id=codec.pad_id,
        forced_eos_token_id=None,
        tie_word_embeddings=False,  # the output layer is minitx's, the input table is not
    )
    if m.norm == "pre":
        # normalize_before/normalize_embedding: read by CTranslate2's converter (BartLoader), which
        # otherwise takes a Pegasus model for post-norm with an embedding LayerNorm.
        config = PegasusConfig(**common, normalize_before=True, normalize_embedding=False)
        exported = PegasusForConditionalGeneration(config)
    else:
        config = MarianConfig(
            **common,
            decoder_vocab_size=codec.vocab_size,
            share_encoder_decoder_embeddings=m.tie_embeddings,
        )
        exported = MarianMTModel(config)
    exported.load_state_dict(_hf_weights(model, cfg, codec, exported), strict=False)
    return exported.eval()


# How each weight meets the residual stream, which the halves layout permutes: "reads" (columns:
# a projection out of it), "writes" (rows: a projection into it, and its bias), "norm" (a
# LayerNorm's scale and shift), "inner" (untouched: biases inside attention and the feed-forward).
WeightMap = list[tuple[str, str, str, int | None]]  # (transformers, minitx, kind, half of kv_proj)


def weight_map(cfg: ModelConfig) -> WeightMap:
    """Each `transformers` weight of the Pegasus/Marian layers and the minitx weight it is; the
    embeddings and output layer are converted apart (see `_hf_weights`)."""
    entries: WeightMap = []

    def linear(name: str, source: str, kind: str, half: int | None = None) -> None:
        entries.append((f"{name}.weight", f"{source}.weight", kind, half))
        bias_kind = "writes" if kind == "writes" else "inner"
        entries.append((f"{name}.bias", f"{source}.bias", bias_kind, half))

    def attention(name: str, source: str) -> None:
        linear(f"{name}.q_proj", f"{source}.q_proj", "reads")
        linear(f"{name}.k_proj", f"{source}.kv_proj", "reads", 0)  # kv_proj stacks [K; V]
        linear(f"{name}.v_proj", f"{source}.kv_proj", "reads", 1)
        linear(f"{name}.out_proj", f"{source}.out_proj", "writes")

    def norm(name: str, source: str) -> None:
        entries.extend((f"{name}.{p}", f"{source}.{p}", "norm", None) for p in ("weight", "bias"))

    def feed_forward(name: str, source: str) -> None:
        linear(f"{name}.fc1", f"{source}.feed_forward.net.0", "reads")
        linear(f"{name}.fc2", f"{source}.feed_forward.net.3", "writes")
        norm(f"{name}.final_layer_norm", f"{source}.feed_forward_residual.norm")

    for i in range(cfg.n_encoder_layers):
        name, source = f"model.encoder.layers.{i}", f"encoder.layers.{i}"
        attention(f"{name}.self_attn", f"{source}.self_attention")
        norm(f"{name}.self_attn_layer_norm", f"{source}.attention_residual.norm")
        feed_forward(name, source)
    for i in range(cfg.n_decoder_layers):
        name, source = f"model.decoder.layers.{i}", f"decoder.layers.{i}"
        attention(f"{name}.self_attn", f"{source}.self_attention")
        norm(f"{name}.self_attn_layer_norm", f"{source}.self_attention_residual.norm")
        attention(f"{name}.encoder_attn", f"{source}.cross_attention")
        norm(f"{name}.encoder_attn_layer_norm", f"{source}.cross_attention_residual.norm")
        feed_forward(name, source)
    if cfg.norm == "pre":
        norm("model.encoder.layer_norm", "encoder.final_norm")
        norm("model.decoder.layer_norm", "decoder.final_norm")
    return entries


def to_halves(tensor: torch.Tensor, kind: str, order: torch.Tensor) -> torch.Tensor:
    """A minitx weight of `kind` in the halves layout (`order`: halves_order); with the inverse
    order, a `transformers` weight in minitx's."""
    if kind == "reads":
        return tensor[:, order]
    return tensor if kind == "inner" else tensor[order]


def _hf_weights(model: Seq2Seq, cfg: Config, codec: TextCodec, exported: nn.Module) -> dict:
    """minitx's state dict under `transformers` names, the model width permuted to the halves
    layout. Every weight of `exported` but its (fixed) position tables must be given."""
    order = halves_order(cfg.model.d_model)
    mine = {name: tensor.detach().float() for name, tensor in model.state_dict().items()}
    weights = {}
    for name, source, kind, half in weight_map(cfg.model):
        tensor = mine[source] if half is None else mine[source].chunk(2)[half]
        weights[name] = to_halves(tensor, kind, order)

    def table(source: str) -> torch.Tensor:
        tokens = mine[source][:, order].clone()
        tokens[codec.pad_id] = tokens[codec.bos_id]  # the decoder starts from pad (see above)
        return tokens

    src_table = table("encoder.embedding.tokens.weight")
    tgt_table = table("decoder.embedding.tokens.weight")
    weights["model.encoder.embed_tokens.weight"] = src_table
    weights["model.decoder.embed_tokens.weight"] = tgt_table
    if "model.shared.weight" in exported.state_dict():
        weights["model.shared.weight"] = src_table
    weights["lm_head.weight"] = mine["decoder.output.weight"][:, order]
    bias = mine.get("decoder.output.bias", torch.zeros(codec.vocab_size))  # model.output_bias
    weights["final_logits_bias"] = bias[None]
    unset = {n for n in exported.state_dict() if n not in weights and "embed_positions" not in n}
    if unset:  # a mapping that misses a weight would export random values
        raise RuntimeError(f"transformers weights left unset: {sorted(unset)}")
    return weights


def generation_settings(cfg: Config, codec: TextCodec) -> dict:
    """generation_config.json: the run's decode settings where `generate()` has them. The length
    limit is one per call there: the run's longest training source (data.max_len) under the
    run's max_len_ratio and max_len_offset, plus the start token."""
    decode = cfg.decode
    limit = math.ceil((cfg.data.max_len + 1) * decode.max_len_ratio) + decode.max_len_offset
    return {
        "decoder_start_token_id": codec.pad_id,
        "bos_token_id": codec.bos_id,
        "eos_token_id": codec.eos_id,
        "pad_token_id": codec.pad_id,
        "num_beams": decode.beam_size,
        "length_penalty": decode.length_penalty,
        "early_stopping": False,  # minitx's stopping rule (docs/decoding.md)
        "max_length": min(limit, MAX_POSITIONS) + 1,
    }


def write_tokenizer(codec: TextCodec, target: RunDir) -> None:
    """tokenizer.json with `</s>` appended to each input (as minitx feeds the encoder), and the
    tokenizer_config.json that makes AutoTokenizer load it as a fast tokenizer. minitx itself
    encodes without the special tokens, so the same file serves both."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    tokenizer = Tokenizer.from_str(codec.tokenizer.to_str())
    tokenizer.post_processor = TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A $B {EOS}", special_tokens=[(EOS, codec.eos_id)]
    )
    tokenizer.save(str(target.tokenizer_file))
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": PAD,
        "model_max_length": MAX_POSITIONS,
        "clean_up_tokenization_spaces": False,  # minitx's decoder output, unchanged
    }
    (target.root / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")


def model_card(cfg: Config, source: RunDir | None, architecture: str) -> str:
    """README.md with Hub metadata: the language pair, the task, the data when it is a Hub id, and
    the scores of the run's `minitx eval` files with their sacreBLEU signatures."""
    data = cfg.data
    results = _eval_results(source, data) if source is not None else []
    meta: dict = {
        "language": [data.src, data.tgt] if _are_languages(data) else None,
        "library_name": "transformers",
        "pipeline_tag": "translation",
        "tags": ["translation", "minitx", architecture],
    }
    meta = {key: value for key, value in meta.items() if value is not None}
    hub_data = data.path if _is_hub_id(data.path) else None
    if hub_data:
        meta["datasets"] = [hub_data]
    if results:
        meta["model-index"] = [{"name": "minitx", "results": results}]
    scores = "\n".join(
        f"- {r['dataset']['split']} ({r['dataset']['name']}): "
        + ", ".join(f"{m['name']} {m['value']} (`{m['args']}`)" for m in r["metrics"])
        for r in results
    )
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n\n"
        f"# {data.src}→{data.tgt} translation, trained with minitx\n\n"
        f"A {architecture} encoder-decoder trained from scratch with minitx "
        "(`minitx train` with the config below) and exported with "
        "`minitx export RUN --format transformers --out DIR`.\n\n"
        "## Use\n\n```python\nfrom transformers import pipeline\n\n"
        'translate = pipeline("translation", model="DIR")\n'
        'print(translate("…")[0]["translation_text"])\n```\n\n'
        "Upload the folder as it is: `hf upload USER/NAME DIR .` (older huggingface_hub: "
        "`huggingface-cli upload USER/NAME DIR .`).\n\n"
        f"## Scores (`minitx eval`)\n\n{scores or 'The run had no eval files when exported.'}\n\n"
        "## Training config (`minitx train`)\n\n"
        f"```yaml\n{yaml.safe_dump(_card_config(cfg), sort_keys=False, allow_unicode=True)}```\n"
    )


def _eval_results(run: RunDir, data) -> list[dict]:
    dataset = _shareable(data.path)
    results = []
    for path in sorted(run.eval_dir.glob("*.json")) if run.eval_dir.is_dir() else []:
        scores = json.loads(path.read_text(encoding="utf-8"))
        metrics = [
            {
                "type": metric,
                "name": metric.upper() if metric == "bleu" else "chrF",
                "value": scores[metric],
                "args": scores.get(f"{metric}_signature", ""),
            }
            for metric in ("bleu", "chrf")
            if metric in scores
        ]
        if metrics:
            split = scores.get("data_split", path.stem)
            results.append(
                {
                    "task": {"type": "translation", "name": f"Translation {data.src}-{data.tgt}"},
                    "dataset": {"name": dataset, "type": dataset, "split": split},
                    "metrics": metrics,
                }
            )
    return results


def _are_languages(data) -> bool:
    """Whether data.src and data.tgt name languages (de, en, pt_BR), not columns; the synthetic
    task's are its columns, src and tgt."""
    codes = (data.src, data.tgt)
    code = re.compile(r"[a-z]{2,3}([_-][A-Za-z]{2,4})?")
    return data.path != SYNTHETIC and all(code.fullmatch(c) for c in codes)


def _card_config(cfg: Config) -> dict:
    """The training config with local paths cut to their last part: a card is shared."""
    raw = config_to_dict(cfg)
    for section, key in (("data", "path"), ("tokenizer", "path"), ("train", "init_from")):
        if raw[section].get(key):
            raw[section][key] = _shareable(raw[section][key])
    return raw


def _shareable(path: str) -> str:
    """A Hub id or `synthetic` as it is; a local path as its last part."""
    return path if path == SYNTHETIC or _is_hub_id(path) else Path(path).name


def _is_hub_id(path: str) -> bool:
    """As data/sources.py reads data.path: no local directory, not path-like, at most one `/`."""
    if path.startswith(("hf:", "hub:")):
        path = path.split(":", 1)[1]
    return (
        path != SYNTHETIC
        and not path.startswith((".", "/", "~"))
        and not Path(path).expanduser().exists()
        and path.count("/") <= 1
    )
