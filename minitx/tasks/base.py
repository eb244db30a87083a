"""The Task interface: everything that differs between what runs learn, in one place per task.

A task says which data columns it reads and how they become token ids, which model it trains and
on what loss, which validation metrics it reports and which picks the best checkpoint, how `eval`
scores a split and what it prints, and what the attention page and the report show. Code outside
minitx/tasks asks the run's task (`get_task(cfg.task)`) instead of comparing task names.

The methods that use a loaded model take the `minitx.Model` (minitx/api.py) that `minitx.load`
returns: its config, codecs, labels, engine and compute.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from torch import nn

from minitx.config import Config, DecodeConfig
from minitx.data.corpus import Corpus, WeightedPart, combined_corpus, dataset_corpus
from minitx.data.tokenizer import Codecs
from minitx.run_dir import RunDir
from minitx.runtime import Compute

if TYPE_CHECKING:
    import datasets

    from minitx.api import Model


class Task(ABC):
    name: ClassVar[str]
    # Validation metrics, in the order logs show them; the first picks the best checkpoint
    # unless train.early_stopping_metric says otherwise.
    metrics: ClassVar[tuple[str, ...]]
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    # What one loss term is, for the throughput in the logs (tgt_tokens_per_s, examples_per_s).
    throughput_key: ClassVar[str]
    # The column a corpus tag (data.train_corpora[].tag) is put in front of.
    tagged_column: ClassVar[str]
    # The model this task trains (what export formats are chosen by).
    model_type: ClassVar[type[nn.Module]]
    # Whether the model writes text (`translate`) or gives class probabilities (`predict`).
    generates_text: ClassVar[bool]
    # The eval report's count key and the scores `minitx eval` prints.
    counted: ClassVar[str]
    shown_scores: ClassVar[tuple[str, ...]]

    # --- config and data --------------------------------------------------------------------

    def config_errors(self, cfg: Config) -> list[str]:
        """Problems of `cfg` that only this task knows of."""
        return []

    @abstractmethod
    def load_split(self, cfg: Config, split: str) -> datasets.Dataset:
        """One split (a role or the data's split name) with this task's columns."""

    def train_corpus(self, cfg: Config) -> Corpus:
        """What the run trains on, as a stream of chunks: data.path's training split, or the
        weighted and tagged data.train_corpora."""
        data = cfg.data
        if not data.train_corpora:
            return self.split_corpus(cfg)
        parts = []
        for corpus in data.train_corpora:
            splits = {**data.splits, "train": corpus.split or data.splits["train"]}
            part_cfg = replace(cfg, data=replace(data, path=corpus.path, splits=splits))
            parts.append(WeightedPart(self.split_corpus(part_cfg), corpus.weight, corpus.tag))
        return combined_corpus(parts, self.training_columns(cfg), self.tagged_column)

    def split_corpus(self, cfg: Config) -> Corpus:
        """data.path's training split as a stream of chunks."""
        return dataset_corpus(self.load_split(cfg, "train"))

    @abstractmethod
    def training_columns(self, cfg: Config) -> list[str]:
        """The columns a training example has (what several corpora are cut down to)."""

    @abstractmethod
    def training_texts(self, cfg: Config, corpus: Corpus) -> tuple[list[str], list[str]]:
        """What the tokenizer learns from: (source side, target side)."""

    def joint_vocabulary(self, cfg: Config) -> bool:
        return cfg.tokenizer.joint

    def label_names(self, corpus: Corpus | None, cfg: Config) -> list[str] | None:
        """The class names, made once from the training split (None: the task has none)."""
        return None

    @abstractmethod
    def encode_split(self, raw: datasets.Dataset, codecs: Codecs, labels, split: str):
        """An evaluation split, encoded in memory."""

    @abstractmethod
    def store_train(self, directory: Path, corpus: Corpus, codecs: Codecs, labels, max_len: int):
        """Encode the training split into a token store at `directory`."""

    @abstractmethod
    def read_train(self, directory: Path):
        """The training split from its token store."""

    # --- model, training, validation ----------------------------------------------------------

    @abstractmethod
    def build_model(self, cfg: Config, codecs: Codecs, labels: list[str] | None) -> nn.Module:
        """The model this task trains, sized by the vocabulary (and label set)."""

    def incompatibilities(self, before: Config, cfg: Config) -> list[str]:
        """What keeps weights trained with `before` from starting a run of `cfg` (this task), beyond
        the model's shape (fine-tuning)."""
        return [f"task: {before.task!r} → {cfg.task!r}"] if before.task != self.name else []

    @abstractmethod
    def validation_scores(self, model: nn.Module, split, data, cfg: Config, compute: Compute):
        """Scores of the validation `split` (encoded) for the training log; `data` is RunData."""

    # --- using a trained model ----------------------------------------------------------------

    @abstractmethod
    def evaluate(
        self, model: Model, split: str, decode: DecodeConfig, steering: Sequence = ()
    ) -> dict:
        """Score `split`, write its outputs into RUN_DIR/eval, return the report; `steering`,
        one per example, for tasks that write text."""

    @abstractmethod
    def attention_maps(self, model: Model, text: str) -> dict:
        """Every attention map of one input: tokens, and per kind and layer the weights."""

    def attention_layers(self, cfg: Config) -> int:
        """How many layers the attention maps have."""
        return cfg.model.n_encoder_layers

    def page_extras(self, cfg: Config) -> dict:
        """What the attention page shows beside the maps of each example."""
        return {}

    def model_summary(self, cfg: Config) -> dict:
        """The model's shape as GET /info reports it."""
        return {
            "d_model": cfg.model.d_model,
            "n_heads": cfg.model.n_heads,
            "n_encoder_layers": cfg.model.n_encoder_layers,
        }

    def report_samples(self, run: RunDir, reports: dict[str, dict]) -> dict[str, tuple[list, ...]]:
        """Per evaluated split, (sources, outputs, references) for the run report to rank and
        show; a task whose outputs are labels shows its confusion matrix instead."""
        return {}
