"""The Hub path of data loading, with `datasets.load_dataset` replaced (the Hub is unreachable here),
and the real Multi30k files when ../shared/data is present."""

from pathlib import Path

import datasets
import pytest

from minitx.config import DataConfig, load_config
from minitx.data.sources import load_pairs
from minitx.errors import UserError
from minitx.tasks import get_task

from conftest import PAIRS, SHARED_DATA

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load_split(cfg, split: str) -> datasets.Dataset:
    return get_task(cfg.task).load_split(cfg, split)


def _fake_hub(monkeypatch, table: dict, seen: list):
    def fake_load_dataset(path, name=None, split=None, **kwargs):
        seen.append((path, name, split))
        if split not in ("train", "validation", "test"):
            raise ValueError(
                f"Unknown split \"{split}\". Should be one of ['train', 'validation', 'test']."
            )
        return datasets.Dataset.from_dict(table)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)


def test_hub_dataset_by_id_with_language_columns(monkeypatch):
    seen = []
    _fake_hub(monkeypatch, {"en": [p[1] for p in PAIRS], "de": [p[0] for p in PAIRS]}, seen)
    loaded = load_pairs(
        DataConfig(path="bentrevett/multi30k", name="default", src="de", tgt="en"), "validation"
    )
    assert seen == [("bentrevett/multi30k", "default", "validation")]
    assert list(zip(loaded["src"], loaded["tgt"], strict=True)) == PAIRS


def test_hub_config_file_reads_the_hub_copy(monkeypatch):
    seen = []
    _fake_hub(monkeypatch, {"en": ["a"], "de": ["b"]}, seen)
    cfg = load_config(CONFIGS / "multi30k_de_en.yaml")
    load_split(cfg, "test")
    assert seen == [("bentrevett/multi30k", None, "test")]


def test_hub_unknown_split_and_unreachable_hub_are_user_errors(monkeypatch):
    _fake_hub(monkeypatch, {"en": ["a"], "de": ["b"]}, [])
    with pytest.raises(UserError, match="cannot load split 'dev'"):
        load_pairs(DataConfig(path="org/data", src="de", tgt="en"), "dev")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'org/data' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        UserError,
        match="no local directory, and loading it as a Hugging Face Hub id failed.*ConnectionError",
    ):
        load_pairs(DataConfig(path="org/data", src="de", tgt="en"), "train")


@pytest.mark.skipif(not (SHARED_DATA / "multi30k").is_dir(), reason="needs ../shared/data/multi30k")
def test_real_multi30k_raw_files_load_through_the_config():
    cfg = load_config(
        CONFIGS / "multi30k_de_en_raw.yaml",
        [f"data.path={SHARED_DATA / 'multi30k'}"],
    )
    sizes = {split: len(load_split(cfg, split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 29000, "validation": 1014, "test": 1000}
    test = load_split(cfg, "test")
    assert test[0]["tgt"] == "A man in an orange hat starring at something."


def test_wmt14_config_streams_the_hub_translation_column(monkeypatch):
    """WMT-style Hub data (a `translation` column of {lang: text}) reaches the token store's
    reader as chunks of src/tgt columns."""
    seen = []
    rows = [{"de": de, "en": en} for de, en in PAIRS] + [{"de": "", "en": "orphan"}]
    _fake_hub(monkeypatch, {"translation": rows}, seen)
    cfg = load_config(CONFIGS / "wmt14_de_en.yaml")
    corpus = get_task(cfg.task).train_corpus(cfg)
    chunks = list(corpus.chunks())
    assert seen == [("wmt14", "de-en", "train")]
    assert [(de, en) for c in chunks for de, en in zip(c["src"], c["tgt"], strict=True)] == PAIRS
    assert corpus.count_rows() == len(PAIRS)
