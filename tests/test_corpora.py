"""Several training corpora (data.train_corpora): weights as repetitions, a source-side tag that is
one special token, and the config errors a user sees."""

from __future__ import annotations

import pytest
import yaml

from minitx.config import config_from_dict
from minitx.data.run_data import load_run_data
from minitx.errors import UserError
from minitx.run_dir import RunDir
from minitx.tasks import get_task

from conftest import (
    PAIRS,
    sentiment_config_yaml,
    tiny_config,
    tiny_config_dict,
    write_parallel,
    write_sentiment_splits,
    write_splits,
    write_tsv,
)

TRANSLATION = get_task("translation")
DISTILLED = [(de, en.replace("a ", "one ")) for de, en in PAIRS]


def _two_corpora(tmp_path, weight=2, tag="<kd>"):
    data = write_splits(tmp_path / "data")
    write_parallel(tmp_path / "distilled", "train", DISTILLED)
    corpora = [{"path": str(data)}, {"path": str(tmp_path / "distilled"), "weight": weight}]
    if tag:
        corpora[1]["tag"] = tag
    return tiny_config(data, data={"train_corpora": corpora})


def _train_split(cfg, tmp_path):
    run = RunDir(tmp_path / "run")
    run.root.mkdir(exist_ok=True)
    data = load_run_data(cfg, run, ("train",), TRANSLATION)
    return data, data.splits["train"]


def test_each_corpus_is_repeated_by_its_weight_and_its_sources_start_with_its_tag(tmp_path):
    data, train = _train_split(_two_corpora(tmp_path), tmp_path)
    original = len(PAIRS) * 5  # write_splits' training split
    assert len(train) == original + 2 * len(DISTILLED)
    codec = data.codecs.src
    tag_id = codec.tokenizer.token_to_id("<kd>")
    assert tag_id is not None and tag_id > codec.eos_id  # after minitx's own special tokens
    sources = train.src.rows(range(len(train)))
    targets = train.tgt.rows(range(len(train)))
    assert all(ids[0] != tag_id for ids in sources[:original])
    assert all(ids[0] == tag_id and tag_id not in ids[1:] for ids in sources[original:])
    # The tag is one token, and what follows it is the text encoded as it would be untagged.
    assert [ids[1:] for ids in sources[original:]] == 2 * codec.encode([de for de, _ in DISTILLED])
    assert data.codecs.tgt.decode(targets[original : original + 1]) == [DISTILLED[0][1]]
    assert codec.decode([sources[original]]) == [DISTILLED[0][0]]  # special: left out of text


def test_changing_a_weight_or_a_tag_encodes_the_corpora_anew(tmp_path):
    _, first = _train_split(_two_corpora(tmp_path, weight=2), tmp_path)
    _, again = _train_split(_two_corpora(tmp_path, weight=3), tmp_path)
    assert len(again) == len(first) + len(DISTILLED)


def test_a_run_made_without_a_tag_refuses_it_instead_of_splitting_it_into_subwords(tmp_path):
    _train_split(_two_corpora(tmp_path, tag=None), tmp_path)  # the run's tokenizer: no tag
    with pytest.raises(UserError, match=r"corpus tags \['<kd>'\] are not special tokens"):
        _train_split(_two_corpora(tmp_path, tag="<kd>"), tmp_path)


def test_labelled_corpora_combine_and_their_label_names_come_from_all_of_them(tmp_path):
    data = write_sentiment_splits(tmp_path / "sst")
    write_tsv(tmp_path / "extra/train.tsv", "sentence", [("neutral", "the film was a film")] * 4)
    raw = yaml.safe_load(sentiment_config_yaml(data))
    raw["data"]["train_corpora"] = [
        {"path": str(data)},
        {"path": str(tmp_path / "extra"), "tag": "<extra>"},
    ]
    cfg = config_from_dict(raw)
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    loaded = load_run_data(cfg, run, ("train",), get_task("classification"))
    assert "neutral" in loaded.labels
    tag_id = loaded.codecs.src.tokenizer.token_to_id("<extra>")
    train = loaded.splits["train"]
    rows = train.ids.rows(range(len(train)))  # <s> text </s>: the tag follows <s>
    assert sum(ids[1] == tag_id for ids in rows) == 4 and len(rows) == 240 + 4


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "d", "wieght": 2}, r"unknown key 'data\.train_corpora\[0\]\.wieght'"),
        ({"weight": 2}, r"data\.train_corpora\[0\]\.path is missing"),
        ({"path": "d", "weight": 0}, r"data\.train_corpora\[0\]\.weight: must be at least 1"),
        ({"path": "d", "weight": 1.5}, r"data\.train_corpora\[0\]\.weight: expected an integer"),
        ({"path": "d", "tag": "two words"}, r"data\.train_corpora\[0\]\.tag must be one word"),
        ({"path": "d", "tag": "</s>"}, r"tag '</s>' is one of minitx's own tokens"),
    ],
)
def test_a_bad_corpus_entry_is_named_in_the_error(tmp_path, entry, message):
    raw = tiny_config_dict(tmp_path, data={"train_corpora": [entry]})
    with pytest.raises(UserError, match=message):
        config_from_dict(raw)


def test_train_corpora_must_be_a_list_of_mappings(tmp_path):
    raw = tiny_config_dict(tmp_path, data={"train_corpora": {"path": "d"}})
    with pytest.raises(UserError, match=r"data\.train_corpora: expected a list of mappings"):
        config_from_dict(raw)
