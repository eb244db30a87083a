"""Use a trained run: load it from its directory, score a split, translate or classify text."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from minitx import runtime
from minitx.alignments import word_alignments
from minitx.config import Config, DecodeConfig, apply_overrides, config_from_dict, config_to_dict
from minitx.data.batching import encode_labelled, encode_pairs, encode_texts, pad
from minitx.data.labels import load_label_names
from minitx.data.run_data import load_split
from minitx.data.sources import split_name
from minitx.data.tokenizer import Codecs, load_codecs
from minitx.decode import Hypothesis, translate
from minitx.errors import UserError
from minitx.model.attention import recording_attention
from minitx.model.transformer import Classifier, Seq2Seq, build_run_model
from minitx.run_dir import RunDir
from minitx.runtime import Compute
from minitx.scoring import score_labels, score_pairs
from minitx.training.checkpoint import find_checkpoint, load_meta, load_weights

# Attention maps are drawn one cell per token pair; beyond this many tokens a side the picture is
# unreadable and its memory grows past what a plot library can allocate.
MAX_ATTENTION_TOKENS = 200


@dataclass
class TrainedRun:
    """A run's model, or an export's engine (then `model` is None), with what using it needs."""

    run: RunDir
    config: Config
    codecs: Codecs
    model: Seq2Seq | Classifier | None
    compute: Compute
    checkpoint_step: int
    labels: list[str] | None  # classification: label names in class-index order
    engine: Any = None  # an export's CTranslate2Translator or OnnxClassifier (minitx/export)


def load_run(
    run: RunDir | Path | str, checkpoint: str = "best", overrides: tuple[str, ...] = ()
) -> TrainedRun:
    """Config, tokenizer and weights of a run (or the engine of an export directory, written by
    `minitx export`); `overrides` may change decode and run settings."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    directory = run.checkpoint(checkpoint)  # refuses a name that is not a checkpoint's
    cfg = run.config()
    if overrides:
        cfg = config_from_dict(apply_overrides(config_to_dict(cfg), overrides), source="--set")
    if run.is_export():
        return _load_export(run, cfg)
    runtime.set_threads(cfg.run.threads)
    device = runtime.resolve_device(cfg.run.device)
    cfg = runtime.with_resolved_dtype(cfg, device)
    runtime.warn_if_slow_dtype(cfg.run.dtype, device)
    codecs = load_codecs(run)
    found = find_checkpoint(directory)
    if found is None:
        raise UserError(f"{run} has no '{checkpoint}' checkpoint yet; train it first")
    meta = load_meta(found)
    labels = load_label_names(run.labels_file) if cfg.task == "classification" else None
    model = build_run_model(cfg, codecs, labels)
    load_weights(found, model, device)
    model.to(device).eval()
    compute = Compute(device, cfg.run.dtype)
    return TrainedRun(run, cfg, codecs, model, compute, int(meta.get("step", 0)), labels)


def _load_export(run: RunDir, cfg: Config) -> TrainedRun:
    from minitx.export.engines import open_engine

    info = run.export_info()
    codecs = load_codecs(run)
    labels = load_label_names(run.labels_file) if cfg.task == "classification" else None
    engine = open_engine(run.root, info, cfg, codecs, run.onnx_file)
    compute = Compute(torch.device("cpu"), "fp32")  # for what runs beside the engine
    return TrainedRun(run, cfg, codecs, None, compute, int(info.get("step", 0)), labels, engine)


def require_model(trained: TrainedRun, command: str) -> None:
    """Refuse an export where `command` needs the PyTorch model itself."""
    if trained.model is None:
        raise UserError(
            f"{trained.run} is an export; `minitx {command}` needs the run directory it came from "
            f"({trained.run.export_info().get('run', 'see export.json')})"
        )


def require_task(trained: TrainedRun, task: str, instead: str) -> None:
    if trained.config.task != task:
        raise UserError(
            f"{trained.run} is a {trained.config.task} run; `minitx {instead}` is for {task} runs"
        )


def evaluate_split(trained: TrainedRun, split: str, decode: DecodeConfig | None = None) -> dict:
    """Score `split` and write RUN_DIR/eval/<split>.json with the outputs beside it; translation
    decodes the best hypothesis as `decode` says (default: the run's settings)."""
    require_model(trained, "eval")  # the loss needs the model's logits
    run = trained.run
    run.eval_dir.mkdir(exist_ok=True)
    if trained.config.task == "classification":
        report = _evaluate_classification(trained, split)
    else:
        report = _evaluate_translation(trained, split, decode or trained.config.decode)
    run.eval_files(split).report.write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return report


def _evaluate_translation(trained: TrainedRun, split: str, decode: DecodeConfig) -> dict:
    """BLEU, chrF, exact match, loss; the hypotheses go to <split>.hyp."""
    cfg, codecs = trained.config, trained.codecs
    decode = replace(decode, n_best=1, alignments=False)
    pairs = encode_pairs(load_split(cfg, split), codecs.src, codecs.tgt)
    scores, hypotheses = score_pairs(
        trained.model, pairs, codecs, decode, cfg.train.batch_tokens, trained.compute
    )
    trained.run.eval_files(split).hypotheses.write_text(
        "".join(h + "\n" for h in hypotheses), encoding="utf-8"
    )
    return {
        "split": split,
        "data_split": split_name(cfg.data.splits, split),
        "sentences": len(pairs),
        "checkpoint_step": trained.checkpoint_step,
        **scores,
        "decoding": {
            "beam_size": decode.beam_size,
            "sample": decode.sample,
            "length_penalty": decode.length_penalty,
            "max_len_ratio": decode.max_len_ratio,
            "max_len_offset": decode.max_len_offset,
        },
    }


def _evaluate_classification(trained: TrainedRun, split: str) -> dict:
    """Accuracy, macro-F1, per-class scores, confusion matrix (also drawn as <split>.confusion.png),
    loss; predicted labels and probabilities go to <split>.pred."""
    from minitx.plots import plot_confusion_matrix  # matplotlib loads only when drawing

    cfg, codec, labels = trained.config, trained.codecs.src, trained.labels
    texts, skipped = encode_labelled(load_split(cfg, split), codec, labels, split)
    scores = score_labels(
        trained.model, texts, codec, labels, cfg.train.batch_tokens, trained.compute
    )
    predictions, probabilities = scores.pop("predictions"), scores.pop("probabilities")
    trained.run.eval_files(split).predictions.write_text(
        "".join(f"{labels[p]}\t{q:.4f}\n" for p, q in zip(predictions, probabilities, strict=True)),
        encoding="utf-8",
    )
    plot_confusion_matrix(
        scores["confusion_matrix"]["matrix"],
        labels,
        trained.run.eval_files(split).confusion,
        title=f"{trained.run.name}: {split}, accuracy {scores['accuracy']:.2f}%",
    )
    return {
        "split": split,
        "data_split": split_name(cfg.data.splits, split),
        "examples": len(texts),
        "skipped": skipped,
        "checkpoint_step": trained.checkpoint_step,
        **scores,
    }


def translate_texts(
    trained: TrainedRun, texts: list[str], decode: DecodeConfig | None = None
) -> list[list[Hypothesis]]:
    """Each text's hypotheses, best first, decoded as `decode` says (default: the run's settings);
    with `decode.alignments`, each hypothesis carries its word alignment."""
    require_task(trained, "translation", "translate")
    decode = decode or trained.config.decode
    if trained.engine is not None:
        return trained.engine.translate(texts, decode)
    src_ids = trained.codecs.src.encode(texts)
    found = translate(trained.model, src_ids, trained.codecs, decode, trained.compute)
    if decode.alignments:
        found = [
            [replace(h, alignment=_align(trained, ids, h.tokens, decode)) for h in hypotheses]
            for ids, hypotheses in zip(src_ids, found, strict=True)
        ]
    return found


@torch.no_grad()
def _align(
    trained: TrainedRun, src_ids: list[int], tgt_ids: list[int], decode: DecodeConfig
) -> list[tuple[int, int]]:
    """Word alignment of one hypothesis from the cross-attention of `decode.alignment_layer`,
    averaged over heads, in a teacher-forced pass over the source and the hypothesis."""
    src_codec, tgt_codec, model = trained.codecs.src, trained.codecs.tgt, trained.model
    layers = model.decoder.layers
    layer = decode.alignment_layer
    if layer is None:
        layer = -2 if len(layers) > 1 else -1
    if not -len(layers) <= layer < len(layers):
        raise UserError(
            f"decode.alignment_layer {layer}: the decoder has layers 0 to {len(layers) - 1} "
            f"(or -1 to -{len(layers)})"
        )
    src = [*src_ids, src_codec.eos_id]
    tgt_in = [tgt_codec.bos_id, *tgt_ids]
    device = trained.compute.device
    with recording_attention(model), trained.compute.autocast():
        model(torch.tensor([src], device=device), torch.tensor([tgt_in], device=device))
        weights = layers[layer].cross_attention.weights[0].float().mean(0)
    src_tokens = [src_codec.tokenizer.id_to_token(i) for i in src]
    tgt_tokens = [tgt_codec.tokenizer.id_to_token(i) for i in [*tgt_ids, tgt_codec.eos_id]]
    return word_alignments(weights.cpu(), src_tokens, tgt_tokens)


@torch.no_grad()
def classify_texts(
    trained: TrainedRun, texts: list[str], batch_size: int = 256
) -> list[dict[str, float]]:
    """Each text's probability per label name. Pairs are given as `text<TAB>pair`."""
    require_task(trained, "classification", "predict")
    codec = trained.codecs.src
    if trained.config.data.text_pair:
        lacking = [i + 1 for i, text in enumerate(texts) if "\t" not in text]
        if lacking:
            raise UserError(
                f"this run classifies sentence pairs: give each as TEXT<TAB>PAIR (input "
                f"{lacking[0]} has no tab)"
            )
        split = [text.split("\t", 1) for text in texts]
        ids = encode_texts(codec, [a for a, _ in split], [b for _, b in split])
    else:
        ids = encode_texts(codec, texts)
    results = []
    for start in range(0, len(ids), batch_size):
        src = pad(ids[start : start + batch_size], codec.pad_id).to(trained.compute.device)
        if trained.engine is not None:
            probabilities = trained.engine.probabilities(src.numpy())
        else:
            with trained.compute.autocast():
                probabilities = trained.model(src).float().softmax(-1).cpu().numpy()
        results += [dict(zip(trained.labels, row.tolist(), strict=True)) for row in probabilities]
    return results


@torch.no_grad()
def attention_maps(trained: TrainedRun, text: str) -> dict:
    """Every attention map of one input, from the model's own forward pass.

    Translation: the greedy translation is fed back teacher-forced, and the maps are encoder
    self-attention (source × source), decoder self-attention (target × target) and
    cross-attention (target × source), per layer, each (H, Tq, Tk). Classification: encoder
    self-attention and the prediction.
    """
    require_model(trained, "attention")
    codec, model, device = trained.codecs.src, trained.model, trained.compute.device
    translation = trained.config.task == "translation"
    if translation:
        ids = [*codec.encode([text])[0], codec.eos_id]
    else:
        ids = encode_texts(codec, [text])[0]
    _check_drawable(len(ids), "the text")
    src = torch.tensor([ids], device=device)
    result: dict = {"source_tokens": [codec.tokenizer.id_to_token(i) for i in ids], "maps": []}
    if translation:  # decoded before recording starts: the search needs no weights kept
        greedy = replace(trained.config.decode, beam_size=1, n_best=1, sample=False)
        ((best, *_),) = translate_texts(trained, [text], greedy)
        result["translation"] = best.text
        tgt_codec = trained.codecs.tgt
        tgt_ids = [tgt_codec.bos_id, *tgt_codec.encode([result["translation"]])[0]]
        _check_drawable(len(tgt_ids), "its translation")
        result["target_tokens"] = [tgt_codec.tokenizer.id_to_token(i) for i in tgt_ids]
    with recording_attention(model), trained.compute.autocast():
        if translation:
            model(src, torch.tensor([tgt_ids], device=device))
        else:
            probabilities = model(src).float().softmax(-1)[0]
            best = int(probabilities.argmax())
            result["prediction"] = {
                "label": trained.labels[best],
                "probability": round(float(probabilities[best]), 4),
            }
        for i, layer in enumerate(model.encoder.layers):
            result["maps"].append(_map("encoder_self", i, layer.self_attention, "source", "source"))
        for i, layer in enumerate(model.decoder.layers if translation else []):
            result["maps"].append(_map("decoder_self", i, layer.self_attention, "target", "target"))
            result["maps"].append(_map("cross", i, layer.cross_attention, "target", "source"))
    return result


def _check_drawable(n_tokens: int, what: str) -> None:
    if n_tokens > MAX_ATTENTION_TOKENS:
        raise UserError(
            f"{what} has {n_tokens} tokens, and attention maps are drawn for at most "
            f"{MAX_ATTENTION_TOKENS}; give a shorter text (one sentence)"
        )


def _map(kind: str, layer: int, attention, queries: str, keys: str) -> dict:
    return {
        "kind": kind,
        "layer": layer,
        "queries": queries,
        "keys": keys,
        "weights": attention.weights[0].float().cpu(),  # (H, Tq, Tk)
    }
