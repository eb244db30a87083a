"""Score a model on encoded examples: the loss, and BLEU/chrF/exact match or accuracy/F1.

Training validates through here and `minitx eval` scores a split through here, so both report the
same quantities; this module sits below both.
"""

from __future__ import annotations

import torch

from minitx.config import DecodeConfig
from minitx.data.batching import EncodedPairs, EncodedTexts
from minitx.data.tokenizer import Codecs, TextCodec
from minitx.inference.decode import translate
from minitx.inference.searches import SentenceInputs
from minitx.metrics import classification_scores, perplexity, translation_scores
from minitx.model.objective import logits_and_targets, summed_loss
from minitx.model.transformer import Classifier, Seq2Seq
from minitx.runtime import Compute


@torch.no_grad()
def score_pairs(
    model: Seq2Seq,
    pairs: EncodedPairs,
    codecs: Codecs,
    decode: DecodeConfig,
    batch_tokens: int,
    compute: Compute,
    inputs: SentenceInputs | None = None,
) -> tuple[dict, list[str]]:
    """Teacher-forced loss and perplexity, then decode (as `decode` says, each pair steered by
    its `inputs`) and score BLEU, chrF and exact match; returns the scores and the hypotheses."""
    model.eval()
    nll, tokens = 0.0, 0
    for batch in pairs.batches(batch_tokens, None, codecs.tgt):
        batch = batch.to(compute.device)
        with compute.autocast():
            logits, targets = logits_and_targets(model, batch)
        nll += float(summed_loss(logits, targets))
        tokens += batch.n_targets
    hypotheses = [
        found[0].text
        for found in translate(model, pairs.src_ids, codecs, decode, compute, inputs=inputs)
    ]
    loss = nll / max(tokens, 1)
    scores = {"loss": round(loss, 4), "ppl": round(perplexity(loss), 3)}
    return {**scores, **translation_scores(hypotheses, pairs.tgt_text)}, hypotheses


@torch.no_grad()
def score_labels(
    model: Classifier,
    texts: EncodedTexts,
    codec: TextCodec,
    labels: list[str],
    batch_tokens: int,
    compute: Compute,
) -> dict:
    """Loss, accuracy, macro-F1, per-class scores and confusion matrix; with `predictions` (class
    indices) and their `probabilities`, in the order of `texts`."""
    model.eval()
    nll = 0.0
    predictions, probabilities = [0] * len(texts), [0.0] * len(texts)
    for group in texts.batch_groups(batch_tokens, None):
        batch = texts.batch(group.tolist(), codec).to(compute.device)
        with compute.autocast():
            logits, targets = logits_and_targets(model, batch)
        nll += float(summed_loss(logits, targets))
        best = logits.float().softmax(-1).max(-1)
        for row, index in enumerate(group.tolist()):
            predictions[index] = int(best.indices[row])
            probabilities[index] = float(best.values[row])
    scores = classification_scores(predictions, texts.labels.tolist(), labels)
    return {
        "loss": round(nll / max(len(texts), 1), 4),
        **scores,
        "predictions": predictions,
        "probabilities": probabilities,
    }
