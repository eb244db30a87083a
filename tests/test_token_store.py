"""The large-corpus data path: streamed corpora, the on-disk token store, tokenizer sampling and
batches made on a background thread."""

from __future__ import annotations

import os
import threading

import datasets
import numpy as np
import pytest

from minitx.config import DataConfig, TokenizerConfig
from minitx.data import token_store
from minitx.data.batching import encode_labelled, encode_pairs
from minitx.data.corpus import dataset_corpus, sample_rows, text_corpus
from minitx.data.prefetch import Prefetched
from minitx.data.run_data import load_run_data
from minitx.data.sources import load_labelled_texts, load_pairs
from minitx.data.tokenizer import build_codecs
from minitx.errors import UserError
from minitx.run_dir import RunDir
from minitx.tasks import get_task

from conftest import PAIRS, tiny_config, write_parallel, write_splits

MANY = [(f"{de} {i}", f"{en} {i}") for i in range(300) for de, en in PAIRS[i % 6 : i % 6 + 1]]


def _codecs(pairs):
    texts = [side for pair in pairs for side in pair]
    return build_codecs(texts, [], TokenizerConfig(vocab_size=200, min_frequency=1), joint=True)


TRANSLATION = get_task("translation")


def _config(data_dir, **data):
    return tiny_config(data_dir, data=data)


def train_corpus(cfg):
    return TRANSLATION.train_corpus(cfg)


@pytest.mark.parametrize("max_len", [None, 6])
def test_stored_pairs_equal_the_pairs_encoded_in_memory(tmp_path, max_len):
    write_parallel(tmp_path / "data", "train", MANY, gz=True)
    codecs = _codecs(MANY)
    corpus = text_corpus(tmp_path / "data/train.de.gz", tmp_path / "data/train.en.gz", "train")
    store = tmp_path / "store"
    token_store.store_pairs(store, corpus, codecs, max_len, "train")
    stored = token_store.read_pairs(store)
    in_memory = encode_pairs(
        load_pairs(DataConfig(path=str(tmp_path / "data"), src="de", tgt="en"), "train"),
        codecs.src,
        codecs.tgt,
        max_len,
    )
    assert isinstance(stored.src.ids, np.memmap) and isinstance(stored.tgt.ids, np.memmap)
    assert 0 < len(stored) == len(in_memory) <= len(MANY)
    everything = range(len(stored))
    assert stored.src.rows(everything) == in_memory.src_ids
    assert stored.tgt.rows(everything) == in_memory.tgt_ids
    groups = stored.batch_groups(128, seed=1)
    assert [g.tolist() for g in groups] == [g.tolist() for g in in_memory.batch_groups(128, 1)]
    first = stored.batch(groups[0].tolist(), codecs.tgt)
    assert (
        first.tgt_out.tolist() == in_memory.batch(groups[0].tolist(), codecs.tgt).tgt_out.tolist()
    )
    assert first.n_targets == stored.n_targets(groups[0])


def test_the_text_stream_reads_as_the_dataset_does(tmp_path):
    """Empty pairs are dropped alike; only "\\n" ends a line (a stray "\\r" would shift a parallel
    corpus); files of different lengths are refused before anything is encoded."""
    pairs = [*PAIRS, ("", "orphan"), ("mit\rwagenrücklauf", "with\rcarriage return")]
    write_parallel(tmp_path, "train", pairs)
    corpus = text_corpus(tmp_path / "train.de", tmp_path / "train.en", "train")
    streamed = [
        pair for chunk in corpus.chunks() for pair in zip(chunk["src"], chunk["tgt"], strict=True)
    ]
    dataset = load_pairs(DataConfig(path=str(tmp_path), src="de", tgt="en"), "train")
    assert (
        streamed
        == list(zip(dataset["src"], dataset["tgt"], strict=True))
        == [
            *PAIRS,
            pairs[-1],
        ]
    )
    assert corpus.count_rows() == len(pairs)
    (tmp_path / "train.en").write_text("one line\n")
    short = text_corpus(tmp_path / "train.de", tmp_path / "train.en", "train")
    with pytest.raises(UserError, match="differ in length"):
        short.count_rows()
    with pytest.raises(UserError, match="differ in length"):
        list(short.chunks())


def test_a_stored_split_is_found_again_and_follows_the_corpus(tmp_path, monkeypatch):
    data = write_splits(tmp_path / "data")
    cfg = _config(data)
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    first = load_run_data(cfg, run, ("train",), TRANSLATION)
    (first_store,) = run.cache_dir.iterdir()
    built = []
    real_build = token_store._build
    monkeypatch.setattr(token_store, "_build", lambda *a: built.append(a) or real_build(*a))
    again = load_run_data(cfg, run, ("train",), TRANSLATION)
    assert built == []  # mapped, not encoded again
    assert again.splits["train"].src.rows([0, 1]) == first.splits["train"].src.rows([0, 1])
    write_parallel(data, "train", PAIRS * 4, gz=True)  # a changed corpus: encoded anew
    stat = (data / "train.de.gz").stat()
    os.utime(data / "train.de.gz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = load_run_data(cfg, run, ("train",), TRANSLATION)
    assert len(built) == 1 and len(changed.splits["train"]) == len(PAIRS) * 4
    (store,) = run.cache_dir.iterdir()  # the stale store is removed
    assert store != first_store and token_store.is_stored(store)


@pytest.mark.parametrize("damage", ["unfinished", "truncated"])
def test_a_half_written_or_truncated_store_is_built_again(tmp_path, damage):
    data = write_splits(tmp_path / "data")
    cfg, run = _config(data), RunDir(tmp_path / "run")
    run.root.mkdir()
    stored = load_run_data(cfg, run, ("train",), TRANSLATION).splits["train"]
    expected = stored.src.rows(range(len(stored)))
    (store,) = run.cache_dir.iterdir()
    if damage == "unfinished":  # as if the writer died before finishing
        (store / token_store.DONE).unlink()
    ids = (store / "src.bin").read_bytes()
    (store / "src.bin").unlink()  # a new file: the one still mapped above stays intact
    (store / "src.bin").write_bytes(ids[:-4])  # one token short, as after a power loss
    assert not token_store.is_stored(store)
    rebuilt = load_run_data(cfg, run, ("train",), TRANSLATION).splits["train"]
    assert rebuilt.src.rows(range(len(rebuilt))) == expected


def test_a_chunk_that_keeps_no_rows_is_stored_as_nothing(tmp_path, monkeypatch):
    """Chunks of 5 pairs, the second all longer than data.max_len: the store skips it."""
    from minitx.data import corpus as corpus_module

    monkeypatch.setattr(corpus_module, "CHUNK_ROWS", 5)
    long = [("ein sehr langer satz " * 4, "a very long sentence " * 4)] * 5
    pairs = [*PAIRS[:5], *long, *PAIRS[:5], *long]  # the last chunk is filtered out too
    write_parallel(tmp_path / "data", "train", pairs)
    codecs = _codecs(pairs)
    corpus = text_corpus(tmp_path / "data/train.de", tmp_path / "data/train.en", "train")
    token_store.store_pairs(tmp_path / "store", corpus, codecs, 8, "train")
    stored = token_store.read_pairs(tmp_path / "store")
    assert stored.tgt.rows(range(len(stored))) == codecs.tgt.encode([en for _, en in PAIRS[:5]] * 2)


def test_only_the_building_rank_encodes(tmp_path):
    """The other ranks of a torchrun group map the store rank 0 built; one missing is a bug."""
    data = write_splits(tmp_path / "data")
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    with pytest.raises(RuntimeError, match="rank 0 should have built"):
        load_run_data(_config(data), run, ("train",), TRANSLATION, build_store=False)
    assert not run.cache_dir.exists()


def test_stored_labelled_texts_equal_the_in_memory_encoding(tmp_path):
    rows = [("pos", "a good film"), ("neg", "a bad film"), ("", "no label"), ("meh", "odd")] * 30
    (tmp_path / "train.tsv").write_text(
        "label\ttext\n" + "".join(f"{label}\t{text}\n" for label, text in rows)
    )
    dataset = load_labelled_texts(DataConfig(path=str(tmp_path)), "train")
    names = ["neg", "pos"]
    codecs = build_codecs(
        list(dataset["text"]), [], TokenizerConfig(vocab_size=40, min_frequency=1), True
    )
    token_store.store_labelled(
        tmp_path / "store", dataset_corpus(dataset), codecs, names, None, "train"
    )
    stored = token_store.read_labelled(tmp_path / "store")
    in_memory, _ = encode_labelled(dataset, codecs.src, names, "train")
    assert stored.labels.tolist() == in_memory.labels.tolist() == [1, 0] * 30
    assert stored.ids.rows(range(60)) == in_memory.ids.rows(range(60))


def test_tokenizer_texts_are_a_seeded_uniform_sample_in_corpus_order(tmp_path):
    table = datasets.Dataset.from_dict({"src": [f"s{i}" for i in range(5000)], "tgt": ["t"] * 5000})
    corpus = dataset_corpus(table)
    everything = sample_rows(corpus, ["src"], 10_000, seed=1)["src"]
    assert everything == table["src"][:]
    a = sample_rows(corpus, ["src", "tgt"], 1000, seed=1)
    b = sample_rows(corpus, ["src", "tgt"], 1000, seed=1)
    c = sample_rows(corpus, ["src", "tgt"], 1000, seed=2)
    picked = [int(text[1:]) for text in a["src"]]
    assert a == b and a != c and len(picked) == len(set(picked)) == 1000
    assert picked == sorted(picked)  # corpus order
    assert 300 < sum(i < 2500 for i in picked) < 700  # both halves: not just the first rows


def test_train_corpus_streams_text_files_and_reads_tables_through_datasets(tmp_path):
    data = write_splits(tmp_path / "text")
    assert isinstance(next(train_corpus(_config(data)).chunks()), dict)
    (tmp_path / "table").mkdir()
    (tmp_path / "table/train.jsonl").write_text(
        "".join(f'{{"de": "{de}", "en": "{en}"}}\n' for de, en in PAIRS)
    )
    chunk = next(train_corpus(_config(tmp_path / "table")).chunks())
    assert isinstance(chunk, datasets.Dataset) and chunk["src"][:] == [de for de, _ in PAIRS]


def test_prefetched_items_arrive_in_order_and_errors_reach_the_consumer():
    with Prefetched(iter(range(100)), depth=3) as items:
        assert list(items) == list(range(100))

    def failing():
        yield 1
        raise ValueError("broken batch")

    with Prefetched(failing()) as items:
        assert next(items) == 1
        with pytest.raises(ValueError, match="broken batch"):
            next(items)


def test_leaving_a_prefetch_early_stops_its_thread():
    before = threading.active_count()
    with Prefetched(iter(range(10**9)), depth=2) as items:
        assert next(items) == 0
    assert threading.active_count() == before
