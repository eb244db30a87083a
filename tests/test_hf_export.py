"""`minitx export --format transformers`: a folder `transformers` loads alone, computing the run's
logits and translations, with its tokenizer, generation settings and model card; what no
`transformers` architecture computes is refused before anything is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from minitx.api import export_run, load
from minitx.data.sources import load_pairs

from conftest import train_numbers
from test_cli import minitx as minitx_cli

pytest.importorskip("transformers")
pytest.importorskip("ctranslate2")


# The pre-norm run also has Marian's swish and output bias: its CTranslate2 conversions carry both.
MODELS = {"pre": {"activation": "swish", "output_bias": True}, "post": {}}


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(request, tmp_path_factory):
    """A confident number-task run of each norm placement, evaluated, and its transformers export."""
    root = tmp_path_factory.mktemp(f"hf-{request.param}")
    run = train_numbers(root / "run", norm=request.param, **MODELS[request.param])
    load(run).evaluate("test")  # in-process, as the refusals below test the command line
    export_run(run, root / "hf", format="transformers")
    return run, root / "hf", request.param


def _test_sources(run) -> list[str]:
    cfg = load(run).config
    return list(load_pairs(cfg.data, "test")["src"])


def test_the_folder_loads_with_transformers_alone_and_gives_the_runs_logits(exported):
    run, folder, norm = exported
    # A fresh interpreter in which importing minitx fails: transformers must need nothing of it.
    script = """
import json, sys
sys.modules["minitx"] = None
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
model = AutoModelForSeq2SeqLM.from_pretrained(sys.argv[1]).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
texts = json.loads(sys.argv[2])
batch = tokenizer(texts, return_tensors="pt", padding=True)
start = torch.full((len(texts), 1), model.config.decoder_start_token_id)
targets = torch.cat([start, torch.tensor(json.loads(sys.argv[3]))], dim=1)
with torch.no_grad():
    logits = model(**batch, decoder_input_ids=targets).logits
print(json.dumps({"architecture": type(model).__name__, "ids": batch.input_ids.tolist(),
                  "logits": logits.tolist()}))
"""
    model = load(run)
    codec = model.codecs.src
    texts = _test_sources(run)[:8]
    targets = [[5, 9, 12, 7]] * len(texts)  # any target prefix: teacher-forced logits
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), json.dumps(texts), json.dumps(targets)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert (
        result["architecture"]
        == {"pre": "PegasusForConditionalGeneration", "post": "MarianMTModel"}[norm]
    )
    sources = [ids + [codec.eos_id] for ids in codec.encode(texts)]
    assert [row[: len(ids)] for row, ids in zip(result["ids"], sources, strict=True)] == sources
    width = max(len(ids) for ids in sources)
    src = torch.tensor([ids + [codec.pad_id] * (width - len(ids)) for ids in sources])
    tgt = torch.tensor([[codec.bos_id, *row] for row in targets])
    with torch.no_grad():
        mine = model.engine.model(src, tgt)
    assert (mine - torch.tensor(result["logits"])).abs().max().item() < 1e-4


def test_generate_translates_as_minitx_does(exported):
    run, folder, _ = exported
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = _test_sources(run)
    run_model = load(run)
    for beam, needed in ((1, 1.0), (5, 0.99)):
        mine = [t.text for t in run_model.translate(texts, beam_size=beam)]
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**batch, num_beams=beam, max_new_tokens=64)
        theirs = tokenizer.batch_decode(out, skip_special_tokens=True)
        same = sum(a == b for a, b in zip(mine, theirs, strict=True))
        assert same >= needed * len(texts), (beam, same, len(texts))


def test_minitx_runs_the_folder_with_transformers_and_gets_the_same_translations(exported):
    run, folder, _ = exported
    texts = _test_sources(run)[:40]
    export = load(folder)
    assert export.engine.name == "transformers"
    for beam in (1, 5):
        mine = [t.text for t in load(run).translate(texts, beam_size=beam)]
        assert [t.text for t in export.translate(texts, beam_size=beam)] == mine
    # Scores are log-probability / length**length_penalty, as the run's own.
    run_best = load(run).translate(texts[:5], beam_size=5, n_best=2)
    export_best = export.translate(texts[:5], beam_size=5, n_best=2)
    for a, b in zip(run_best, export_best, strict=True):
        assert [h.tokens for h in a.hypotheses] == [h.tokens for h in b.hypotheses]
        expected = [h.log_prob for h in a.hypotheses]
        assert [h.log_prob for h in b.hypotheses] == pytest.approx(expected, abs=1e-3)


def test_generation_settings_tokenizer_config_and_model_card(exported):
    run, folder, _ = exported
    cfg = load(run).config
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["num_beams"] == cfg.decode.beam_size
    assert generation["length_penalty"] == cfg.decode.length_penalty
    assert generation["decoder_start_token_id"] == generation["pad_token_id"] == 0
    assert generation["eos_token_id"] == 3 and generation["max_length"] > 100
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    assert settings["tokenizer_class"] == "PreTrainedTokenizerFast"
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["pipeline_tag"] == "translation" and meta["library_name"] == "transformers"
    assert "language" not in meta  # the synthetic task's columns are src and tgt, no languages
    scores = json.loads((run / "eval" / "test.json").read_text())
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in metrics} == {
        "bleu": scores["bleu"],
        "chrf": scores["chrf"],
    }
    assert metrics[0]["args"] == scores["bleu_signature"]
    assert "lr: 0.002" in card  # the training config


def test_ctranslate2s_converter_on_the_folder_gives_minitxs_ctranslate2_export(exported, tmp_path):
    run, folder, norm = exported
    if norm == "post":
        pytest.skip(
            "CTranslate2's Marian loader assumes OPUS-MT's vocabulary layout (docs/export-and-serve.md)"
        )
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(folder)).convert(str(tmp_path / "converted"))
    assert minitx_cli("export", run, "--out", tmp_path / "ours", "-q").returncode == 0
    tokenizer = load(run).codecs.src.tokenizer
    sources = [
        e.tokens for e in tokenizer.encode_batch(_test_sources(run), add_special_tokens=False)
    ]
    outputs = []
    for directory, extra in ((tmp_path / "converted", ["</s>"]), (tmp_path / "ours", [])):
        translator = ctranslate2.Translator(str(directory), device="cpu", intra_threads=1)
        found = translator.translate_batch(
            [tokens + extra for tokens in sources], beam_size=5, max_decoding_length=64
        )
        outputs.append([r.hypotheses[0] for r in found])
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    "setting, key",
    [
        ("model.positions=rope", "model.positions: rope"),
        ("model.attention=cosine", "model.attention: cosine"),
        ("model.n_kv_heads=1", "model.n_kv_heads: 1"),
        ("model.window=4", "model.window: 4"),
        ("tokenizer.joint=false", "tokenizer.joint: False"),
    ],
)
def test_what_transformers_cannot_compute_is_refused_before_anything_is_written(
    tiny_translation_run, tmp_path, setting, key
):
    run = tmp_path / "run"
    shutil.copytree(tiny_translation_run.run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    section, name = setting.split("=")[0].split(".")
    value = yaml.safe_load(setting.split("=")[1])
    config[section][name] = value
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    done = minitx_cli("export", run, "--format", "transformers", "--out", tmp_path / "hf", "-q")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and key in done.stderr, done.stderr
    assert not (tmp_path / "hf").exists()


def test_a_classifier_is_refused_naming_the_formats_it_has(tiny_classification_run, tmp_path):
    out = tmp_path / "hf"
    done = minitx_cli(
        "export", tiny_classification_run.run, "--format", "transformers", "--out", out
    )
    assert done.returncode == 2
    assert "does not export classification runs" in done.stderr and "onnx" in done.stderr
    assert not (tmp_path / "hf").exists()


def test_the_model_card_shares_no_local_path(tmp_path):
    from minitx.config import config_from_dict
    from minitx.export.hf import model_card

    raw = {"data": {"path": str(tmp_path / "corpus"), "src": "de", "tgt": "en"}}
    card = model_card(
        config_from_dict({**raw, "train": {"init_from": str(tmp_path / "base")}}), None, "pegasus"
    )
    assert str(tmp_path) not in card and "path: corpus" in card and "init_from: base" in card
    assert yaml.safe_load(card.split("---")[1])["language"] == ["de", "en"]
    hub = model_card(config_from_dict({"data": {"path": "bentrevett/multi30k"}}), None, "pegasus")
    assert yaml.safe_load(hub.split("---")[1])["datasets"] == ["bentrevett/multi30k"]
