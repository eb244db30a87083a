"""Tasks are plugins: a third task, defined entirely in this file, trains, evaluates and translates
through the ordinary command line and `minitx.load`, with nothing under minitx/ changed for it."""

from __future__ import annotations

import json
import random
import sys

import datasets
import pytest

import minitx
from minitx.cli import main
from minitx.config import Config
from minitx.errors import UserError
from minitx.tasks import Translation, configured, get_task, register_task
from minitx.tasks.base import Task

WORDS = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "fish", "bird"]


class ReverseWords(Translation):
    """Say a short sequence of words backwards; scored by exact match."""

    name = "reverse_words"
    metrics = ("exact_match", "loss")
    shown_scores = ("exact_match", "loss")

    def load_split(self, cfg: Config, split: str) -> datasets.Dataset:
        draw = random.Random(f"{cfg.data.synthetic_seed}-{split}")
        size = {"train": cfg.data.synthetic_size}.get(split, 40)
        sources = [" ".join(draw.choices(WORDS, k=draw.randint(2, 5))) for _ in range(size)]
        targets = [" ".join(reversed(source.split())) for source in sources]
        return datasets.Dataset.from_dict({"src": sources, "tgt": targets})


CONFIG = """
task: reverse_words
data: {path: generated, synthetic_size: 2000}
tokenizer: {vocab_size: 40, min_frequency: 1}
model: {d_model: 64, n_heads: 4, n_encoder_layers: 2, n_decoder_layers: 2, d_ff: 128, dropout: 0.0}
train: {batch_tokens: 1024, lr: 3.0e-3, warmup_steps: 50, max_steps: 300, eval_every: 150}
decode: {beam_size: 1}
run: {device: cpu, seed: 1, dtype: fp32}
"""


@pytest.fixture(scope="module")
def reverse_words():
    register_task(ReverseWords())
    yield get_task("reverse_words")


def cli(capsys, *args: str) -> tuple[int, str]:
    """`minitx ARGS` in this process, where the test's task is registered."""
    old_argv, sys.argv = sys.argv, ["minitx", *args]
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        sys.argv = old_argv
    captured = capsys.readouterr()
    return exit_.value.code, captured.out + captured.err


@pytest.mark.slow
def test_a_task_defined_outside_minitx_trains_evaluates_and_translates(
    reverse_words, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reverse.yaml").write_text(CONFIG)
    code, out = cli(capsys, "train", "reverse.yaml", "--quiet")
    assert code == 0, out
    scores = json.loads(out.strip().splitlines()[-1])
    assert set(scores) >= {"exact_match", "loss"}
    saved = (tmp_path / "runs" / "reverse" / "config.yaml").read_text()
    assert "early_stopping_metric: exact_match" in saved  # the task's first metric

    code, out = cli(capsys, "eval", "runs/reverse", "--split", "test", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["sentences"] == 40
    # 300 steps are enough to say five words backwards (fp32 is pinned: the same on every CPU).
    assert report["exact_match"] >= 80.0, report

    code, out = cli(capsys, "translate", "runs/reverse", "red cat moon", "dog sun")
    assert code == 0, out
    assert out.splitlines() == ["moon cat red", "sun dog"]

    model = minitx.load("runs/reverse")
    assert model.task is reverse_words
    assert model.translate(["blue tree fish"])[0].text == "fish tree blue"
    code, out = cli(capsys, "predict", "runs/reverse", "blue")
    assert code == 2 and "not for it" in out


def test_an_unknown_task_and_a_metric_of_another_task_are_named(reverse_words):
    with pytest.raises(UserError, match="'summarize' is not a task; use one of .*reverse_words"):
        configured(Config(task="summarize"))
    cfg = Config(task="reverse_words")
    assert configured(cfg).train.early_stopping_metric == "exact_match"
    from dataclasses import replace

    wrong = replace(cfg, train=replace(cfg.train, early_stopping_metric="bleu"))
    with pytest.raises(UserError, match="bleu is not a reverse_words metric"):
        configured(wrong)


def test_every_registered_task_implements_the_interface():
    for name in ("translation", "classification"):
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
        assert task.metrics and task.counted and task.shown_scores and task.throughput_key
