"""The run directory: its layout, the config it was trained with, and the data and tokenizer of a run.

RUN_DIR/config.yaml          the resolved config (every key, defaults filled in)
RUN_DIR/tokenizer.json       the tokenizer (tokenizer.src.json + tokenizer.tgt.json when not joint)
RUN_DIR/labels.json          classification: the label names, in class-index order
RUN_DIR/checkpoints/last/    model.safetensors, trainer.pt, meta.json: resume from here
RUN_DIR/checkpoints/best/    model.safetensors, meta.json: the best validation score
RUN_DIR/metrics.jsonl        one JSON object per training log, validation and end event
RUN_DIR/cache/               token ids of the training and validation splits, for a faster restart
RUN_DIR/eval/<split>.json    scores written by `minitx eval`; translation hypotheses in <split>.hyp,
                             classification predictions in <split>.pred and <split>.confusion.png
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from minitx.config import Config, config_from_dict, config_to_dict
from minitx.data.batching import EncodedPairs, EncodedTexts, encode_labelled, encode_pairs
from minitx.data.labels import LABELS_FILE, label_names, load_label_names, save_label_names
from minitx.data.sources import column, load_labelled_texts, load_pairs, split_name
from minitx.data.tokenizer import JOINT_FILE, SRC_FILE, Codecs, build_codecs, load_codecs
from minitx.errors import UserError
from minitx.model.transformer import Classifier, Seq2Seq, build_classifier, build_model
from minitx.progress import info

CONFIG_FILE = "config.yaml"
CACHE_DIR = "cache"
# What a resumed run must not change: the sections that shape the vocabulary and the weights, and
# the keys whose restored optimizer, scheduler or batch-order state would silently override them.
FROZEN_SECTIONS = ("task", "data", "tokenizer", "model")
FROZEN_KEYS = (
    "train.batch_tokens",
    "train.accumulate",
    "train.lr",
    "train.betas",
    "train.weight_decay",
    "train.schedule",
    "train.warmup_steps",
    "train.min_lr",
    "run.seed",
)


@dataclass
class RunData:
    codecs: Codecs
    splits: dict[str, EncodedPairs] | dict[str, EncodedTexts]
    labels: list[str] | None  # classification: label names in class-index order


def has_tokenizer(run_dir: Path) -> bool:
    return (run_dir / JOINT_FILE).is_file() or (run_dir / SRC_FILE).is_file()


def load_run_config(run_dir: Path) -> Config:
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(
            f"{run_dir} is not a minitx run directory (no {CONFIG_FILE}); train one first"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise UserError(f"{path} is not valid YAML; the run directory is damaged") from None
    return config_from_dict(raw, source=str(path))


def prepare_run_dir(cfg: Config, run_dir: Path, fresh: bool) -> None:
    """Create the run directory, wipe it when `fresh`, or check that resuming keeps the model."""
    if fresh and run_dir.exists():
        if any(run_dir.iterdir()) and not (run_dir / CONFIG_FILE).is_file():
            raise UserError(
                f"--fresh deletes run directories only, and {run_dir} is not one (no {CONFIG_FILE})"
            )
        shutil.rmtree(run_dir)
    if (run_dir / CONFIG_FILE).is_file():
        previous = load_run_config(run_dir)
        differences = config_differences(
            config_to_dict(previous), config_to_dict(cfg), (*FROZEN_SECTIONS, "train", "run")
        )
        keys = [difference.split(":")[0] for difference in differences]  # "model.d_ff: 64 → 128"
        changed = [
            difference
            for key, difference in zip(keys, differences, strict=True)
            if key.split(".")[0] in FROZEN_SECTIONS or key in FROZEN_KEYS
        ]
        if changed:
            raise UserError(
                f"{run_dir} was trained with a different config ({'; '.join(changed)}); "
                "use another --run-dir, or --fresh to start over"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write to {run_dir} ({exc.strerror}); choose another --run-dir"
        ) from None


def config_differences(old: dict, new: dict, sections: tuple[str, ...]) -> list[str]:
    changes = []
    for section in sections:
        before, after = old.get(section), new.get(section)
        if isinstance(before, dict) and isinstance(after, dict):
            for key in sorted(set(before) | set(after)):
                if before.get(key) != after.get(key):
                    changes.append(f"{section}.{key}: {before.get(key)!r} → {after.get(key)!r}")
        elif before != after:
            changes.append(f"{section}: {before!r} → {after!r}")
    return changes


def load_split(cfg: Config, split: str):
    """One split of the configured data as a Dataset (`split` is a role or a data split name):
    `src`/`tgt` columns for translation, `text` (`text_pair`) and `label` for classification."""
    d = cfg.data
    name = split_name(d.splits, split)
    rename = {**d.rename_columns.get(split, {}), **d.rename_columns.get(name, {})}
    if cfg.task == "classification":
        return load_labelled_texts(d.path, d.text, d.text_pair, d.label, name, d.name, rename)
    return load_pairs(
        d.path, d.src, d.tgt, name, d.name, d.synthetic_size, d.synthetic_seed, rename
    )


def training_texts(cfg: Config, dataset) -> tuple[list[str], list[str]]:
    """The texts a tokenizer learns from: (source side, target side)."""
    if cfg.task == "classification":
        texts = column(dataset, "text")
        if "text_pair" in dataset.column_names:
            texts += column(dataset, "text_pair")
        return texts, []
    return column(dataset, "src"), column(dataset, "tgt")


def load_run_data(cfg: Config, run_dir: Path, splits: tuple[str, ...]) -> RunData:
    """Encoded splits; the tokenizer (and label names) are loaded from the run, or made from `train`
    and saved there once every split has encoded, so a failed first start leaves nothing stale."""
    raw = {split: load_split(cfg, split) for split in splits}
    train = raw.get("train")
    made = []  # what this call creates and must save
    labels = None
    if cfg.task == "classification":  # before the tokenizer: a bad label column fails fast
        if (run_dir / LABELS_FILE).is_file():
            labels = load_label_names(run_dir)
        else:
            train = train if train is not None else load_split(cfg, "train")
            labels = label_names(train)
            made.append(lambda: save_label_names(labels, run_dir))
    if has_tokenizer(run_dir):
        codecs = load_codecs(run_dir)
    else:
        train = train if train is not None else load_split(cfg, "train")
        t = cfg.tokenizer
        if not t.path:
            info(f"training a {t.type} tokenizer ({t.vocab_size} tokens) on {len(train)} examples")
        src_texts, tgt_texts = training_texts(cfg, train)
        joint = t.joint or cfg.task == "classification"  # one text side: one vocabulary
        codecs = build_codecs(
            src_texts, tgt_texts, t.type, t.vocab_size, joint, t.min_frequency, t.path
        )
        made.append(lambda: codecs.save(run_dir))
    codecs.cache_in(run_dir / CACHE_DIR)
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


def build_run_model(cfg: Config, codecs: Codecs, labels: list[str] | None) -> Seq2Seq | Classifier:
    """The model the task needs, sized by the run's vocabulary (and label set)."""
    if cfg.task == "classification":
        return build_classifier(cfg.model, codecs.src.vocab_size, codecs.src.pad_id, len(labels))
    return build_model(
        cfg.model, codecs.src.vocab_size, codecs.tgt.vocab_size, codecs.tgt.pad_id, codecs.joint
    )
