"""The Python API: `minitx.load(run_dir)` gives a trained model to translate, classify and look into;
`minitx.train(config)` trains one. The command line is built on these two.

    import minitx

    model = minitx.load("runs/quickstart")
    best = model.translate(["three hundred forty two"])[0].text
    five = model.translate(["seventy two"], beam_size=5, n_best=5)[0].hypotheses
    drawn = model.translate(["seventy two"], sample=True, n_best=3, top_p=0.9, seed=1)
    scores = minitx.train("configs/quickstart.yaml", ["train.max_steps=500"], "runs/short")
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minitx.config import (
    Config,
    DecodeConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from minitx.decode import Hypothesis
from minitx.errors import UserError
from minitx.evaluate import (
    TrainedRun,
    attention_maps,
    classify_texts,
    evaluate_split,
    load_run,
    translate_texts,
)
from minitx.run_dir import RunDir


@dataclass
class Translation:
    """One source sentence and its hypotheses, best first (several with `n_best`)."""

    source: str
    hypotheses: list[Hypothesis]

    @property
    def text(self) -> str:
        """The best translation."""
        return self.hypotheses[0].text if self.hypotheses else ""


@dataclass
class Prediction:
    """A classification: the most probable label, its probability, and every label's."""

    text: str
    label: str
    probability: float
    probabilities: dict[str, float]


class Model:
    """A trained run, loaded once: its config, tokenizer and the weights of one checkpoint."""

    def __init__(self, trained: TrainedRun):
        self.trained = trained

    @property
    def config(self) -> Config:
        return self.trained.config

    @property
    def task(self) -> str:
        return self.trained.config.task

    def decode_config(self, **options: Any) -> DecodeConfig:
        """The run's decode settings with `options` (decode config keys: beam_size, n_best,
        length_penalty, sample, temperature, top_k, top_p, seed, alignments, …) applied and
        validated like the config file; options given as None keep the run's value."""
        given = {key: value for key, value in options.items() if value is not None}
        if not given:
            return self.config.decode
        raw = config_to_dict(self.config)
        raw["decode"].update(given)
        return config_from_dict(raw, source="decode options").decode

    def translate(self, texts: Sequence[str], **options: Any) -> list[Translation]:
        """Translate each text; `options` override decode settings for this call."""
        if isinstance(texts, str):
            raise UserError("translate takes a list of texts; wrap a single text in a list")
        found = translate_texts(self.trained, list(texts), self.decode_config(**options))
        return [Translation(text, hyps) for text, hyps in zip(texts, found, strict=True)]

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify each text (sentence pairs as `text<TAB>pair`)."""
        if isinstance(texts, str):
            raise UserError("predict takes a list of texts; wrap a single text in a list")
        predictions = []
        for text, probabilities in zip(
            texts, classify_texts(self.trained, list(texts)), strict=True
        ):
            label = max(probabilities, key=probabilities.get)
            predictions.append(Prediction(text, label, probabilities[label], probabilities))
        return predictions

    def evaluate(self, split: str = "test", **options: Any) -> dict:
        """Score a split of the run's data (a role or the data's own split name), as `minitx
        eval` does, writing RUN_DIR/eval/<split>.*; `options` override decode settings."""
        # Only the best hypothesis is scored: n-best and alignments do not apply.
        options = {**options, "n_best": 1, "alignments": False}
        return evaluate_split(self.trained, split, self.decode_config(**options))

    def attention(self, text: str) -> dict:
        """Every attention map of one input (see `minitx attention`): tokens, and per kind and
        layer the weights (H, Tq, Tk)."""
        return attention_maps(self.trained, text)


def load(
    run_dir: str | Path,
    checkpoint: str = "best",
    device: str | None = None,
    overrides: Sequence[str] = (),
) -> Model:
    """Load a run written by `minitx train`. `checkpoint`: best, last, averaged or step_N;
    `device`: cpu, cuda, mps (default: the run's run.device); `overrides`: `decode.*`/`run.*`
    settings as `--set` takes them, e.g. ["decode.beam_size=1"]."""
    overrides = [*overrides, *([f"run.device={device}"] if device else [])]
    return Model(load_run(RunDir(run_dir), checkpoint, tuple(overrides)))


def train(
    config: str | Path | Config,
    overrides: Sequence[str] = (),
    run_dir: str | Path | None = None,
    fresh: bool = False,
) -> dict:
    """Train (or resume) a run from a YAML file or a Config; return the final validation scores.

    `run_dir` defaults to runs/<config file name> (runs/run for a Config). Inside a torchrun group
    every process calls this, and only rank 0 returns the scores (the others get {})."""
    if isinstance(config, Config):
        # Through the same validation as a file: cross-field checks, resolved defaults.
        raw = apply_overrides(config_to_dict(config), tuple(overrides))
        cfg = config_from_dict(raw, source="config")
        default_dir = Path("runs") / "run"
    else:
        cfg, default_dir = load_config(config, overrides), Path("runs") / Path(config).stem
    return train_group(cfg, RunDir(run_dir or default_dir), fresh) or {}


def train_group(cfg: Config, run: RunDir, fresh: bool, quiet: bool = False) -> dict | None:
    """Train in this process, alone or as one rank of a torchrun group; rank 0 holds the run's
    lock and prepares it. Returns the scores on rank 0, None on the others."""
    from minitx import distributed
    from minitx.progress import show_status
    from minitx.training.loop import train as train_run

    ranks = distributed.join(cfg.run.device)
    try:
        if not ranks.is_main:
            show_status(quiet, silent=True)  # rank 0 speaks for the group
        with contextlib.ExitStack() as held:
            ranks.main_only(lambda: (held.enter_context(run.lock()), run.prepare(cfg, fresh)))
            scores = train_run(cfg, run, ranks)
    finally:
        distributed.leave(ranks)
    return scores if ranks.is_main else None


__all__ = ["Hypothesis", "Model", "Prediction", "Translation", "load", "train"]
