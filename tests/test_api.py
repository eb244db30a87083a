"""The Python API (`minitx.load`, `minitx.train`, `Model`): what it returns checked against the
CLI, against the model's own teacher-forced log-probabilities and against the files it writes."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch

import minitx
from minitx.api import train as api_train
from minitx.errors import UserError

from conftest import PAIRS, TrainedRun
from test_cli import minitx as minitx_cli

SOURCES = ["ein hund rennt", "zwei männer gehen", "die frau liest ein buch"]


@pytest.fixture
def api_run(tiny_translation_run) -> TrainedRun:
    """The session's tiny translation run, trained once through the API (minitx.api.train, what
    `minitx.train` should resolve to; see the test of that name below): 12 steps, validated every
    3, beam 2 in its config."""
    return tiny_translation_run


@pytest.fixture(scope="module")
def model(tiny_translation_run):
    return minitx.load(tiny_translation_run.run)


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _teacher_forced_log_prob(model, source: str, tokens: list[int]) -> float:
    """The summed log-probability of `tokens` and EOS, from one plain forward pass."""
    src_codec, tgt_codec = model.codecs.src, model.codecs.tgt
    src = [*src_codec.encode([source])[0], src_codec.eos_id]
    tgt_in = [tgt_codec.bos_id, *tokens]
    targets = torch.tensor([*tokens, tgt_codec.eos_id])
    with torch.no_grad():
        logits = model.engine.model(torch.tensor([src]), torch.tensor([tgt_in]))[0]
    log_probs = logits.double().log_softmax(-1)
    return float(log_probs[torch.arange(len(targets)), targets].sum())


# --- minitx.train ----------------------------------------------------------------------------


def test_train_takes_the_lock_prepares_the_run_and_returns_the_last_validation(api_run):
    run, scores = api_run.run, api_run.scores
    assert (run / ".lock").read_text().strip() == str(os.getpid())
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "best").is_dir()
    validations = [e for e in _events(run) if e["event"] == "validation"]
    assert [e["step"] for e in validations] == [3, 6, 9, 12]
    last = validations[-1]
    assert {"bleu", "chrf", "exact_match", "loss"} <= set(scores)
    for key in ("bleu", "chrf", "exact_match", "loss"):
        assert scores[key] == last[key], key


def test_train_with_a_config_object_and_overrides(api_run, tmp_path):
    from minitx.config import load_config

    cfg = load_config(api_run.config, ())
    scores = api_train(cfg, ["train.max_steps=3", "train.eval_every=3"], run_dir=tmp_path / "r")
    saved = (tmp_path / "r" / "config.yaml").read_text()
    assert re.search(r"^\s+max_steps: 3$", saved, re.M), saved
    assert [e["step"] for e in _events(tmp_path / "r") if e["event"] == "validation"] == [3]
    assert "bleu" in scores


def test_minitx_train_is_the_train_function_after_load(api_run, tmp_path):
    """`minitx.train` must stay the function once the `minitx.train` package has been imported
    (minitx.load imports it): a user who loads a model and then trains gets a module instead."""
    run = api_run.copy(tmp_path, "copy")
    script = (
        "import json, sys, minitx\n"
        "minitx.load(sys.argv[2])\n"
        "scores = minitx.train(sys.argv[1], ['train.max_steps=12'], run_dir=sys.argv[2])\n"
        "print(json.dumps(scores))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(api_run.config), str(run)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # The copied run had reached max_steps: resuming it trains nothing and returns its scores.
    resumed = json.loads(result.stdout.strip().splitlines()[-1])
    assert resumed["bleu"] == api_run.scores["bleu"]


# --- translate -------------------------------------------------------------------------------


def test_translate_gives_the_same_best_text_as_the_cli(api_run, model):
    found = model.translate(SOURCES)
    assert [t.source for t in found] == SOURCES
    result = minitx_cli("translate", api_run.run, *SOURCES, "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [t.text for t in found]
    assert all(t.text == t.hypotheses[0].text and len(t.hypotheses) == 1 for t in found)


def test_n_best_hypotheses_are_ranked_and_scored_as_the_model_sees_them(model):
    penalty = model.config.decode.length_penalty
    found = model.translate(SOURCES[:2], beam_size=3, n_best=3)
    for translation in found:
        hypotheses = translation.hypotheses
        assert len(hypotheses) == 3
        assert len({tuple(h.tokens) for h in hypotheses}) == 3
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        for h in hypotheses:
            expected = _teacher_forced_log_prob(model, translation.source, h.tokens)
            assert h.log_prob == pytest.approx(expected, rel=1e-4, abs=1e-4)
            assert h.score == pytest.approx(h.log_prob / (len(h.tokens) + 1) ** penalty, rel=1e-6)
            assert h.alignment is None
    best_of_three = model.translate(SOURCES[:2], beam_size=3)
    assert [t.text for t in best_of_three] == [t.hypotheses[0].text for t in found]


def test_sampling_with_a_seed_repeats_and_ranks_its_samples(model):
    first = model.translate(SOURCES[:1], sample=True, n_best=3, top_p=0.9, seed=1)[0]
    again = model.translate(SOURCES[:1], sample=True, n_best=3, top_p=0.9, seed=1)[0]
    assert len(first.hypotheses) == 3
    assert [h.tokens for h in first.hypotheses] == [h.tokens for h in again.hypotheses]
    scores = [h.score for h in first.hypotheses]
    assert scores == sorted(scores, reverse=True)


def test_alignments_link_words_of_the_source_and_the_text(model):
    for translation in model.translate(SOURCES, beam_size=3, n_best=2, alignments=True):
        n_src = len(translation.source.split())
        for h in translation.hypotheses:
            n_tgt = len(h.text.split())
            assert isinstance(h.alignment, list)
            assert h.alignment == sorted(set(h.alignment))
            assert all(0 <= i < n_src and 0 <= j < n_tgt for i, j in h.alignment), h
            # every target word is linked to the source word its pieces attend to most
            assert {j for _, j in h.alignment} == set(range(n_tgt)), h


def test_unknown_decode_option_names_the_nearest_key(model):
    with pytest.raises(UserError, match=r"unknown decode option 'beam' \(did you mean 'beam_size'"):
        model.translate(SOURCES[:1], beam=3)


def test_bad_decode_values_are_refused(model):
    with pytest.raises(UserError, match=r"decode\.top_p: must be above 0\.0, got 0"):
        model.translate(SOURCES[:1], sample=True, top_p=0)
    with pytest.raises(UserError, match=r"decode\.n_best \(3\) must be at most"):
        model.translate(SOURCES[:1], beam_size=2, n_best=3)


def test_decode_config_applies_options_and_keeps_the_run_values_for_none(model):
    assert model.decode_config() == model.config.decode
    assert model.decode_config(beam_size=None).beam_size == 2  # the run's decode.beam_size
    chosen = model.decode_config(beam_size=4, n_best=2)
    assert (chosen.beam_size, chosen.n_best) == (4, 2)
    assert model.config.decode.beam_size == 2  # the run's settings are not changed


def test_translate_refuses_a_bare_string(model):
    with pytest.raises(UserError, match="list"):
        model.translate("ein hund rennt")


def test_predict_on_a_translation_run_is_refused(model):
    with pytest.raises(UserError, match="translation run"):
        model.predict(["ein hund rennt"])


# --- evaluate and attention ------------------------------------------------------------------


def test_evaluate_returns_what_it_writes_and_its_bleu_recomputes(api_run, tmp_path):
    run = api_run.copy(tmp_path)  # eval writes into the run directory
    report = minitx.load(run).evaluate("test", beam_size=1)
    assert json.loads((run / "eval" / "test.json").read_text()) == report
    assert report["decoding"]["beam_size"] == 1 and report["sentences"] == len(PAIRS[3:])
    hypotheses = (run / "eval" / "test.hyp").read_text().splitlines()
    references = [tgt for _, tgt in PAIRS[3:]]
    bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert report["bleu"] == pytest.approx(bleu, abs=0.01)


def test_attention_maps_have_the_shapes_of_the_tokens(model):
    maps = model.attention("ein hund rennt")
    n_src, n_tgt = len(maps["source_tokens"]), len(maps["target_tokens"])
    shapes = {m["kind"]: tuple(m["weights"].shape) for m in maps["maps"]}
    assert shapes == {
        "encoder_self": (4, n_src, n_src),
        "decoder_self": (4, n_tgt, n_tgt),
        "cross": (4, n_tgt, n_src),
    }
    for m in maps["maps"]:
        assert torch.allclose(m["weights"].sum(-1), torch.ones(()), atol=1e-5)


# --- the package -----------------------------------------------------------------------------


def test_import_minitx_loads_no_torch_and_load_still_works(api_run, model):
    # Reading a trained run needs no `datasets` either (0.9 s of every translate/serve start).
    script = (
        "import sys, minitx\n"
        "print('torch' in sys.modules)\n"
        "model = minitx.load(sys.argv[1])\n"
        "print(model.translate([sys.argv[2]])[0].text)\n"
        "print('datasets' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(api_run.run), SOURCES[0]],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines == ["False", model.translate(SOURCES[:1])[0].text, "False"]


def test_version_is_the_installed_distribution_version():
    assert minitx.__version__ == importlib.metadata.version("minitx")


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        minitx.nope  # noqa: B018


# --- the README ------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"

TINY_SYNTHETIC = """
task: translation
data: {path: synthetic, synthetic_size: 300}
tokenizer: {vocab_size: 128, min_frequency: 1}
model: {d_model: 32, n_heads: 4, n_encoder_layers: 1, n_decoder_layers: 1, d_ff: 64, dropout: 0.0}
train: {max_steps: 20, eval_every: 20, log_every: 10, batch_tokens: 512, eval_max_sentences: 50}
decode: {beam_size: 1, max_len_ratio: 1.0, max_len_offset: 4}
run: {device: cpu, dtype: fp32, seed: 1}
"""


def _readme_python_example() -> str | None:
    """The first ```python block under "## From Python" (before the next "## " heading)."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## From Python\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if section is None:
        return None
    block = re.search(r"^```python\s*$\n(.*?)^```\s*$", section.group(1), re.M | re.S)
    return block.group(1) if block else None


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    code = _readme_python_example()
    if code is None:
        pytest.skip('README.md has no ```python block under "## From Python" yet')
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_SYNTHETIC)
    assert "configs/quickstart.yaml" in code, "the example no longer trains the quickstart config"
    code = code.replace("configs/quickstart.yaml", str(config))
    code = code.replace("train.max_steps=300", "train.max_steps=20")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (From Python)", "exec"), {"__name__": "readme_example"})
