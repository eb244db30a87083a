import json

import numpy as np
import pytest

from minitx.config import DataConfig, TokenizerConfig
from minitx.data.batching import (
    IGNORED,
    encode_pairs,
    make_batch,
    token_budget_batches,
)
from minitx.data.sources import load_pairs
from minitx.data.synthetic import english_words, german_words, number_pairs
from minitx.data.tokenizer import TextCodec, build_codecs, load_tokenizer_file, train_tokenizer
from minitx.errors import UserError

from conftest import PAIRS, write_parallel


def _data(path: str, src: str, tgt: str) -> DataConfig:
    return DataConfig(path=path, src=src, tgt=tgt)


def _as_pairs(dataset):
    return list(zip(dataset["src"], dataset["tgt"], strict=True))


@pytest.mark.parametrize("gz", [False, True])
def test_parallel_text_layout(tmp_path, gz):
    write_parallel(tmp_path, "train", PAIRS, gz=gz)
    assert _as_pairs(load_pairs(_data(str(tmp_path), "de", "en"), "train")) == PAIRS


def test_parallel_files_of_different_length_name_both_counts(tmp_path):
    write_parallel(tmp_path, "train", PAIRS)
    (tmp_path / "train.en").write_text("only one line\n")
    with pytest.raises(UserError, match=r"train.de has 6 lines, .*train.en has 1"):
        load_pairs(_data(str(tmp_path), "de", "en"), "train")


def test_missing_split_lists_what_exists(tmp_path):
    write_parallel(tmp_path, "train", PAIRS)
    with pytest.raises(UserError, match=r"no split 'valid'.*splits found: train"):
        load_pairs(_data(str(tmp_path), "de", "en"), "valid")


def test_missing_side_is_named(tmp_path):
    write_parallel(tmp_path, "train", PAIRS)
    (tmp_path / "train.en").unlink()
    with pytest.raises(UserError, match=r"no train.en or train.en.gz"):
        load_pairs(_data(str(tmp_path), "de", "en"), "train")


def test_empty_lines_are_skipped_not_fatal(tmp_path):
    write_parallel(tmp_path, "train", PAIRS + [("", "orphan"), ("waise", "  ")])
    assert len(load_pairs(_data(str(tmp_path), "de", "en"), "train")) == len(PAIRS)


def test_all_empty_split_is_an_error(tmp_path):
    write_parallel(tmp_path, "train", [("", ""), (" ", "x")])
    with pytest.raises(UserError, match="no non-empty sentence pairs"):
        load_pairs(_data(str(tmp_path), "de", "en"), "train")


def test_non_utf8_file_is_a_user_error(tmp_path):
    write_parallel(tmp_path, "train", PAIRS)
    (tmp_path / "train.de").write_bytes(b"gr\xfc\xdfe\n" * len(PAIRS))
    with pytest.raises(UserError, match="not UTF-8"):
        load_pairs(_data(str(tmp_path), "de", "en"), "train")


def test_csv_tsv_jsonl_parquet_layouts(tmp_path):
    import datasets

    table = datasets.Dataset.from_dict(
        {"de": [p[0] for p in PAIRS], "en": [p[1] for p in PAIRS], "id": list(range(6))}
    )
    (tmp_path / "csv").mkdir()
    table.to_csv(tmp_path / "csv" / "train.csv", index=False)
    (tmp_path / "tsv").mkdir()
    (tmp_path / "tsv" / "train.tsv").write_text(
        "de\ten\n" + "".join(f"{s}\t{t}\n" for s, t in PAIRS)
    )
    (tmp_path / "jsonl").mkdir()
    table.to_json(tmp_path / "jsonl" / "train.jsonl", lines=True)
    (tmp_path / "parquet").mkdir()
    table.to_parquet(tmp_path / "parquet" / "train.parquet")
    for layout in ("csv", "tsv", "jsonl", "parquet"):
        loaded = load_pairs(_data(str(tmp_path / layout), "de", "en"), "train")
        assert loaded.column_names == ["src", "tgt"], layout
        assert _as_pairs(loaded) == PAIRS, layout


def test_translation_dict_column(tmp_path):
    rows = [{"translation": {"de": s, "en": t}} for s, t in PAIRS]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _as_pairs(load_pairs(_data(str(tmp_path), "de", "en"), "train")) == PAIRS
    with pytest.raises(UserError, match=r"translation column has languages \['de', 'en'\]"):
        load_pairs(_data(str(tmp_path), "fr", "en"), "train")


def test_missing_column_lists_columns(tmp_path):
    (tmp_path / "train.tsv").write_text(
        "source\ttarget\n" + "".join(f"{s}\t{t}\n" for s, t in PAIRS)
    )
    with pytest.raises(
        UserError, match=r"no column 'de' or 'en'; columns are \['source', 'target'\]"
    ):
        load_pairs(_data(str(tmp_path), "de", "en"), "train")


def test_missing_local_directory(tmp_path):
    with pytest.raises(UserError, match="data directory not found"):
        load_pairs(_data(str(tmp_path / "nowhere"), "de", "en"), "train")


def test_synthetic_task_is_deterministic_and_splits_are_disjoint():
    a, b = number_pairs(300, seed=5), number_pairs(300, seed=5)
    assert a == b
    assert len(a["train"]["src"]) == 300 and len(a["test"]["src"]) == 500
    assert not set(a["train"]["src"]) & set(a["test"]["src"])


def test_synthetic_numbers_of_every_length_are_common():
    """Short numbers are not the 0.1% that uniform sampling over 0-999,999 would give."""
    train = number_pairs(20_000, seed=1)["train"]["src"]
    below_1000 = [s for s in train if "thousand" not in s]
    assert 0.03 < len(below_1000) / len(train) < 0.06  # about 950 of the 1,000 such numbers


def test_synthetic_task_reorders_units_before_tens():
    assert english_words(72) == "seventy two" and german_words(72) == "zwei und siebzig"
    assert german_words(21_001) == "ein und zwanzig tausend eins"
    assert english_words(305_018) == "three hundred five thousand eighteen"


def test_tokenizer_round_trip_and_special_ids(tmp_path):
    texts = [s for pair in PAIRS for s in pair] * 3
    codec = TextCodec(train_tokenizer(texts, "bpe", 80, 1))
    assert (codec.pad_id, codec.unk_id, codec.bos_id, codec.eos_id) == (0, 1, 2, 3)
    sentences = ["ein hund rennt im park", "the man rides a bike"]
    assert codec.decode(codec.encode(sentences)) == sentences
    codec.tokenizer.save(str(tmp_path / "tok.json"))
    reloaded = TextCodec(load_tokenizer_file(tmp_path / "tok.json"))
    assert reloaded.encode(sentences) == codec.encode(sentences)


def test_unigram_and_separate_vocabularies():
    tokenizer = TokenizerConfig(type="unigram", vocab_size=40, min_frequency=1)
    codecs = build_codecs([p[0] for p in PAIRS] * 3, [p[1] for p in PAIRS] * 3, tokenizer, False)
    assert not codecs.joint
    assert codecs.tgt.decode(codecs.tgt.encode(["a dog runs"])) == ["a dog runs"]


def test_broken_tokenizer_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="not a valid tokenizer.json"):
        load_tokenizer_file(tmp_path / "tokenizer.json")


def test_batch_shapes_and_special_tokens():
    batch = make_batch([[5, 6], [7]], [[8, 9, 10], [11]], pad_id=0, bos_id=2, eos_id=3)
    assert batch.src.tolist() == [[5, 6, 3], [7, 3, 0]]
    assert batch.tgt_in.tolist() == [[2, 8, 9, 10], [2, 11, 0, 0]]
    assert batch.tgt_out.tolist() == [[8, 9, 10, 3], [11, 3, IGNORED, IGNORED]]
    assert batch.n_targets == 6


def test_token_budget_batches_cover_every_pair_once_within_budget():
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(1, 60, 2000), rng.integers(1, 60, 2000)
    batches = token_budget_batches([tgt + 1, src + 1], 1024, seed=1)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(2000))
    for batch in batches:
        longest = max((src[batch] + 1).max(), (tgt[batch] + 1).max())
        assert len(batch) == 1 or len(batch) * longest <= 1024
    real = sum(int((tgt[batch] + 1).sum()) for batch in batches)
    padded = sum(len(batch) * int((tgt[batch] + 1).max()) for batch in batches)
    assert 1 - real / padded < 0.05  # target padding, the side batches sort by first


def _greedy_batches(widths, batch_tokens, seed):
    """The plain loop token_budget_batches replaces: add rows while rows × widest fits."""
    n = len(widths[0])
    tie_break = np.random.default_rng(seed).permutation(n) if seed is not None else np.arange(n)
    order = np.lexsort((tie_break, *reversed(widths)))
    width = np.max(np.stack(widths), axis=0)
    batches, start = [], 0
    while start < n:
        end, longest = start, 0
        while end < n:
            candidate = max(longest, width[order[end]])
            if (end - start + 1) * candidate > batch_tokens and end > start:
                break
            longest, end = candidate, end + 1
        batches.append(order[start:end].tolist())
        start = end
    if seed is not None:
        batches = [batches[i] for i in np.random.default_rng(seed + 1).permutation(len(batches))]
    return batches


@pytest.mark.parametrize("trial", range(6))
def test_token_budget_batches_equal_the_greedy_loop(trial):
    """Sorted by target, the widest side is not sorted: the vectorised cut must still match."""
    rng = np.random.default_rng(trial)
    n, budget = int(rng.integers(1, 800)), int(rng.integers(1, 700))
    widths = [rng.integers(1, 90, n), rng.integers(1, 90, n)][: 1 + trial % 2]
    for seed in (None, trial):
        cut = [b.tolist() for b in token_budget_batches(widths, budget, seed)]
        assert cut == _greedy_batches(widths, budget, seed)


def test_batch_order_changes_with_seed_and_is_reproducible():
    lengths = np.arange(500) % 37 + 1
    a = token_budget_batches([lengths], 256, seed=1)
    b = token_budget_batches([lengths], 256, seed=1)
    c = token_budget_batches([lengths], 256, seed=2)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert [x.tolist() for x in a] != [x.tolist() for x in c]


def test_encode_pairs_filters_long_training_pairs(tmp_path):
    write_parallel(tmp_path, "train", PAIRS)
    dataset = load_pairs(_data(str(tmp_path), "de", "en"), "train")
    codec = TextCodec(train_tokenizer([s for p in PAIRS for s in p], "bpe", 60, 1))
    everything = encode_pairs(dataset, codec, codec)
    longest = sorted(
        max(len(s), len(t)) for s, t in zip(everything.src_ids, everything.tgt_ids, strict=True)
    )
    limit = longest[len(longest) // 2]
    short = encode_pairs(dataset, codec, codec, max_len=limit)
    assert len(everything) == len(PAIRS)
    assert 0 < len(short) < len(PAIRS)
    assert all(
        len(s) <= limit and len(t) <= limit
        for s, t in zip(short.src_ids, short.tgt_ids, strict=True)
    )


def test_table_cells_stay_text(tmp_path):
    rows = [("None", "n/a"), ("007", "1.50"), ("NA", "null")]
    (tmp_path / "train.tsv").write_text("de\ten\n" + "".join(f"{s}\t{t}\n" for s, t in rows))
    assert _as_pairs(load_pairs(_data(str(tmp_path), "de", "en"), "train")) == rows
