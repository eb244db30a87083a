"""The data of a run: its splits loaded and encoded, with the tokenizer and label names that are
made once from the training split and kept in the run directory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from minitx.config import Config
from minitx.data.batching import (
    EncodedPairs,
    EncodedTexts,
    TokenPairs,
    encode_labelled,
    encode_pairs,
)
from minitx.data.corpus import Corpus, dataset_corpus, sample_rows, text_corpus
from minitx.data.labels import label_names, load_label_names, save_label_names
from minitx.data.sources import (
    SYNTHETIC,
    load_labelled_texts,
    load_pairs,
    parallel_files,
    split_name,
)
from minitx.data.token_store import (
    is_stored,
    read_labelled,
    read_pairs,
    store_directory,
    store_labelled,
    store_pairs,
)
from minitx.data.tokenizer import Codecs, build_codecs, load_codecs
from minitx.run_dir import RunDir

log = logging.getLogger(__name__)


@dataclass
class RunData:
    codecs: Codecs
    splits: dict[str, TokenPairs | EncodedPairs] | dict[str, EncodedTexts]  # train: stored
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


def train_corpus(cfg: Config) -> Corpus:
    """The training split as a stream: parallel text files are read line by line, anything else
    through its Dataset."""
    data = cfg.data
    name = split_name(data.splits, "train")
    local = Path(data.path).expanduser()
    renamed = data.rename_columns.get("train") or data.rename_columns.get(name)
    if cfg.task == "translation" and data.path != SYNTHETIC and local.is_dir() and not renamed:
        files = parallel_files(local, name, data.src, data.tgt)
        if files:
            return text_corpus(*files, name)
    return dataset_corpus(load_split(cfg, "train"))


def training_texts(cfg: Config, corpus: Corpus) -> tuple[list[str], list[str]]:
    """The texts a tokenizer learns from: (source side, target side), at most
    `tokenizer.max_training_texts` examples' worth."""
    limit, seed = cfg.tokenizer.max_training_texts, cfg.run.seed
    if cfg.task == "classification":
        columns = ["text", "text_pair"] if cfg.data.text_pair else ["text"]
        sample = sample_rows(corpus, columns, limit, seed)
        return [text for name in columns for text in sample[name]], []
    sample = sample_rows(corpus, ["src", "tgt"], limit, seed)
    return sample["src"], sample["tgt"]


def load_run_data(
    cfg: Config, run: RunDir, splits: tuple[str, ...], build_store: bool = True
) -> RunData:
    """Encoded splits; the tokenizer (and label names) are loaded from the run, or made from `train`
    and saved there once every split has encoded, so a failed first start leaves nothing stale.
    The training split is encoded into the run's token store once and memory-mapped after;
    `build_store=False` (the other ranks of a torchrun group) only maps the one rank 0 built."""
    # Every split is opened (the evaluation splits, small, loaded) before the long work starts,
    # so that a missing one fails fast.
    corpus = train_corpus(cfg) if "train" in splits else None
    raw = {split: load_split(cfg, split) for split in splits if split != "train"}
    made = []  # what this call creates and must save
    labels = None
    if cfg.task == "classification":  # before the tokenizer: a bad label column fails fast
        if run.labels_file.is_file():
            labels = load_label_names(run.labels_file)
        else:
            train = corpus.dataset if corpus and corpus.dataset else load_split(cfg, "train")
            labels = label_names(train)
            made.append(lambda: save_label_names(labels, run.labels_file))
    if run.has_tokenizer():
        codecs = load_codecs(run)
    else:
        codecs = _make_codecs(cfg, corpus or train_corpus(cfg))
        made.append(lambda: codecs.save(run))
    encoded = {}
    for split in splits:
        if split == "train":
            encoded[split] = _stored_train_split(cfg, run, corpus, codecs, labels, build_store)
        elif cfg.task == "classification":
            encoded[split], _ = encode_labelled(raw[split], codecs.src, labels, split)
        else:
            encoded[split] = encode_pairs(raw[split], codecs.src, codecs.tgt)
    for save in made:
        save()
    return RunData(codecs, encoded, labels)


def _make_codecs(cfg: Config, corpus: Corpus) -> Codecs:
    tokenizer = cfg.tokenizer
    if tokenizer.path:
        return build_codecs([], [], tokenizer, joint=True)
    src_texts, tgt_texts = training_texts(cfg, corpus)
    log.info(
        f"training a {tokenizer.type} tokenizer ({tokenizer.vocab_size} tokens) on "
        f"{len(src_texts) + len(tgt_texts):,} texts"
    )
    joint = tokenizer.joint or cfg.task == "classification"  # one text side: one vocabulary
    return build_codecs(src_texts, tgt_texts, tokenizer, joint)


def _stored_train_split(
    cfg: Config,
    run: RunDir,
    corpus: Corpus,
    codecs: Codecs,
    labels: list[str] | None,
    build: bool,
) -> TokenPairs | EncodedTexts:
    """The training split from the run's token store, encoded into it first if it is not there."""
    directory = store_directory(run.cache_dir, codecs, cfg.data, corpus, labels)
    if not is_stored(directory):
        if not build:  # a bug, not a user error: rank 0 built this very store a moment ago
            raise RuntimeError(f"no token store at {directory}, which rank 0 should have built")
        if cfg.task == "classification":
            store_labelled(directory, corpus, codecs, labels, cfg.data.max_len, "train")
        else:
            store_pairs(directory, corpus, codecs, cfg.data.max_len, "train")
    return read_labelled(directory) if cfg.task == "classification" else read_pairs(directory)
