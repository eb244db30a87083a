"""Shared fixtures: tiny configs and small data sets written into temporary directories, and the
tiny runs that are trained once per session for the tests that only need *a* trained run."""

from __future__ import annotations

import gzip
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from minitx.config import Config, ModelConfig, config_from_dict
from minitx.run_dir import RunDir

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# One intra-op thread in the test process, as every CLI subprocess of the tests gets
# (OMP_NUM_THREADS=1). With torch's default of a thread per core, a parallel region waits for its
# slowest thread, so one busy process beside the tests on a 2-core machine stalls them: the copy
# task of test_train took 1,008 s instead of ~30 s, the tiny classifier 12-28 s instead of 1-3 s.
# The tiny models here gain little from a second thread when the machine is idle; on a machine of
# its own, MINITX_TEST_THREADS=N gives the test process N threads.
TEST_THREADS = int(os.environ.get("MINITX_TEST_THREADS", "1"))
torch.set_num_threads(TEST_THREADS)

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


def tiny_config_dict(data_path: str | Path, **sections: dict) -> dict:
    """The tiny translation config over `data_path` as a dict, each of `sections` (a section's
    name → the keys to change in it) merged into its section."""
    raw = yaml.safe_load(tiny_config_yaml(str(data_path)))
    for name, changes in sections.items():
        raw[name] = {**raw.get(name, {}), **changes}
    return raw


def tiny_config(data_path: str | Path, **sections: dict) -> Config:
    """The tiny translation config over `data_path`, validated; `sections` as `tiny_config_dict`
    takes them, e.g. `tiny_config(data, train={"max_steps": 4}, model={"dropout": 0.1})`."""
    return config_from_dict(tiny_config_dict(data_path, **sections))


def write_tiny_config(root: Path) -> Path:
    """The tiny data under root/data and root/tiny.yaml reading it; returns the config path."""
    config = root / "tiny.yaml"
    config.write_text(tiny_config_yaml(str(write_splits(root / "data"))))
    return config


def train_run(cfg: Config, run_dir: Path, fresh: bool = False) -> dict:
    """What `minitx train` does in-process: check the config against its task, prepare the run
    directory, then train."""
    from minitx.tasks import configured
    from minitx.training.loop import train

    cfg = configured(cfg)
    run = RunDir(run_dir)
    with run.lock():
        run.prepare(cfg, fresh)
        return train(cfg, run)


# --- a separable toy sentiment task, in SST-2's local layout ----------------------------------

GOOD = ["great", "lovely", "superb", "fine", "wonderful"]
BAD = ["awful", "dull", "boring", "poor", "terrible"]
FILLER = ["the", "film", "was", "a", "story", "plot", "really", "quite"]


def sentiment_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """(label, text) rows of separable toy sentiment: the class is given by which word list a
    sentence draws from."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = rng.sample(FILLER, 3) + [rng.choice(GOOD if label == "pos" else BAD)]
        rng.shuffle(words)
        rows.append((label, " ".join(words)))
    return rows


def write_tsv(path: Path, column: str, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"label\t{column}\n" + "".join(f"{label}\t{text}\n" for label, text in rows),
        encoding="utf-8",
    )


def write_sentiment_splits(data: Path) -> Path:
    """SST-2's local layout: `sentence` in train.tsv (240 rows), `content` in dev.tsv (40) and
    test.tsv (30, the rows of `sentiment_rows(30, seed=3)`)."""
    write_tsv(data / "train.tsv", "sentence", sentiment_rows(240, seed=1))
    write_tsv(data / "dev.tsv", "content", sentiment_rows(40, seed=2))
    write_tsv(data / "test.tsv", "content", sentiment_rows(30, seed=3))
    return data


def sentiment_config_yaml(data: Path, extra: str = "") -> str:
    """A tiny classifier (1 layer) over `write_sentiment_splits` data: 60 steps, validated at 30
    and 60."""
    return f"""
task: classification
data:
  path: {data}
  text: sentence
  splits: {{train: train, validation: dev, test: test}}
  rename_columns: {{dev: {{content: sentence}}, test: {{content: sentence}}}}
tokenizer: {{vocab_size: 60, min_frequency: 1}}
model: {{d_model: 32, n_heads: 4, n_encoder_layers: 1, d_ff: 64, dropout: 0.0}}
train: {{batch_tokens: 256, lr: 3.0e-3, warmup_steps: 5, max_steps: 60, eval_every: 30, log_every: 10}}
run: {{device: cpu, seed: 3, dtype: fp32}}
{extra}
"""


# --- runs trained once per session --------------------------------------------------------------


@dataclass(frozen=True)
class TrainedRun:
    """A run trained once for the whole session. Tests read it; a test that writes into a run
    directory (eval files, plots, reports, exports, a resume) works on `copy(tmp_path)`."""

    root: Path  # holds the data, the config and the run
    data: Path
    config: Path  # the YAML file it was trained from
    run: Path
    scores: dict  # what training returned: the last validation's scores

    def copy(self, where: Path, name: str = "run") -> Path:
        """The run directory copied to where/name (without its lock file)."""
        target = where / name
        shutil.copytree(self.run, target, ignore=shutil.ignore_patterns(".lock"))
        return target


# The shared translation run's changes to the tiny config: 2 + 2 layers (so that maps, the
# attention page and alignments have a layer to choose), a validation every 3 steps keeping the
# last 4 as step_N snapshots and averaging the last 3 at the end (for `minitx average`).
SHARED_TRANSLATION = {
    "model": {"n_encoder_layers": 2, "n_decoder_layers": 2},
    "train": {"eval_every": 3, "keep_last": 4, "average_last": 3},
}


@pytest.fixture(scope="session")
def tiny_translation_run(tmp_path_factory) -> TrainedRun:
    """The tiny translation config (PAIRS, 12 steps, beam 2) with SHARED_TRANSLATION's changes,
    trained once through `minitx.api.train` in this process (so its lock file holds this pid)."""
    from minitx.api import train

    root = tmp_path_factory.mktemp("shared_translation")
    data = write_splits(root / "data")
    config = root / "tiny.yaml"
    raw = tiny_config_dict(data, **SHARED_TRANSLATION)
    config.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    scores = train(config, run_dir=root / "run")
    return TrainedRun(root, data, config, root / "run", scores)


@pytest.fixture(scope="session")
def tiny_classification_run(tmp_path_factory) -> TrainedRun:
    """The toy sentiment classifier of `sentiment_config_yaml` (labels neg, pos), trained once."""
    from minitx.config import load_config

    root = tmp_path_factory.mktemp("shared_classification")
    data = write_sentiment_splits(root / "sst")
    config = root / "sst.yaml"
    config.write_text(sentiment_config_yaml(data))
    scores = train_run(load_config(config), root / "run")
    return TrainedRun(root, data, config, root / "run", scores)


def train_numbers(run_dir, max_steps=200, seed=1, **model):
    """The synthetic number task, trained long enough that its outputs are confident (in fp32:
    the export tests' thresholds were measured on it so)."""
    cfg = config_from_dict(
        {
            "data": {"path": "synthetic", "synthetic_size": 3000},
            "tokenizer": {"vocab_size": 128},
            "model": {
                "d_model": 64,
                "n_heads": 4,
                "n_encoder_layers": 2,
                "n_decoder_layers": 2,
                "d_ff": 128,
                "dropout": 0.0,
                **model,
            },
            "train": {
                "batch_tokens": 1024,
                "lr": 2e-3,
                "warmup_steps": 30,
                "max_steps": max_steps,
                "eval_every": max_steps,
                "eval_max_sentences": 16,
            },
            "decode": {"beam_size": 1},
            "run": {"dtype": "fp32", "device": "cpu", "seed": seed},
        }
    )
    train_run(cfg, run_dir)
    return run_dir
