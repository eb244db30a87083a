"""Use a trained run: load it from its directory, score a split, translate text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from minitx import runtime
from minitx.config import Config, DecodeConfig, apply_overrides, config_from_dict, config_to_dict
from minitx.data.batching import EncodedPairs, encode_pairs
from minitx.data.tokenizer import Codecs, load_codecs
from minitx.decode import translate
from minitx.errors import UserError
from minitx.metrics import perplexity, translation_scores
from minitx.model.transformer import Seq2Seq, build_model
from minitx.run_dir import load_run_config, load_split_pairs
from minitx.train.checkpoint import find_checkpoint, load_meta, load_weights

CHECKPOINTS = ("best", "last")


@dataclass
class TrainedRun:
    run_dir: Path
    config: Config
    codecs: Codecs
    model: Seq2Seq
    device: torch.device
    checkpoint_step: int


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
    codecs = load_codecs(run_dir)
    directory = find_checkpoint(run_dir / "checkpoints" / checkpoint)
    if directory is None:
        raise UserError(f"{run_dir} has no '{checkpoint}' checkpoint yet; train it first")
    meta = load_meta(directory)
    model = build_model(
        cfg.model, codecs.src.vocab_size, codecs.tgt.vocab_size, codecs.tgt.pad_id, codecs.joint
    )
    load_weights(directory, model, device)
    model.to(device).eval()
    return TrainedRun(run_dir, cfg, codecs, model, device, int(meta.get("step", 0)))


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
    for batch in pairs.batches(batch_tokens, None, codec.pad_id, codec.bos_id, codec.eos_id):
        batch = batch.to(device)
        with runtime.autocast(device, dtype):
            logits = model(batch.src, batch.tgt_in)
        nll += float(
            F.cross_entropy(
                logits.flatten(0, 1).float(),
                batch.tgt_out.flatten(),
                ignore_index=codec.pad_id,
                reduction="sum",
            )
        )
        tokens += batch.n_tgt_tokens
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


def evaluate_split(run: TrainedRun, split: str, beam_size: int | None = None) -> dict:
    """Score `split`; write RUN_DIR/eval/<split>.json and the hypotheses to <split>.hyp."""
    cfg = run.config
    beam = beam_size or cfg.decode.beam_size
    pairs = encode_pairs(load_split_pairs(cfg, split), run.codecs.src, run.codecs.tgt)
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
    report = {
        "split": split,
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
    out_dir = run.run_dir / "eval"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{split}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / f"{split}.hyp").write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    return report


def translate_texts(
    run: TrainedRun, texts: list[str], beam_size: int | None = None, batch_size: int | None = None
) -> list[str]:
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
