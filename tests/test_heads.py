"""Which heads matter: head gates, Michel et al.'s importance, Clark et al.'s statistics, and
`minitx heads` on translation and classification runs."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from minitx.api import load
from minitx.config import ModelConfig, config_from_dict
from minitx.data.batching import Batch
from minitx.errors import UserError
from minitx.heads.measure import (
    _head_statistics,
    gated,
    gradient_importance,
)
from minitx.model.objective import logits_and_targets
from minitx.model.transformer import attention_modules, build_model, prune_heads
from minitx.runtime import Compute

from conftest import PAIRS, tiny_config_dict
from test_cli import assert_user_error, minitx

CPU = Compute(torch.device("cpu"), "fp32")


def _model(**changes):
    cfg = ModelConfig(
        d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=64, dropout=0.0
    )
    cfg = ModelConfig(**{**cfg.__dict__, **changes})
    return build_model(cfg, 30, 30, 0, True).eval()


def _batch():
    src, tgt = torch.randint(4, 30, (3, 7)), torch.randint(4, 30, (3, 6))
    src[1, 5:] = 0
    tgt[2, 4:] = 0
    tgt_out = torch.cat([tgt[:, 1:], torch.full((3, 1), 3)], dim=1)
    tgt_out[tgt_out == 0] = -100
    return Batch(src, tgt, tgt_out, int((tgt_out != -100).sum()))


@pytest.mark.parametrize("kind", ["encoder_self", "decoder_self", "cross"])
@pytest.mark.parametrize("changes", [{}, {"positions": "rope"}, {"attention": "cosine"}])
def test_a_zero_gate_is_the_head_removed_from_the_output_projection(kind, changes):
    """Masking head h equals a model whose output projection never reads head h's values: the
    columns of out_proj that take them set to zero. A gate of ones changes nothing."""
    model, batch = _model(**changes), _batch()
    with torch.no_grad():
        plain = model(batch.src, batch.tgt_in)
        module = attention_modules(model)[kind, 1]
        with gated(model, {(kind, 1): torch.ones(4)}):
            torch.testing.assert_close(model(batch.src, batch.tgt_in), plain, atol=0, rtol=0)
        gate = torch.ones(4)
        gate[2] = 0.0
        with gated(model, {(kind, 1): gate}):
            masked = model(batch.src, batch.tgt_in)
        assert module.head_gate is None  # the gate goes with the block
        d_head = module.d_head
        module.out_proj.weight[:, 2 * d_head : 3 * d_head] = 0.0
        removed = model(batch.src, batch.tgt_in)
    torch.testing.assert_close(masked, removed, atol=1e-5, rtol=1e-5)
    assert (masked - plain).abs().max() > 1e-4


def test_importance_is_the_loss_gradient_for_each_gate_normalised_per_layer():
    model, batch = _model().double(), _batch()  # float64: finite differences to compare with
    importance = gradient_importance(model, [batch], CPU)
    assert set(importance) == set(attention_modules(model))
    for values in importance.values():
        assert len(values) == 4 and abs(sum(v * v for v in values) - 1) < 1e-5

    def loss_with(gate):
        with torch.no_grad(), gated(model, {("cross", 0): gate.double()}):
            logits, targets = logits_and_targets(model, batch)  # summed_loss would cast to fp32
            return float(F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum"))

    # The unnormalised importance of each cross-attention head of layer 0 by central differences.
    step, slopes = 1e-5, []
    for head in range(4):
        up, down = torch.ones(4), torch.ones(4)
        up[head], down[head] = 1 + step, 1 - step
        slopes.append(abs(loss_with(up) - loss_with(down)) / (2 * step))
    norm = sum(s * s for s in slopes) ** 0.5
    expected = [s / norm for s in slopes]
    assert importance["cross", 0] == pytest.approx(expected, abs=1e-5)


def test_statistics_of_known_attention_patterns():
    """Head 0 looks at the previous token (the first query at itself), head 1 spreads evenly over
    the three real keys; the last query and key are padding and count for nothing."""
    weights = torch.zeros(1, 2, 4, 4)
    for i, j in enumerate([0, 0, 1, 2]):
        weights[0, 0, i, j] = 1.0
    weights[0, 1, :, :3] = 1 / 3
    ids = torch.tensor([[2, 7, 3, 0]])  # <s> a </s> <pad>
    sums = _head_statistics(weights, ids, ids, torch.tensor([2, 3]), pad_id=0)
    entropy, distance, prev, same, next_, special = (row / 3 for row in sums)
    assert entropy.tolist() == pytest.approx([0.0, torch.log(torch.tensor(3.0)).item()])
    assert distance.tolist() == pytest.approx([2 / 3, (3 + 2 + 3) / 9])
    assert prev.tolist() == pytest.approx([2 / 3, 2 / 9])
    assert same.tolist() == pytest.approx([1 / 3, 1 / 3])
    assert next_.tolist() == pytest.approx([0.0, 2 / 9])
    assert special.tolist() == pytest.approx([1 / 3 + 1 / 3, 2 / 3])  # keys <s> and </s>


@pytest.mark.parametrize("which", ["translation", "classification"])
def test_the_heads_command_writes_json_csv_and_a_self_contained_page(
    which, tiny_translation_run, tiny_classification_run, tmp_path
):
    trained = tiny_translation_run if which == "translation" else tiny_classification_run
    out = tmp_path / "heads"
    result = minitx("heads", str(trained.run), "--limit", "2", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "heads.json").read_text())
    kinds = (
        {"encoder_self", "decoder_self", "cross"} if which == "translation" else {"encoder_self"}
    )
    assert {h["kind"] for h in report["heads"]} == kinds
    assert report["examples"] == 2
    n_layers = 2 if which == "translation" else 1
    assert len(report["heads"]) == len(kinds) * n_layers * 4
    metric = report["metric"]
    for head in report["heads"]:
        delta = head[f"masked_{metric}"] - report["baseline"][metric]
        assert head[f"delta_{metric}"] == pytest.approx(delta, abs=1e-3)
        assert 0 <= head["prev"] + head["same"] + head["next"] <= 1 + 1e-3
    rows = list(csv.DictReader((out / "heads.csv").open()))
    assert len(rows) == len(report["heads"]) and "importance" in rows[0]
    page = (out / "heads.html").read_text()
    assert page.count("<svg class='chart heatmap'") == 9 * len(kinds)
    assert "http" not in page.replace("http-equiv", "")
    assert "importance" in result.stdout.splitlines()[1]  # the table's header


def test_the_run_report_links_to_the_heads_page(tiny_classification_run, tmp_path):
    run = tiny_classification_run.copy(tmp_path)
    assert minitx("heads", str(run), "--limit", "4", "--quiet").returncode == 0
    assert (run / "heads" / "heads.html").is_file()  # the default place
    assert minitx("report", str(run), "--quiet").returncode == 0
    assert "href='heads/heads.html'" in (run / "report.html").read_text()


VARIANTS = [
    {},
    {"positions": "rope"},
    {"positions": "relative"},
    {"positions": "alibi"},
    {"attention": "cosine"},
    {"attention": "dot", "window": 2, "dilation": 2},
]


@pytest.mark.parametrize("changes", VARIANTS)
def test_a_pruned_model_computes_what_the_masked_full_model_does(changes):
    """Heads removed from every kind at once: the smaller model equals the full one with those
    heads masked, and restoring them as zeros (for export) gives the same outputs again."""
    model, batch = _model(**changes), _batch()
    pruned = {"encoder_self.0": [1], "decoder_self.1": [0, 3], "cross.0": [2]}
    gates = {}
    for key, heads in pruned.items():
        kind, layer = key.split(".")
        gates[kind, int(layer)] = torch.tensor([0.0 if h in heads else 1.0 for h in range(4)])
    with torch.no_grad():
        with gated(model, gates):
            masked = model(batch.src, batch.tgt_in)
        full_size = sum(p.numel() for p in model.parameters())
        prune_heads(model, pruned)
        assert sum(p.numel() for p in model.parameters()) < full_size
        assert attention_modules(model)["decoder_self", 1].head_ids == [1, 2]
        torch.testing.assert_close(model(batch.src, batch.tgt_in), masked, atol=1e-5, rtol=1e-5)
        for module in attention_modules(model).values():
            module.restore_heads(4)
        torch.testing.assert_close(model(batch.src, batch.tgt_in), masked, atol=1e-5, rtol=1e-5)


def test_heads_that_share_keys_and_values_are_not_pruned():
    model = _model(n_kv_heads=2)
    with pytest.raises(ValueError, match="share keys and values"):
        attention_modules(model)["cross", 0].prune([1])


@pytest.mark.parametrize(
    ("pruned", "message"),
    [
        ({"cross.5": [0]}, r"'cross\.5' is not KIND\.LAYER"),
        ({"middle.0": [0]}, r"'middle\.0' is not KIND\.LAYER"),
        ({"encoder_self.0": [0, 1, 2, 3]}, r"must be heads 0-3, leaving at least one"),
        ({"encoder_self.0": [7]}, r"must be heads 0-3"),
    ],
)
def test_bad_pruned_heads_in_a_config_are_named(tmp_path, pruned, message):
    raw = tiny_config_dict(tmp_path, model={"pruned_heads": pruned})
    with pytest.raises(UserError, match=message):
        config_from_dict(raw)


def test_pruning_writes_a_smaller_run_that_evaluates_translates_and_exports(
    tiny_translation_run, tmp_path
):
    out = tmp_path / "pruned"
    result = minitx(
        "heads", str(tiny_translation_run.run), "--prune", "3", "--limit", "3", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "removed 3 heads" in result.stdout
    pruned = yaml.safe_load((out / "config.yaml").read_text())["model"]["pruned_heads"]
    assert sum(len(heads) for heads in pruned.values()) == 3
    model = load(out)
    assert sum(m.n_heads for m in attention_modules(model.engine.model).values()) == 6 * 4 - 3
    original = load(tiny_translation_run.run)
    sentence = PAIRS[0][0]
    gates = {}
    for key, heads in pruned.items():
        kind, layer = key.split(".")
        gates[kind, int(layer)] = torch.tensor([0.0 if h in heads else 1.0 for h in range(4)])
    with gated(original.engine.model, gates):
        expected = original.translate([sentence])[0].text
    assert model.translate([sentence])[0].text == expected
    assert minitx("eval", str(out), "--split", "test", "--quiet").returncode == 0
    exported = tmp_path / "exported"
    assert (
        minitx("export", str(out), "--format", "ctranslate2", "--out", str(exported)).returncode
        == 0
    )
    # The pruned heads go back in as zeros (the module test checks that this changes nothing):
    # the export is of the full shape, and runs.
    exported_cfg = yaml.safe_load((exported / "config.yaml").read_text())["model"]
    assert exported_cfg["pruned_heads"] == {} and exported_cfg["n_heads"] == 4
    assert load(exported).translate([sentence])[0].text


def test_pruning_more_heads_than_can_go_is_one_line(tiny_classification_run, tmp_path):
    result = minitx(
        "heads", str(tiny_classification_run.run), "--prune", "4", "--out", str(tmp_path / "p")
    )
    assert_user_error(result, "only 3 heads can be removed: every attention module keeps one")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("drop", [0.0, 100.0])
def test_prune_until_keeps_the_metric_within_the_drop(tiny_classification_run, tmp_path, drop):
    out = tmp_path / "pruned"
    args = ["heads", str(tiny_classification_run.run), "--prune-until", str(drop)]
    result = minitx(*args, "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[0]  # removed N heads: validation accuracy A → B, …
    removed = int(line.split()[1])
    before, after = (float(x) for x in line.split("accuracy ")[1].split(",")[0].split(" → "))
    assert before - after <= drop
    assert removed == 3 if drop == 100.0 else 0 <= removed <= 3  # a module keeps one of 4 heads
    pruned = yaml.safe_load((out / "config.yaml").read_text())["model"]["pruned_heads"]
    assert sum(len(heads) for heads in pruned.values()) == removed


def test_prune_and_prune_until_together_is_one_line(tiny_classification_run, tmp_path):
    result = minitx(
        "heads",
        str(tiny_classification_run.run),
        "--prune",
        "1",
        "--prune-until",
        "1",
        "--out",
        str(tmp_path / "p"),
    )
    assert_user_error(result, "give --prune N or --prune-until DROP, not both")
