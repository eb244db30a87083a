"""The run directory: the one place that knows its layout, its lock and the config it was trained with.

RUN_DIR/config.yaml          the resolved config (every key, defaults filled in)
RUN_DIR/tokenizer.json       the tokenizer (tokenizer.src.json + tokenizer.tgt.json when not joint)
RUN_DIR/labels.json          classification: the label names, in class-index order
RUN_DIR/checkpoints/last/    model.safetensors, trainer.pt, meta.json: resume from here
RUN_DIR/checkpoints/best/    model.safetensors, meta.json: the best validation score
RUN_DIR/checkpoints/step_N/  the last validated checkpoints, with train.keep_last > 1
RUN_DIR/checkpoints/averaged/ the mean of several step_N checkpoints (`minitx average`)
RUN_DIR/checkpoints/crash/   the weights before a step whose loss became non-finite
RUN_DIR/metrics.jsonl        one JSON object per training log, validation and end event
RUN_DIR/train.log            the status lines of every training session, timestamped
RUN_DIR/tensorboard/         TensorBoard event files (run.tensorboard)
RUN_DIR/origin/              train.init_from: hf:SOURCE, the Marian model imported as a run
RUN_DIR/cache/               the training split's token ids (data/token_store.py), memory-mapped
RUN_DIR/eval/<split>.json    scores written by `minitx eval`; translation hypotheses in <split>.hyp,
                             classification predictions in <split>.pred and <split>.confusion.png
RUN_DIR/plots/               curves drawn by `minitx plot`
RUN_DIR/attention/           maps drawn by `minitx attention`
RUN_DIR/.lock                held by the process that trains the run (its pid inside)

An export directory (`minitx export`) has the same config.yaml, tokenizer and labels.json, plus
export.json (what it is) and the engine's model (CTranslate2's model.bin, or model.onnx).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import yaml

from minitx.config import Config, config_from_dict, config_to_dict, save_config
from minitx.errors import UserError

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
    "train.init_from",
    "run.seed",
)
CHECKPOINT_CHOICES = "best, last, averaged or a kept step_N"


class EvalFiles(NamedTuple):
    """What `minitx eval` writes for one split, in RUN_DIR/eval."""

    report: Path  # <split>.json: the scores
    hypotheses: Path  # <split>.hyp: translations, one per line
    predictions: Path  # <split>.pred: label and probability, one per line
    confusion: Path  # <split>.confusion.png: the confusion matrix, drawn


class RunDir:
    """Paths inside one run directory, and the operations that keep it consistent."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._config: Config | None = None
        root = self.root
        # What training writes: the run's description, then what it learns and logs.
        self.config_file = root / "config.yaml"
        self.tokenizer_file = root / "tokenizer.json"  # joint vocabulary
        self.src_tokenizer_file, self.tgt_tokenizer_file = (
            root / f"tokenizer.{side}.json" for side in ("src", "tgt")
        )
        self.labels_file = root / "labels.json"
        self.checkpoints_dir = root / "checkpoints"
        self.metrics_file, self.train_log = root / "metrics.jsonl", root / "train.log"
        self.tensorboard_dir, self.cache_dir = root / "tensorboard", root / "cache"
        self.lock_file = root / ".lock"
        # What `minitx export` writes beside config and tokenizer: what it is, and the engine's model.
        self.export_file = root / "export.json"
        self.onnx_file = root / "model.onnx"
        # What the other commands write.
        self.eval_dir, self.attention_dir = root / "eval", root / "attention"
        self.plots_dir, self.heads_dir = root / "plots", root / "heads"
        self.curves_file = self.plots_dir / "curves.png"

    def __str__(self) -> str:
        return str(self.root)

    @property
    def name(self) -> str:
        return self.root.name

    def checkpoint(self, name: str) -> Path:
        """checkpoints/NAME: best, last, averaged, crash or step_N (as `--checkpoint` names them)."""
        if name in ("best", "last", "averaged", "crash") or (
            name.startswith("step_") and name[5:].isdigit()
        ):
            return self.checkpoints_dir / name
        raise UserError(f"--checkpoint must be {CHECKPOINT_CHOICES}, got '{name}'")

    def snapshot(self, step: int) -> Path:
        return self.checkpoints_dir / f"step_{step:08d}"

    def snapshots(self) -> list[Path]:
        """The kept step_N checkpoints, oldest first."""
        found = self.checkpoints_dir.glob("step_*")
        return sorted(path for path in found if path.name[5:].isdigit())

    def eval_files(self, split: str) -> EvalFiles:
        suffixes = (".json", ".hyp", ".pred", ".confusion.png")
        return EvalFiles(*(self.eval_dir / f"{split}{suffix}" for suffix in suffixes))

    def is_run(self) -> bool:
        """config.yaml beside what training writes: a run, not a project folder with a config."""
        written = self.metrics_file.is_file() or self.checkpoints_dir.is_dir()
        return self.config_file.is_file() and (written or self.has_tokenizer())

    def is_export(self) -> bool:
        return self.export_file.is_file()

    def export_info(self) -> dict:
        """export.json: the format, task, quantization and the run and checkpoint it came from."""
        try:
            return json.loads(self.export_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{self.export_file} is damaged; export the run again") from None

    def has_tokenizer(self) -> bool:
        return self.tokenizer_file.is_file() or self.src_tokenizer_file.is_file()

    def config(self) -> Config:
        """The config the run was trained with, read from config.yaml once."""
        if self._config is None:
            self._config = self._read_config()
        return self._config

    def _read_config(self) -> Config:
        if not self.root.is_dir():
            raise UserError(f"run directory not found: {self.root}")
        if not self.config_file.is_file():
            raise UserError(
                f"{self.root} is not a minitx run directory (no {self.config_file.name}); "
                "train one first"
            )
        try:
            raw = yaml.safe_load(self.config_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            raise UserError(f"{self.config_file} is not valid YAML; the run is damaged") from None
        return config_from_dict(raw, source=str(self.config_file))

    def save_config(self, cfg: Config) -> None:
        save_config(cfg, self.config_file)
        self._config = cfg

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the run for training: a second `minitx train` of it stops with the holder's pid."""
        self._make()
        return held_exclusively(
            self.lock_file,
            f"{self.root} is being trained by another process (pid {{holder}}); wait for it to "
            "finish or stop it, or train into another --run-dir",
        )

    def prepare(self, cfg: Config, fresh: bool) -> Config | None:
        """Make the directory ready to train `cfg`: wipe it when `fresh`, or check that resuming
        keeps the model. Returns the config of the run being resumed, if any."""
        if fresh and self.root.exists():
            # The lock file stays: this process holds it while it trains.
            entries = [entry for entry in self.root.iterdir() if entry != self.lock_file]
            if entries and not self.is_run():
                raise UserError(
                    f"--fresh deletes run directories only, and {self.root} is not one "
                    f"(no {self.config_file.name} with {self.metrics_file.name} or "
                    f"{self.checkpoints_dir.name}/)"
                )
            for entry in entries:  # a link is removed, never followed
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            self._config = None
        previous = self.config() if self.config_file.is_file() else None
        if previous is not None:
            changed = [
                difference
                for difference in config_differences(
                    previous, cfg, (*FROZEN_SECTIONS, "train", "run")
                )
                if _is_frozen(difference.split(":")[0])  # "model.d_ff: 64 → 128"
            ]
            if changed:
                raise UserError(
                    f"{self.root} was trained with a different config ({'; '.join(changed)}); "
                    "use another --run-dir, or --fresh to start over"
                )
        self._make()
        return previous

    def _make(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise UserError(
                f"cannot write to {self.root} ({exc.strerror}); choose another --run-dir"
            ) from None


@contextlib.contextmanager
def staged_directory(out: Path, what: str) -> Iterator[Path]:
    """A new directory for `out` (absent or empty), filled under a temporary name beside it and
    renamed to `out` once the block ends without error: a failure or Ctrl-C leaves nothing
    half-written behind. `what` names the option that chose `out`, for the refusal."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty directory; choose another {what}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _is_frozen(key: str) -> bool:
    return key.split(".")[0] in FROZEN_SECTIONS or key in FROZEN_KEYS


def config_differences(old: Config, new: Config, sections: tuple[str, ...]) -> list[str]:
    """'section.key: old → new' for every key of `sections` that differs."""
    before_all, after_all = config_to_dict(old), config_to_dict(new)
    changes = []
    for section in sections:
        before, after = before_all.get(section), after_all.get(section)
        if isinstance(before, dict) and isinstance(after, dict):
            for key in sorted(set(before) | set(after)):
                if before.get(key) != after.get(key):
                    changes.append(f"{section}.{key}: {before.get(key)!r} → {after.get(key)!r}")
        elif before != after:
            changes.append(f"{section}: {before!r} → {after!r}")
    return changes


@contextlib.contextmanager
def held_exclusively(lock_file: Path, busy: str) -> Iterator[None]:
    """Hold `lock_file` (an flock, which dies with its process, so a killed holder never leaves it
    locked), or raise `busy` with {holder} filled in with the holder's pid."""
    with lock_file.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise UserError(busy.format(holder=handle.read().strip() or "unknown")) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
