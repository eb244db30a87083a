"""Shared fixtures: tiny configs and small data sets written into temporary directories."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from minitx.config import Config, ModelConfig
from minitx.run_dir import RunDir

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

PAIRS = [
    ("ein hund rennt", "a dog runs"),
    ("eine katze schläft", "a cat sleeps"),
    ("zwei männer gehen", "two men walk"),
    ("ein kind spielt im park", "a child plays in the park"),
    ("die frau liest ein buch", "the woman reads a book"),
    ("ein mann fährt fahrrad", "a man rides a bike"),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    return ModelConfig(
        d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=64, dropout=0.0
    )


def write_parallel(directory: Path, split: str, pairs, src="de", tgt="en", gz=False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for lang, side in ((src, 0), (tgt, 1)):
        text = "".join(pair[side] + "\n" for pair in pairs)
        if gz:
            with gzip.open(directory / f"{split}.{lang}.gz", "wt", encoding="utf-8") as handle:
                handle.write(text)
        else:
            (directory / f"{split}.{lang}").write_text(text, encoding="utf-8")


def write_splits(data: Path) -> Path:
    """Raw Multi30k-like layout: train/val/test .de/.en, gzipped."""
    write_parallel(data, "train", PAIRS * 5, gz=True)
    write_parallel(data, "val", PAIRS[:3], gz=True)
    write_parallel(data, "test", PAIRS[3:], gz=True)
    return data


@pytest.fixture
def parallel_dir(tmp_path: Path) -> Path:
    return write_splits(tmp_path / "data")


def tiny_config_yaml(data_path: str, extra: str = "") -> str:
    return f"""
task: translation
data:
  path: {data_path}
  src: de
  tgt: en
  splits: {{train: train, validation: val, test: test}}
tokenizer: {{vocab_size: 60, min_frequency: 1}}
model: {{d_model: 32, n_heads: 4, n_encoder_layers: 1, n_decoder_layers: 1, d_ff: 64, dropout: 0.0}}
train: {{batch_tokens: 256, lr: 3.0e-3, warmup_steps: 5, max_steps: 12, eval_every: 6, log_every: 3}}
decode: {{beam_size: 2}}
run: {{device: cpu, seed: 3, dtype: fp32}}
{extra}
"""


def write_tiny_config(root: Path) -> Path:
    """The tiny data under root/data and root/tiny.yaml reading it; returns the config path."""
    config = root / "tiny.yaml"
    config.write_text(tiny_config_yaml(str(write_splits(root / "data"))))
    return config


def train_run(cfg: Config, run_dir: Path, fresh: bool = False) -> dict:
    """What `minitx train` does in-process: prepare the run directory, then train."""
    from minitx.training.loop import train

    run = RunDir(run_dir)
    with run.lock():
        run.prepare(cfg, fresh)
        return train(cfg, run)


def train_tiny_classifier(root: Path, rows, n_encoder_layers: int, max_steps: int) -> Path:
    """A classification run trained briefly on `rows` ((label, text) pairs) written as the
    train/validation/test TSV splits under root; returns root/run."""
    from minitx.config import config_from_dict

    for split in ("train", "validation", "test"):
        (root / f"{split}.tsv").write_text(
            "label\ttext\n" + "".join(f"{label}\t{text}\n" for label, text in rows)
        )
    model = {"d_model": 32, "n_heads": 4, "n_encoder_layers": n_encoder_layers, "d_ff": 64}
    cfg = config_from_dict(
        {
            "task": "classification",
            "data": {"path": str(root)},
            "tokenizer": {"vocab_size": 40, "min_frequency": 1},
            "model": model,
            "train": {"batch_tokens": 256, "max_steps": max_steps, "eval_every": max_steps},
            "run": {"dtype": "fp32", "device": "cpu"},
        }
    )
    train_run(cfg, root / "run")
    return root / "run"
