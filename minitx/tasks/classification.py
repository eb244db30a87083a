"""Text classification: an encoder and a head read `data.text` (and `data.text_pair`) and predict
`data.label`, scored by accuracy, macro-F1, per-class scores and a confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from minitx.config import Config, DecodeConfig
from minitx.data.batching import encode_labelled, encode_texts, pad
from minitx.data.corpus import Corpus, sample_rows
from minitx.data.labels import label_names
from minitx.data.sources import SYNTHETIC, load_labelled_texts, split_name
from minitx.data.token_store import read_labelled, store_labelled
from minitx.data.tokenizer import Codecs
from minitx.errors import UserError
from minitx.inference.attention_maps import encoder_maps, recorded_maps, token_strings
from minitx.inference.scoring import score_labels
from minitx.model.transformer import Classifier
from minitx.runtime import Compute
from minitx.tasks.base import Task
from minitx.tasks.shared import pytorch_model, renamed_columns

if TYPE_CHECKING:
    import datasets

    from minitx.api import Model


class Classification(Task):
    name = "classification"
    metrics = ("accuracy", "macro_f1", "loss")
    throughput_key = "examples_per_s"
    tagged_column = "text"
    model_type = Classifier
    generates_text = False
    counted = "examples"
    shown_scores = ("accuracy", "macro_f1", "loss")

    def config_errors(self, cfg: Config) -> list[str]:
        if cfg.data.path == SYNTHETIC:
            return [
                "the synthetic task is translation; for classification set data.path to a "
                "directory or a Hub dataset id"
            ]
        return []

    def load_split(self, cfg: Config, split: str) -> datasets.Dataset:
        name, rename = renamed_columns(cfg.data, split)
        return load_labelled_texts(cfg.data, name, rename)

    def training_columns(self, cfg: Config) -> list[str]:
        return ["text", "text_pair", "label"] if cfg.data.text_pair else ["text", "label"]

    def training_texts(self, cfg: Config, corpus: Corpus) -> tuple[list[str], list[str]]:
        columns = ["text", "text_pair"] if cfg.data.text_pair else ["text"]
        sample = sample_rows(corpus, columns, cfg.tokenizer.max_training_texts, cfg.run.seed)
        return [text for name in columns for text in sample[name]], []

    def joint_vocabulary(self, cfg: Config) -> bool:
        return True  # one text side: one vocabulary

    def label_names(self, corpus: Corpus | None, cfg: Config) -> list[str]:
        train = corpus.dataset if corpus and corpus.dataset else self.load_split(cfg, "train")
        return label_names(train)

    def encode_split(self, raw: datasets.Dataset, codecs: Codecs, labels, split: str):
        encoded, _ = encode_labelled(raw, codecs.src, labels, split)
        return encoded

    def store_train(self, directory: Path, corpus: Corpus, codecs: Codecs, labels, max_len: int):
        store_labelled(directory, corpus, codecs, labels, max_len, "train")

    def read_train(self, directory: Path):
        return read_labelled(directory)

    def build_model(self, cfg: Config, codecs: Codecs, labels: list[str] | None) -> Classifier:
        return Classifier(cfg.model, codecs.src.vocab_size, codecs.src.pad_id, len(labels))

    def incompatibilities(self, before: Config, cfg: Config) -> list[str]:
        differences = super().incompatibilities(before, cfg)
        if not differences and before.model.pooling != cfg.model.pooling:
            differences.append(f"model.pooling: {before.model.pooling!r} → {cfg.model.pooling!r}")
        return differences

    def validation_scores(self, model: Classifier, split, data, cfg: Config, compute: Compute):
        batch_tokens = cfg.train.batch_tokens
        report = score_labels(model, split, data.codecs.src, data.labels, batch_tokens, compute)
        return {key: report[key] for key in ("loss", "accuracy", "macro_f1")}

    def evaluate(
        self, model: Model, split: str, decode: DecodeConfig, steering: Sequence = ()
    ) -> dict:
        """Accuracy, macro-F1, per-class scores, confusion matrix, loss; predicted labels and
        probabilities go to <split>.pred."""
        cfg, codec, labels = model.config, model.codecs.src, model.labels
        texts, skipped = encode_labelled(self.load_split(cfg, split), codec, labels, split)
        network = pytorch_model(model, "eval")  # the loss needs the model's logits
        scores = score_labels(network, texts, codec, labels, cfg.train.batch_tokens, model.compute)
        predictions, probabilities = scores.pop("predictions"), scores.pop("probabilities")
        model.run.eval_files(split).predictions.write_text(
            "".join(
                f"{labels[p]}\t{q:.4f}\n" for p, q in zip(predictions, probabilities, strict=True)
            ),
            encoding="utf-8",
        )
        return {
            "split": split,
            "data_split": split_name(cfg.data.splits, split),
            "examples": len(texts),
            "skipped": skipped,
            "checkpoint_step": model.checkpoint_step,
            **scores,
        }

    @torch.no_grad()
    def attention_maps(self, model: Model, text: str) -> dict:
        """Encoder self-attention per layer, and the prediction."""
        network = pytorch_model(model, "attention")
        ids = encode_texts(model.codecs.src, [text])[0]
        result = {"source_tokens": token_strings(model.codecs.src, ids, "the text")}
        with recorded_maps(network, model.compute) as maps:
            probabilities = network(torch.tensor([ids], device=model.compute.device))
            probabilities = probabilities.float().softmax(-1)[0]
            maps += encoder_maps(network)
        best = int(probabilities.argmax())
        result["prediction"] = {
            "label": model.labels[best],
            "probability": round(float(probabilities[best]), 4),
        }
        return {**result, "maps": maps}

    def page_extras(self, cfg: Config) -> dict:
        return {"pooling": cfg.model.pooling}

    def class_probabilities(self, model: Model, texts: list[str], batch_size: int = 256) -> list:
        """Each text's probability per label name. Pairs are given as `text<TAB>pair`."""
        codec = model.codecs.src
        if model.config.data.text_pair:
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
            src = pad(ids[start : start + batch_size], codec.pad_id)
            probabilities = model.engine.class_probabilities(src).numpy()
            results += [dict(zip(model.labels, row.tolist(), strict=True)) for row in probabilities]
        return results
