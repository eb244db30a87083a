"""Text classification end to end: data with per-split columns, the pooled classifier, training,
eval reports with a confusion matrix, `minitx predict`, and label names that survive the run dir."""

import json
import math
from pathlib import Path

import datasets
import pytest
import torch
import yaml

from minitx import load
from minitx.config import (
    DataConfig,
    ModelConfig,
    TokenizerConfig,
    config_from_dict,
    load_config,
)
from minitx.data.batching import encode_labelled
from minitx.data.labels import label_names, row_labels
from minitx.data.sources import load_labelled_texts
from minitx.data.tokenizer import build_codecs
from minitx.errors import UserError
from minitx.metrics import classification_scores
from minitx.model.transformer import build_classifier
from minitx.tasks import get_task

from conftest import (
    SHARED_DATA,
    sentiment_config_yaml,
    sentiment_rows,
    write_sentiment_splits,
    write_tsv,
)
from test_cli import assert_user_error, minitx

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load_split(cfg, split: str) -> datasets.Dataset:
    return get_task(cfg.task).load_split(cfg, split)


def classify_texts(model, texts: list[str]) -> list[dict[str, float]]:
    return model.task.class_probabilities(model, texts)


@pytest.fixture
def sst_like_dir(tmp_path: Path) -> Path:
    """SST-2's local layout: `sentence` in train.tsv, `content` in dev.tsv and test.tsv."""
    return write_sentiment_splits(tmp_path / "sst")


@pytest.fixture
def trained_run(tiny_classification_run) -> Path:
    """The session's toy sentiment classifier (trained on `sst_like_dir`'s data by that config)."""
    return tiny_classification_run.run


# --- data ---------------------------------------------------------------------------------------


def test_per_split_renames_give_every_split_the_same_columns(sst_like_dir):
    cfg = config_from_dict(yaml.safe_load(sentiment_config_yaml(sst_like_dir)))
    for split, size in (("train", 240), ("validation", 40), ("test", 30)):
        dataset = load_split(cfg, split)
        assert dataset.column_names == ["text", "label"] and len(dataset) == size
    assert load_split(cfg, "test")[0]["text"] == sentiment_rows(30, seed=3)[0][1]


def test_without_the_rename_the_error_lists_the_columns_that_exist(sst_like_dir):
    raw = yaml.safe_load(sentiment_config_yaml(sst_like_dir))
    del raw["data"]["rename_columns"]
    cfg = config_from_dict(raw)
    with pytest.raises(
        UserError, match=r"no column 'sentence'; columns are \['label', 'content'\]"
    ):
        load_split(cfg, "validation")
    raw["data"]["rename_columns"] = {"dev": {"contents": "sentence"}}
    with pytest.raises(
        UserError, match=r"names column\(s\) \['contents'\].*\['label', 'content'\]"
    ):
        load_split(config_from_dict(raw), "validation")


def test_text_pairs_are_joined_with_separators(tmp_path):
    (tmp_path / "train.jsonl").write_text(
        "".join(
            json.dumps({"premise": p, "hypothesis": h, "label": lab}) + "\n"
            for p, h, lab in [("a b", "c", "yes"), ("c", "a", "no")] * 5
        )
    )
    dataset = load_labelled_texts(
        DataConfig(path=str(tmp_path), text="premise", text_pair="hypothesis"), "train"
    )
    tokenizer = TokenizerConfig(vocab_size=30, min_frequency=1)
    codecs = build_codecs(list(dataset["text"]) + list(dataset["text_pair"]), [], tokenizer, True)
    encoded, _ = encode_labelled(dataset, codecs.src, label_names(dataset), "train")
    codec = codecs.src
    (first,) = encoded.ids.rows([0])
    assert first[0] == codec.bos_id and first.count(codec.eos_id) == 2 and first[-1] == codec.eos_id
    assert encoded.labels[:2].tolist() == [1, 0]  # names sorted: no, yes


def test_label_names_from_class_label_feature_else_sorted_values():
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    with_names = datasets.Dataset.from_dict(
        {"text": ["a", "b", "c"], "label": [1, -1, 0]}, features=features
    )
    assert label_names(with_names) == ["neg", "pos"]
    assert row_labels(with_names) == ["pos", None, "neg"]  # -1: no label (Hub test splits)
    plain = datasets.Dataset.from_dict({"text": ["a"] * 4, "label": ["10", "2", "", "2"]})
    assert label_names(plain) == ["2", "10"]  # numeric order, empty label left out
    with pytest.raises(UserError, match="at least 2"):
        label_names(datasets.Dataset.from_dict({"text": ["a"], "label": ["x"]}))


def test_missing_and_unknown_labels_are_counted_and_skipped(tmp_path):
    rows = [("pos", "good film"), ("", "no label here"), ("meh", "unseen label"), ("neg", "bad")]
    write_tsv(tmp_path / "test.tsv", "text", rows)
    dataset = load_labelled_texts(DataConfig(path=str(tmp_path)), "test")
    codecs = build_codecs(
        list(dataset["text"]), [], TokenizerConfig(vocab_size=40, min_frequency=1), True
    )
    encoded, skipped = encode_labelled(dataset, codecs.src, ["neg", "pos"], "test")
    assert encoded.labels.tolist() == [1, 0]
    assert skipped == {"missing label": 1, "unknown label": 1}


def test_empty_texts_are_dropped_and_counted(tmp_path):
    write_tsv(tmp_path / "train.tsv", "text", [("pos", "good"), ("neg", "  "), ("neg", "bad")])
    assert len(load_labelled_texts(DataConfig(path=str(tmp_path)), "train")) == 2


# --- model --------------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooled_output_is_unchanged_by_extra_padding(pooling):
    cfg = ModelConfig(
        d_model=32, n_heads=4, n_encoder_layers=2, d_ff=64, dropout=0.0, pooling=pooling
    )
    model = build_classifier(cfg, vocab_size=20, pad_id=0, n_classes=3).eval()
    src = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    padded = torch.cat([src, torch.zeros(2, 6, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(src), model(padded), atol=1e-5)
        memory, mask = model.encode(src)
        pooled = model.pool(memory, mask)
    expected = memory[1, :3].mean(0) if pooling == "mean" else memory[1, 0]
    assert torch.allclose(pooled[1], expected, atol=1e-6)


def test_classification_scores_and_confusion_matrix():
    scores = classification_scores([0, 1, 1, 2, 0], [0, 1, 2, 2, 1], ["a", "b", "c"])
    assert scores["accuracy"] == 60.0
    assert scores["confusion_matrix"]["matrix"] == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert scores["per_class"]["c"] == {
        "precision": 100.0,
        "recall": 50.0,
        "f1": 66.67,
        "support": 2,
    }
    # macro-F1 = mean of F1 a (2/3), b (1/2), c (2/3)
    assert scores["macro_f1"] == round(100 * (2 / 3 + 1 / 2 + 2 / 3) / 3, 2)


# --- training, eval, predict ---------------------------------------------------------------------


def test_a_tiny_classifier_learns_a_separable_task(trained_run):
    events = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    validations = [e for e in events if e["event"] == "validation"]
    # Final validation accuracy (40 sentences) measured in fp32 on an Ice Lake CPU over run.seed
    # 1-5: 100, 100, 100 (seed 3, this run), 90, 100; chance is 50.
    assert validations[-1]["accuracy"] >= 85.0
    assert "examples_per_s" in next(e for e in events if e["event"] == "train")
    assert json.loads((trained_run / "labels.json").read_text()) == ["neg", "pos"]
    saved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert saved["train"]["early_stopping_metric"] == "accuracy"


def test_eval_report_agrees_with_scores_recomputed_from_its_predictions(
    tiny_classification_run, tmp_path
):
    trained_run = tiny_classification_run.copy(tmp_path)  # eval writes into the run directory
    run = load(trained_run)
    report = run.evaluate("test")
    assert report["examples"] == 30 and report["data_split"] == "test"
    # Recompute every score from the gold labels and the predictions the run wrote.
    gold = [label for label, _ in sentiment_rows(30, seed=3)]
    predictions = (trained_run / "eval" / "test.pred").read_text().splitlines()
    predicted = [line.split("\t")[0] for line in predictions]
    names = ["neg", "pos"]
    matrix = [
        [sum(g == t and p == q for g, p in zip(gold, predicted, strict=True)) for q in names]
        for t in names
    ]
    assert report["confusion_matrix"] == {"labels": names, "matrix": matrix}
    assert report["accuracy"] == round(
        100 * sum(g == p for g, p in zip(gold, predicted, strict=True)) / 30, 2
    )
    f1 = []
    for k, name in enumerate(names):
        precision = matrix[k][k] / max(sum(row[k] for row in matrix), 1)
        recall = matrix[k][k] / max(sum(matrix[k]), 1)
        f1.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        assert report["per_class"][name]["support"] == sum(matrix[k])
    assert report["macro_f1"] == pytest.approx(100 * sum(f1) / 2, abs=0.01)
    # The loss is the mean negative log-probability of the gold labels, here computed from the
    # probabilities `classify_texts` gives (the model's forward pass, not the scoring code).
    texts = [text for _, text in sentiment_rows(30, seed=3)]
    probabilities = classify_texts(run, texts)
    expected_loss = -sum(math.log(p[g]) for p, g in zip(probabilities, gold, strict=True)) / 30
    assert report["loss"] == pytest.approx(expected_loss, abs=2e-4)
    assert [line.split("\t")[1] for line in predictions] == [
        f"{max(p.values()):.4f}" for p in probabilities
    ]
    png = (trained_run / "eval" / "test.confusion.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_label_names_survive_save_and_load(trained_run):
    run = load(trained_run)
    assert run.labels == ["neg", "pos"]
    (probabilities,) = classify_texts(run, ["the film was superb"])
    assert set(probabilities) == {"neg", "pos"}
    assert max(probabilities, key=probabilities.get) == "pos"
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_cli_tsv_and_json(trained_run, tmp_path):
    texts = ["a wonderful story", "a dull plot", "the film was awful"]
    expected = classify_texts(load(trained_run), texts)  # the same model, in-process
    best = [max(p, key=p.get) for p in expected]
    assert best == ["pos", "neg", "neg"]
    result = minitx("predict", trained_run, texts[0], "", texts[1])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")[:-1]
    assert lines == [
        f"pos\t{expected[0]['pos']:.4f}",
        "",
        f"neg\t{expected[1]['neg']:.4f}",
    ]

    result = minitx("predict", trained_run, "--json", stdin=f"{texts[0]}\n{texts[2]}\n")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    for record, text, probabilities in zip(records, texts[::2], expected[::2], strict=True):
        label = max(probabilities, key=probabilities.get)
        assert record["text"] == text and record["label"] == label
        assert record["probability"] == round(probabilities[label], 4)
        assert record["probabilities"] == {k: round(v, 4) for k, v in probabilities.items()}


def test_translate_and_predict_refuse_the_other_task(trained_run):
    assert_user_error(minitx("translate", trained_run, "hello"), "classification run", "translate")


def test_shipped_sst2_configs_load_and_read_the_right_columns(monkeypatch):
    local = load_config(CONFIGS / "sst2.yaml", ["data.path=/x"])
    assert local.task == "classification" and local.data.rename_columns["dev"] == {
        "content": "sentence"
    }
    seen = []
    features = datasets.Features(
        {
            "idx": datasets.Value("int32"),
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
        }
    )

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        seen.append((path, split))
        return datasets.Dataset.from_dict(
            {"idx": [0, 1], "sentence": ["good .", "bad ."], "label": [1, 0]}, features=features
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub = load_config(CONFIGS / "sst2_hub.yaml")
    test = load_split(hub, "test")
    assert seen == [("stanfordnlp/sst2", "validation")]  # the Hub test split has no labels
    assert label_names(test) == ["negative", "positive"] and test["text"] == ["good .", "bad ."]


@pytest.mark.skipif(not (SHARED_DATA / "sst2").is_dir(), reason="needs ../shared/data/sst2")
def test_real_sst2_files_load_through_the_config():
    cfg = load_config(CONFIGS / "sst2.yaml", [f"data.path={SHARED_DATA / 'sst2'}"])
    sizes = {split: len(load_split(cfg, split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 67349, "validation": 872, "test": 1821}
    assert label_names(load_split(cfg, "train")) == ["0", "1"]


def test_a_damaged_or_missing_labels_file_is_a_clear_error(tmp_path):
    from minitx.data.labels import load_label_names

    with pytest.raises(UserError, match="no labels.json"):
        load_label_names(tmp_path / "labels.json")
    (tmp_path / "labels.json").write_text("{not json")
    with pytest.raises(UserError, match="labels.json is damaged"):
        load_label_names(tmp_path / "labels.json")


def test_float_nan_and_negative_labels_read_as_integers_or_missing():
    dataset = datasets.Dataset.from_dict(
        {"text": ["a", "b", "c", "d"], "label": [1.0, float("nan"), 0.0, -1.0]}
    )
    assert row_labels(dataset) == ["1", None, "0", None]
    tsv_like = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": ["1", "-1", "0"]})
    assert row_labels(tsv_like) == ["1", None, "0"]


def test_renames_that_would_clash_are_clear_errors(sst_like_dir):
    raw = yaml.safe_load(sentiment_config_yaml(sst_like_dir))
    raw["data"]["rename_columns"] = {"dev": {"content": "label"}}
    with pytest.raises(UserError, match="two columns one name"):
        load_split(config_from_dict(raw), "validation")
    raw["data"]["rename_columns"] = {"deev": {"content": "sentence"}}
    with pytest.raises(UserError, match=r"rename_columns has keys \['deev'\]"):
        config_from_dict(raw)


def test_macro_f1_averages_the_classes_that_occur():
    scores = classification_scores([0, 1], [0, 1], ["a", "b", "never"])
    assert scores["macro_f1"] == 100.0 and scores["per_class"]["never"]["support"] == 0
