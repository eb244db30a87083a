"""Scores (sacreBLEU BLEU and chrF, exact match) and the metrics.jsonl log."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import sacrebleu


def translation_scores(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU (13a, cased) and chrF on detokenized text, with their sacreBLEU signatures."""
    bleu = sacrebleu.BLEU()
    chrf = sacrebleu.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "exact_match": round(100.0 * exact_match(hypotheses, references), 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def exact_match(hypotheses: list[str], references: list[str]) -> float:
    """Fraction of hypotheses equal to their reference after trimming whitespace."""
    if not references:
        return 0.0
    matches = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=True))
    return matches / len(references)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 100.0))


class MetricsLog:
    """Appends one JSON object per event to metrics.jsonl, flushed at once so a crash loses nothing."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, event: str, **values) -> None:
        record = {"event": event, "time": round(time.time(), 3), **values}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
