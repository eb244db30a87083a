"""Use a trained run: load it from its directory, score a split, translate or classify text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from minitx import runtime
from minitx.config import Config, DecodeConfig, apply_overrides, config_from_dict, config_to_dict
from minitx.data.batching import (
    EncodedPairs,
    EncodedTexts,
    encode_labelled,
    encode_pairs,
    encode_texts,
    pad,
)
from minitx.data.labels import load_label_names
from minitx.data.sources import split_name
from minitx.data.tokenizer import Codecs, TextCodec, load_codecs
from minitx.decode import translate
from minitx.errors import UserError
from minitx.metrics import classification_scores, perplexity, translation_scores
from minitx.model.attention import recording_attention
from minitx.model.transformer import Classifier, Seq2Seq
from minitx.run_dir import build_run_model, load_run_config, load_split
from minitx.train.checkpoint import find_checkpoint, load_meta, load_weights
from minitx.train.objective import logits_and_targets, summed_loss

CHECKPOINTS = ("best", "last")


@dataclass
class TrainedRun:
    run_dir: Path
    config: Config
    codecs: Codecs
    model: Seq2Seq | Classifier
    device: torch.device
    checkpoint_step: int
    labels: list[str] | None  # classification: label names in class-index order


def load_run(
    run_dir: Path, checkpoint: str = "best", overrides: tuple[str, ...] = ()
) -> TrainedRun:
    """Config, tokenizer and weights of a run; `overrides` may change decode and run settings."""
    if checkpoint not in CHECKPOINTS and not (
        checkpoint.startswith("step_") and checkpoint[5:].isdigit()
    ):
        raise UserError(f"--checkpoint must be best, last or a kept step_N, got '{checkpoint}'")
    cfg = load_run_config(run_dir)
    if overrides:
        cfg = config_from_dict(apply_overrides(config_to_dict(cfg), overrides), source="--set")
    runtime.set_threads(cfg.run.threads)
    runtime.keep_freed_memory()
    device = runtime.resolve_device(cfg.run.device)
    cfg = runtime.with_resolved_dtype(cfg, device)
    codecs = load_codecs(run_dir)
    directory = find_checkpoint(run_dir / "checkpoints" / checkpoint)
    if directory is None:
        raise UserError(f"{run_dir} has no '{checkpoint}' checkpoint yet; train it first")
    meta = load_meta(directory)
    labels = load_label_names(run_dir) if cfg.task == "classification" else None
    model = build_run_model(cfg, codecs, labels)
    load_weights(directory, model, device)
    model.to(device).eval()
    return TrainedRun(run_dir, cfg, codecs, model, device, int(meta.get("step", 0)), labels)


def require_task(run: TrainedRun, task: str, instead: str) -> None:
    if run.config.task != task:
        raise UserError(
            f"{run.run_dir} is a {run.config.task} run; `minitx {instead}` is for {task} runs"
        )


@torch.no_grad()
def score_pairs(
    model: Seq2Seq,
    pairs: EncodedPairs,
    codecs: Codecs,
    device: torch.device,
    dtype: str,
    batch_tokens: int,
    beam_size: int,
    decode: DecodeConfig,
) -> tuple[dict, list[str]]:
    """Teacher-forced loss and perplexity, then decode and score BLEU, chrF and exact match."""
    model.eval()
    codec = codecs.tgt
    nll, tokens = 0.0, 0
    for batch in pairs.batches(batch_tokens, None, codec):
        batch = batch.to(device)
        with runtime.autocast(device, dtype):
            logits, targets = logits_and_targets(model, batch)
        nll += float(summed_loss(logits, targets))
        tokens += batch.n_targets
    hypotheses = translate(
        model,
        pairs.src_ids,
        codecs.src,
        codec,
        device,
        dtype,
        beam_size=beam_size,
        batch_size=decode.batch_size,
        length_penalty=decode.length_penalty,
        max_len_ratio=decode.max_len_ratio,
        max_len_offset=decode.max_len_offset,
    )
    loss = nll / max(tokens, 1)
    scores = {"loss": round(loss, 4), "ppl": round(perplexity(loss), 3)}
    return {**scores, **translation_scores(hypotheses, pairs.tgt_text)}, hypotheses


@torch.no_grad()
def score_labels(
    model: Classifier,
    texts: EncodedTexts,
    codec: TextCodec,
    labels: list[str],
    device: torch.device,
    dtype: str,
    batch_tokens: int,
) -> dict:
    """Loss, accuracy, macro-F1, per-class scores and confusion matrix; with `predictions` (class
    indices) and their `probabilities`, in the order of `texts`."""
    model.eval()
    nll = 0.0
    predictions, probabilities = [0] * len(texts), [0.0] * len(texts)
    for group in texts.batch_groups(batch_tokens, None):
        batch = texts.batch(group.tolist(), codec).to(device)
        with runtime.autocast(device, dtype):
            logits, targets = logits_and_targets(model, batch)
        nll += float(summed_loss(logits, targets))
        best = logits.float().softmax(-1).max(-1)
        for row, index in enumerate(group.tolist()):
            predictions[index] = int(best.indices[row])
            probabilities[index] = float(best.values[row])
    scores = classification_scores(predictions, texts.labels, labels)
    return {
        "loss": round(nll / max(len(texts), 1), 4),
        **scores,
        "predictions": predictions,
        "probabilities": probabilities,
    }


def evaluate_split(run: TrainedRun, split: str, beam_size: int | None = None) -> dict:
    """Score `split` and write RUN_DIR/eval/<split>.json with the outputs beside it."""
    out_dir = run.run_dir / "eval"
    out_dir.mkdir(exist_ok=True)
    if run.config.task == "classification":
        report = _evaluate_classification(run, split, out_dir)
    else:
        report = _evaluate_translation(run, split, beam_size, out_dir)
    (out_dir / f"{split}.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return report


def _evaluate_translation(
    run: TrainedRun, split: str, beam_size: int | None, out_dir: Path
) -> dict:
    """BLEU, chrF, exact match, loss; the hypotheses go to <split>.hyp."""
    cfg = run.config
    beam = beam_size or cfg.decode.beam_size
    pairs = encode_pairs(load_split(cfg, split), run.codecs.src, run.codecs.tgt)
    scores, hypotheses = score_pairs(
        run.model,
        pairs,
        run.codecs,
        run.device,
        cfg.run.dtype,
        cfg.train.batch_tokens,
        beam,
        cfg.decode,
    )
    (out_dir / f"{split}.hyp").write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    return {
        "split": split,
        "data_split": split_name(cfg.data.splits, split),
        "sentences": len(pairs),
        "checkpoint_step": run.checkpoint_step,
        **scores,
        "decoding": {
            "beam_size": beam,
            "length_penalty": cfg.decode.length_penalty,
            "max_len_ratio": cfg.decode.max_len_ratio,
            "max_len_offset": cfg.decode.max_len_offset,
        },
    }


def _evaluate_classification(run: TrainedRun, split: str, out_dir: Path) -> dict:
    """Accuracy, macro-F1, per-class scores, confusion matrix (also drawn as <split>.confusion.png),
    loss; predicted labels and probabilities go to <split>.pred."""
    from minitx.plots import plot_confusion_matrix  # matplotlib loads only when drawing

    cfg = run.config
    texts, skipped = encode_labelled(load_split(cfg, split), run.codecs.src, run.labels, split)
    scores = score_labels(
        run.model,
        texts,
        run.codecs.src,
        run.labels,
        run.device,
        cfg.run.dtype,
        cfg.train.batch_tokens,
    )
    predictions, probabilities = scores.pop("predictions"), scores.pop("probabilities")
    (out_dir / f"{split}.pred").write_text(
        "".join(
            f"{run.labels[p]}\t{q:.4f}\n" for p, q in zip(predictions, probabilities, strict=True)
        ),
        encoding="utf-8",
    )
    plot_confusion_matrix(
        scores["confusion_matrix"]["matrix"],
        run.labels,
        out_dir / f"{split}.confusion.png",
        title=f"{run.run_dir.name}: {split}, accuracy {scores['accuracy']:.2f}%",
    )
    return {
        "split": split,
        "data_split": split_name(cfg.data.splits, split),
        "examples": len(texts),
        "skipped": skipped,
        "checkpoint_step": run.checkpoint_step,
        **scores,
    }


def translate_texts(
    run: TrainedRun, texts: list[str], beam_size: int | None = None, batch_size: int | None = None
) -> list[str]:
    require_task(run, "translation", "translate")
    cfg = run.config
    src_ids = run.codecs.src.encode(texts)
    return translate(
        run.model,
        src_ids,
        run.codecs.src,
        run.codecs.tgt,
        run.device,
        cfg.run.dtype,
        beam_size=beam_size or cfg.decode.beam_size,
        batch_size=batch_size or cfg.decode.batch_size,
        length_penalty=cfg.decode.length_penalty,
        max_len_ratio=cfg.decode.max_len_ratio,
        max_len_offset=cfg.decode.max_len_offset,
    )


@torch.no_grad()
def classify_texts(
    run: TrainedRun, texts: list[str], batch_size: int = 256
) -> list[dict[str, float]]:
    """Each text's probability per label name. Pairs are given as `text<TAB>pair`."""
    require_task(run, "classification", "predict")
    if run.config.data.text_pair:
        lacking = [i + 1 for i, text in enumerate(texts) if "\t" not in text]
        if lacking:
            raise UserError(
                f"this run classifies sentence pairs: give each as TEXT<TAB>PAIR (input "
                f"{lacking[0]} has no tab)"
            )
        split = [text.split("\t", 1) for text in texts]
        ids = encode_texts(run.codecs.src, [a for a, _ in split], [b for _, b in split])
    else:
        ids = encode_texts(run.codecs.src, texts)
    results = []
    for start in range(0, len(ids), batch_size):
        src = pad(ids[start : start + batch_size], run.codecs.src.pad_id).to(run.device)
        with runtime.autocast(run.device, run.config.run.dtype):
            probabilities = run.model(src).float().softmax(-1).cpu()
        results += [dict(zip(run.labels, row.tolist(), strict=True)) for row in probabilities]
    return results


@torch.no_grad()
def attention_maps(run: TrainedRun, text: str) -> dict:
    """Every attention map of one input, from the model's own forward pass.

    Translation: the greedy translation is fed back teacher-forced, and the maps are encoder
    self-attention (source × source), decoder self-attention (target × target) and
    cross-attention (target × source), per layer, each (H, Tq, Tk). Classification: encoder
    self-attention and the prediction.
    """
    codec = run.codecs.src
    model = run.model
    if run.config.task == "classification":
        ids = encode_texts(codec, [text])[0]
        src_tokens = [codec.tokenizer.id_to_token(i) for i in ids]
    else:
        ids = [*codec.encode([text])[0], codec.eos_id]
        src_tokens = [codec.tokenizer.id_to_token(i) for i in ids]
    src = torch.tensor([ids], device=run.device)
    result: dict = {"source_tokens": src_tokens, "maps": []}
    with recording_attention(model), runtime.autocast(run.device, run.config.run.dtype):
        if run.config.task == "classification":
            probabilities = model(src).float().softmax(-1)[0]
            best = int(probabilities.argmax())
            result["prediction"] = {
                "label": run.labels[best],
                "probability": round(float(probabilities[best]), 4),
            }
        else:
            (translation,) = translate_texts(run, [text], beam_size=1)
            tgt_codec = run.codecs.tgt
            tgt_ids = [tgt_codec.bos_id, *tgt_codec.encode([translation])[0]]
            result["translation"] = translation
            result["target_tokens"] = [tgt_codec.tokenizer.id_to_token(i) for i in tgt_ids]
            model(src, torch.tensor([tgt_ids], device=run.device))
        for i, layer in enumerate(model.encoder.layers):
            result["maps"].append(_map("encoder_self", i, layer.self_attention, "source", "source"))
        if run.config.task == "translation":
            for i, layer in enumerate(model.decoder.layers):
                result["maps"].append(
                    _map("decoder_self", i, layer.self_attention, "target", "target")
                )
                result["maps"].append(_map("cross", i, layer.cross_attention, "target", "source"))
    return result


def _map(kind: str, layer: int, attention, queries: str, keys: str) -> dict:
    return {
        "kind": kind,
        "layer": layer,
        "queries": queries,
        "keys": keys,
        "weights": attention.weights[0].float().cpu(),  # (H, Tq, Tk)
    }
