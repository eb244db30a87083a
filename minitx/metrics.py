"""Scores (sacreBLEU BLEU and chrF, exact match; accuracy, F1, confusion matrix) and the metrics.jsonl log."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import sacrebleu

from minitx.errors import UserError
from minitx.run_dir import RunDir


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
    """Appends one JSON object per event to metrics.jsonl, flushed at once so a crash loses nothing;
    with `tensorboard_dir`, numbers logged with a step also go to TensorBoard event files."""

    def __init__(self, path: Path | None, tensorboard_dir: Path | None = None):
        """`path` None writes nothing: the log of a rank other than 0."""
        self.path = path
        self.tensorboard = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError(
                    "run.tensorboard needs the tensorboard package: pip install 'minitx[tensorboard]'"
                ) from None
            self.tensorboard = SummaryWriter(str(tensorboard_dir))

    def write(self, event: str, **values) -> None:
        if self.path is None:
            return
        record = {"event": event, "time": round(time.time(), 3), **values}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None and "step" in values:
            for key, value in values.items():
                if (
                    key != "step"
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                ):
                    self.tensorboard.add_scalar(f"{event}/{key}", value, values["step"])
            self.tensorboard.flush()


def read_metrics(run: RunDir) -> list[dict]:
    """The events of a run's metrics.jsonl (a last line cut short by a kill is skipped)."""
    path = run.metrics_file
    if not path.is_file():
        raise UserError(f"{run} has no {path.name}; is it a minitx run directory?")
    lines = path.read_text(encoding="utf-8").splitlines()
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise UserError(f"{path} line {number} is not JSON; the file is damaged") from None
    if not any(e.get("event") == "train" for e in events):
        raise UserError(f"{path} has no training steps logged yet; train longer than log_every")
    return events


def classification_scores(predictions: list[int], references: list[int], names: list[str]) -> dict:
    """Accuracy and macro-F1 (in %), per-class precision/recall/F1/support, confusion matrix.

    The confusion matrix has one row per true class and one column per predicted class. Macro-F1
    averages the classes that occur in the references or the predictions, as scikit-learn does.
    """
    n = len(names)
    matrix = [[0] * n for _ in range(n)]
    for gold, guess in zip(references, predictions, strict=True):
        matrix[gold][guess] += 1
    per_class, f1_scores = {}, []
    for k, name in enumerate(names):
        true_positive = matrix[k][k]
        predicted = sum(matrix[row][k] for row in range(n))
        support = sum(matrix[k])
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if support or predicted:
            f1_scores.append(f1)
        per_class[name] = {
            "precision": round(100 * precision, 2),
            "recall": round(100 * recall, 2),
            "f1": round(100 * f1, 2),
            "support": support,
        }
    correct = sum(matrix[k][k] for k in range(n))
    return {
        "accuracy": round(100 * correct / max(len(references), 1), 2),
        "macro_f1": round(100 * sum(f1_scores) / max(len(f1_scores), 1), 2),
        "per_class": per_class,
        "confusion_matrix": {"labels": names, "matrix": matrix},
    }
