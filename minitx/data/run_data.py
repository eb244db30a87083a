"""The data of a run: its splits loaded and encoded, with the tokenizer and label names that are
made once from the training split and kept in the run directory."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from minitx.config import Config
from minitx.data.batching import EncodedPairs, EncodedTexts, encode_labelled, encode_pairs
from minitx.data.labels import label_names, load_label_names, save_label_names
from minitx.data.sources import column, load_labelled_texts, load_pairs, split_name
from minitx.data.tokenizer import Codecs, build_codecs, load_codecs
from minitx.run_dir import RunDir

log = logging.getLogger(__name__)


@dataclass
class RunData:
    codecs: Codecs
    splits: dict[str, EncodedPairs] | dict[str, EncodedTexts]
    labels: list[str] | None  # classification: label names in class-index order


def load_split(cfg: Config, split: str):
    """One split of the configured data as a Dataset (`split` is a role or a data split name):
    `src`/`tgt` columns for translation, `text` (`text_pair`) and `label` for classification."""
    data = cfg.data
    name = split_name(data.splits, split)
    rename = {**data.rename_columns.get(split, {}), **data.rename_columns.get(name, {})}
    if cfg.task == "classification":
        return load_labelled_texts(data, name, rename)
    return load_pairs(data, name, rename)


def training_texts(cfg: Config, dataset) -> tuple[list[str], list[str]]:
    """The texts a tokenizer learns from: (source side, target side)."""
    if cfg.task == "classification":
        texts = column(dataset, "text")
        if "text_pair" in dataset.column_names:
            texts += column(dataset, "text_pair")
        return texts, []
    return column(dataset, "src"), column(dataset, "tgt")


def load_run_data(cfg: Config, run: RunDir, splits: tuple[str, ...]) -> RunData:
    """Encoded splits; the tokenizer (and label names) are loaded from the run, or made from `train`
    and saved there once every split has encoded, so a failed first start leaves nothing stale."""
    raw = {split: load_split(cfg, split) for split in splits}
    train = raw.get("train")
    made = []  # what this call creates and must save
    labels = None
    if cfg.task == "classification":  # before the tokenizer: a bad label column fails fast
        if run.labels_file.is_file():
            labels = load_label_names(run.labels_file)
        else:
            train = train if train is not None else load_split(cfg, "train")
            labels = label_names(train)
            made.append(lambda: save_label_names(labels, run.labels_file))
    if run.has_tokenizer():
        codecs = load_codecs(run)
    else:
        train = train if train is not None else load_split(cfg, "train")
        tokenizer = cfg.tokenizer
        if not tokenizer.path:
            log.info(
                f"training a {tokenizer.type} tokenizer ({tokenizer.vocab_size} tokens) on "
                f"{len(train)} examples"
            )
        src_texts, tgt_texts = training_texts(cfg, train)
        joint = tokenizer.joint or cfg.task == "classification"  # one text side: one vocabulary
        codecs = build_codecs(src_texts, tgt_texts, tokenizer, joint)
        made.append(lambda: codecs.save(run))
    codecs.cache_in(run.cache_dir)
    encoded = {}
    for split, dataset in raw.items():
        max_len = cfg.data.max_len if split == "train" else None
        if cfg.task == "classification":
            encoded[split], _ = encode_labelled(dataset, codecs.src, labels, split, max_len)
        else:
            encoded[split] = encode_pairs(dataset, codecs.src, codecs.tgt, max_len)
    for save in made:
        save()
    return RunData(codecs, encoded, labels)
