"""The run directory: its layout, the config it was trained with, and the data and tokenizer of a run.

RUN_DIR/config.yaml          the resolved config (every key, defaults filled in)
RUN_DIR/tokenizer.json       the tokenizer (tokenizer.src.json + tokenizer.tgt.json when not joint)
RUN_DIR/checkpoints/last/    model.safetensors, trainer.pt, meta.json: resume from here
RUN_DIR/checkpoints/best/    model.safetensors, meta.json: the best validation score
RUN_DIR/metrics.jsonl        one JSON object per training log, validation and end event
RUN_DIR/eval/<split>.json    scores written by `minitx eval`, hypotheses in <split>.hyp
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from minitx.config import Config, config_from_dict, config_to_dict
from minitx.data.batching import EncodedPairs, encode_pairs
from minitx.data.sources import load_pairs, split_name
from minitx.data.tokenizer import JOINT_FILE, SRC_FILE, Codecs, build_codecs, load_codecs
from minitx.errors import UserError
from minitx.progress import info

CONFIG_FILE = "config.yaml"
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
    pairs: dict[str, EncodedPairs]


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


def load_split_pairs(cfg: Config, split: str):
    """One split of the configured data as a `src`/`tgt` Dataset (`split` is a role or a data name)."""
    d = cfg.data
    return load_pairs(
        d.path,
        d.src,
        d.tgt,
        split_name(d.splits, split),
        d.name,
        d.synthetic_size,
        d.synthetic_seed,
    )


def load_run_data(cfg: Config, run_dir: Path, splits: tuple[str, ...]) -> RunData:
    """Tokenized splits; the tokenizer is loaded from the run, or trained on `train` and saved there."""
    raw = {split: load_split_pairs(cfg, split) for split in splits}
    if has_tokenizer(run_dir):
        codecs = load_codecs(run_dir)
    else:
        train = raw["train"] if "train" in raw else load_split_pairs(cfg, "train")
        t = cfg.tokenizer
        if not t.path:
            info(f"training a {t.type} tokenizer ({t.vocab_size} tokens) on {len(train)} pairs")
        codecs = build_codecs(
            train["src"], train["tgt"], t.type, t.vocab_size, t.joint, t.min_frequency, t.path
        )
        codecs.save(run_dir)
    pairs = {
        split: encode_pairs(
            dataset, codecs.src, codecs.tgt, cfg.data.max_len if split == "train" else None
        )
        for split, dataset in raw.items()
    }
    return RunData(codecs, pairs)
