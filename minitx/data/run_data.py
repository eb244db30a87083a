"""The data of a run: its splits loaded and encoded, with the tokenizer and label names that are
made once from the training split and kept in the run directory. What the columns are and how they
become ids is the run's task's (minitx/tasks), passed in as `task`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from minitx.config import Config
from minitx.data.batching import EncodedPairs, EncodedTexts, TokenPairs
from minitx.data.corpus import Corpus
from minitx.data.labels import load_label_names, save_label_names
from minitx.data.token_store import is_stored, store_directory
from minitx.data.tokenizer import Codecs, build_codecs, check_tags, load_codecs
from minitx.run_dir import RunDir

log = logging.getLogger(__name__)


@dataclass
class RunData:
    codecs: Codecs
    splits: dict[str, TokenPairs | EncodedPairs] | dict[str, EncodedTexts]  # train: stored
    labels: list[str] | None  # label names in class-index order, for tasks that have them


def load_run_data(
    cfg: Config, run: RunDir, splits: tuple[str, ...], task, build_store: bool = True
) -> RunData:
    """Encoded splits; the tokenizer (and label names) are loaded from the run, or made from `train`
    and saved there once every split has encoded, so a failed first start leaves nothing stale.
    The training split is encoded into the run's token store once and memory-mapped after;
    `build_store=False` (the other ranks of a torchrun group) only maps the one rank 0 built."""
    # Every split is opened (the evaluation splits, small, loaded) before the long work starts,
    # so that a missing one fails fast.
    corpus = task.train_corpus(cfg) if "train" in splits else None
    raw = {split: task.load_split(cfg, split) for split in splits if split != "train"}
    made = []  # what this call creates and must save
    # Before the tokenizer: a bad label column fails fast.
    labels = load_label_names(run.labels_file) if run.labels_file.is_file() else None
    if labels is None:
        labels = task.label_names(corpus, cfg)
        if labels is not None:
            made.append(lambda: save_label_names(labels, run.labels_file))
    tags = sorted({c.tag for c in cfg.data.train_corpora if c.tag})
    if run.has_tokenizer():
        codecs = load_codecs(run)
    else:
        codecs = _make_codecs(cfg, task, corpus or task.train_corpus(cfg), tags)
        made.append(lambda: codecs.save(run))
    check_tags(codecs, tags)
    encoded = {}
    for split in splits:
        if split == "train":
            encoded[split] = _stored_train_split(
                cfg, run, task, corpus, codecs, labels, build_store
            )
        else:
            encoded[split] = task.encode_split(raw[split], codecs, labels, split)
    for save in made:
        save()
    return RunData(codecs, encoded, labels)


def _make_codecs(cfg: Config, task, corpus: Corpus, tags: list[str]) -> Codecs:
    tokenizer = cfg.tokenizer
    if tokenizer.path:
        return build_codecs([], [], tokenizer, joint=True)
    src_texts, tgt_texts = task.training_texts(cfg, corpus)
    log.info(
        f"training a {tokenizer.type} tokenizer ({tokenizer.vocab_size} tokens) on "
        f"{len(src_texts) + len(tgt_texts):,} texts"
    )
    return build_codecs(src_texts, tgt_texts, tokenizer, task.joint_vocabulary(cfg), tags)


def _stored_train_split(cfg: Config, run: RunDir, task, corpus, codecs, labels, build: bool):
    """The training split from the run's token store, encoded into it first if it is not there."""
    directory = store_directory(run.cache_dir, codecs, cfg.data, corpus, labels)
    if not is_stored(directory):
        if not build:  # a bug, not a user error: rank 0 built this very store a moment ago
            raise RuntimeError(f"no token store at {directory}, which rank 0 should have built")
        task.store_train(directory, corpus, codecs, labels, cfg.data.max_len)
    return task.read_train(directory)
