"""Word alignments against values worked out by hand: subword pieces merged into words, argmax
links from small cross-attention maps, the alignment error rate (Och & Ney, 2003), and the gold
alignments of the synthetic number task."""

from __future__ import annotations

import random

import pytest
import torch

from minitx.data.synthetic import (
    DE_ONES,
    DE_TEENS,
    DE_TENS,
    EN_ONES,
    EN_TEENS,
    EN_TENS,
    english_words,
    german_words,
    number_alignments,
)
from minitx.inference.alignments import (
    alignment_error_rate,
    format_alignments,
    word_alignments,
    word_starts,
)

# --- word_starts -------------------------------------------------------------------------------


def test_word_starts_merges_pieces_and_skips_specials():
    tokens = ["<s>", "▁sev", "enty", "▁two", "▁th", "ous", "and", "</s>", "<pad>", "<pad>"]
    assert word_starts(tokens) == [-1, 0, 0, 1, 2, 2, 2, -1, -1, -1]


def test_first_token_starts_a_word_without_the_marker():
    assert word_starts(["sev", "enty", "▁two"]) == [0, 0, 1]
    assert word_starts(["<s>", "enty", "▁two", "s"]) == [-1, 0, 1, 1]


def test_unknown_piece_continues_its_word():
    assert word_starts(["▁", "<unk>", "▁a", "<unk>"]) == [0, 0, 1, 1]


def test_word_starts_of_nothing_and_only_specials():
    assert word_starts([]) == []
    assert word_starts(["<s>", "</s>"]) == [-1, -1]


# --- word_alignments ---------------------------------------------------------------------------

SRC = ["▁sev", "enty", "▁two", "</s>"]  # words 0 0 1 -
TGT = ["▁zwei", "▁und", "▁sieb", "zig", "</s>"]  # words 0 1 2 2 -


def test_argmax_links_merged_into_words():
    weights = torch.tensor(
        [
            [0.10, 0.10, 0.70, 0.10],  # ▁zwei → ▁two: (1, 0)
            [0.10, 0.05, 0.15, 0.70],  # ▁und: EOS is largest but never a candidate → ▁two: (1, 1)
            [0.60, 0.10, 0.10, 0.20],  # ▁sieb → ▁sev: (0, 2)
            [0.10, 0.50, 0.10, 0.30],  # zig → enty, also word 0: (0, 2) again
            [0.90, 0.05, 0.05, 0.00],  # target EOS: no word, no link
        ]
    )
    assert word_alignments(weights, SRC, TGT) == [(0, 2), (1, 0), (1, 1)]


def test_pieces_of_one_word_take_the_union_of_their_links():
    weights = torch.tensor(
        [
            [0.10, 0.10, 0.70, 0.10],  # ▁zwei → ▁two: (1, 0)
            [0.40, 0.30, 0.20, 0.10],  # ▁und → ▁sev: (0, 1)
            [0.60, 0.10, 0.10, 0.20],  # ▁sieb → ▁sev: (0, 2)
            [0.10, 0.20, 0.60, 0.10],  # zig → ▁two: (1, 2)
            [0.10, 0.10, 0.10, 0.70],
        ]
    )
    assert word_alignments(weights, SRC, TGT) == [(0, 1), (0, 2), (1, 0), (1, 2)]


def test_eos_row_and_bos_are_ignored_on_both_sides():
    # a source that starts with <s> shifts the columns: word 0 is column 1
    src = ["<s>", "▁a", "b", "</s>"]
    tgt = ["▁x", "</s>"]
    weights = torch.tensor([[0.9, 0.0, 0.05, 0.05], [0.0, 1.0, 0.0, 0.0]])
    assert word_alignments(weights, src, tgt) == [(0, 0)]


def test_ties_go_to_the_earlier_source_token():
    weights = torch.tensor([[0.4, 0.4, 0.2], [0.5, 0.25, 0.25]])
    assert word_alignments(weights, ["▁a", "▁b", "</s>"], ["▁x", "</s>"]) == [(0, 0)]


def test_a_source_of_only_eos_links_nothing():
    assert word_alignments(torch.tensor([[1.0], [1.0]]), ["</s>"], ["▁x", "</s>"]) == []


def test_weights_must_match_the_tokens():
    with pytest.raises(ValueError, match=r"expected \(5, 4\)"):
        word_alignments(torch.ones(4, 4), SRC, TGT)
    with pytest.raises(ValueError, match="average over heads"):
        word_alignments(torch.ones(2, 5, 4), SRC, TGT)


def test_moses_format():
    assert format_alignments([(0, 2), (1, 0), (1, 1)]) == "0-2 1-0 1-1"
    assert format_alignments([]) == ""


# --- alignment_error_rate ----------------------------------------------------------------------


def test_perfect_alignment_has_zero_error():
    gold = [{(0, 0), (1, 2), (2, 1)}, {(0, 0)}]
    assert alignment_error_rate([set(s) for s in gold], gold) == 0.0


def test_disjoint_alignment_has_error_one():
    assert alignment_error_rate([{(0, 1), (1, 0)}], [{(0, 0), (1, 1)}]) == 1.0


def test_partial_alignment_by_hand():
    # |A∩S| = 1, |A∩P| = 1 (P = S), |A| = 3, |S| = 2: 1 - 2/5
    predicted = [{(0, 0), (1, 1), (2, 2)}]
    sure = [{(0, 0), (1, 2)}]
    assert alignment_error_rate(predicted, sure) == pytest.approx(0.6)


def test_possible_links_count_for_the_prediction_only():
    # S = {(0,0)}, P = S + {(1,1), (2,1)}: |A∩S| = 1, |A∩P| = 2, |A| = 3, |S| = 1: 1 - 3/4
    predicted = [{(0, 0), (1, 1), (2, 2)}]
    sure = [{(0, 0)}]
    possible = [{(0, 0), (1, 1), (2, 1)}]
    assert alignment_error_rate(predicted, sure, possible) == pytest.approx(0.25)
    assert alignment_error_rate(predicted, sure) == pytest.approx(1 - 2 / 4)


def test_counts_are_summed_over_the_corpus_not_averaged():
    # sentence rates 0 and 1 would average 0.5; summed: 1 - (1 + 1) / (4 + 2) = 2/3
    predicted = [{(0, 0)}, {(0, 0), (1, 1), (2, 2)}]
    sure = [{(0, 0)}, {(0, 1)}]
    assert alignment_error_rate(predicted, sure) == pytest.approx(2 / 3)


def test_aer_rejects_mismatched_input():
    with pytest.raises(ValueError, match="one set per sentence"):
        alignment_error_rate([{(0, 0)}], [{(0, 0)}, {(1, 1)}])
    with pytest.raises(ValueError, match="not possible"):
        alignment_error_rate([{(0, 0)}], [{(0, 0), (1, 1)}], [{(0, 0)}])
    with pytest.raises(ValueError, match="undefined"):
        alignment_error_rate([set()], [set()])


# --- number_alignments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "english", "german", "links"),
    [
        (0, "zero", "null", {(0, 0)}),
        (72, "seventy two", "zwei und siebzig", {(0, 2), (1, 0)}),
        (13, "thirteen", "dreizehn", {(0, 0)}),
        (70, "seventy", "siebzig", {(0, 0)}),
        (1000, "one thousand", "ein tausend", {(0, 0), (1, 1)}),
        (
            342,
            "three hundred forty two",
            "drei hundert zwei und vierzig",
            {(0, 0), (1, 1), (2, 4), (3, 2)},
        ),
        (202, "two hundred two", "zwei hundert zwei", {(0, 0), (1, 1), (2, 2)}),
        (2002, "two thousand two", "zwei tausend zwei", {(0, 0), (1, 1), (2, 2)}),
        (
            71506,
            "seventy one thousand five hundred six",
            "ein und siebzig tausend fünf hundert sechs",
            {(0, 2), (1, 0), (2, 3), (3, 4), (4, 5), (5, 6)},
        ),
        (
            21021,
            "twenty one thousand twenty one",
            "ein und zwanzig tausend ein und zwanzig",
            {(0, 2), (1, 0), (2, 3), (3, 6), (4, 4)},
        ),
    ],
)
def test_number_alignments_by_hand(n, english, german, links):
    assert english_words(n) == english and german_words(n) == german  # the words the links index
    assert number_alignments(n) == links


def _translations() -> dict[str, set[str]]:
    """Which German words each English word may be linked to."""
    table = {"hundred": {"hundert"}, "thousand": {"tausend"}, "zero": {"null"}}
    for en, de in zip(EN_ONES[1:], DE_ONES[1:], strict=True):
        table[en] = {de, "ein"} if de == "eins" else {de}
    table.update({en: {de} for en, de in zip(EN_TEENS, DE_TEENS, strict=True)})
    table.update({en: {de} for en, de in zip(EN_TENS[2:], DE_TENS[2:], strict=True)})
    return table


def _numbers() -> list[int]:
    rng = random.Random(0)
    return list(range(2000)) + rng.sample(range(2000, 1_000_000), 3000) + [999_999, 100_100]


def test_every_word_but_und_is_linked_once_to_its_translation():
    translations = _translations()
    for n in _numbers():
        english, german = english_words(n).split(), german_words(n).split()
        links = number_alignments(n)
        assert sorted(i for i, _ in links) == list(range(len(english))), n
        linked_german = sorted(j for _, j in links)
        assert linked_german == [j for j, word in enumerate(german) if word != "und"], n
        for i, j in links:
            assert german[j] in translations[english[i]], (n, english[i], german[j])
