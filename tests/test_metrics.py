"""Scores against values worked out by hand: corpus BLEU from its n-gram precisions and brevity
penalty (Papineni et al., 2002), exact match, perplexity, and classification precision/recall/F1."""

import math

import pytest

from minitx.metrics import classification_scores, exact_match, perplexity, translation_scores


def test_identical_corpus_scores_100_everywhere():
    sentences = ["the cat sat on the mat", "a dog runs in the park", "two men walk home"]
    scores = translation_scores(sentences, list(sentences))
    assert scores["bleu"] == 100.0
    assert scores["chrf"] == 100.0
    assert scores["exact_match"] == 100.0


def test_disjoint_corpus_scores_zero():
    # no word and no character in common
    scores = translation_scores(["abc def", "ghi jk"], ["xyz uvw", "pqr st"])
    assert scores["bleu"] == 0.0
    assert scores["chrf"] == 0.0
    assert scores["exact_match"] == 0.0


def test_bleu_is_cased():
    scores = translation_scores(["The Cat Sat Down"], ["the cat sat down"])
    assert scores["bleu"] == 0.0
    assert "case:mixed" in scores["bleu_signature"]
    assert "tok:13a" in scores["bleu_signature"]


def test_corpus_bleu_equals_the_formula_from_pooled_ngram_counts():
    hypotheses = ["the cat sat on the mat", "a dog runs fast"]
    references = ["the cat sat on the red mat", "a dog runs"]
    # Matched / proposed n-grams, summed over the corpus (not averaged per sentence):
    #   1-grams: 6/6 + 3/4 ("fast" unmatched)           = 9/10
    #   2-grams: 4/5 ("the mat") + 2/3 ("runs fast")    = 6/8
    #   3-grams: 3/4 ("on the mat") + 1/2               = 4/6
    #   4-grams: 2/3 ("sat on the mat") + 0/1           = 2/4
    precisions = [9 / 10, 6 / 8, 4 / 6, 2 / 4]
    hyp_len, ref_len = 6 + 4, 7 + 3  # equal lengths: no brevity penalty
    brevity = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    expected = 100 * brevity * math.exp(sum(math.log(p) for p in precisions) / 4)  # ≈ 68.87
    assert translation_scores(hypotheses, references)["bleu"] == pytest.approx(expected, abs=0.006)


def test_bleu_brevity_penalty_for_a_short_hypothesis():
    # 6 hypothesis words against 7 reference words: BP = exp(1 − 7/6)
    precisions = [6 / 6, 4 / 5, 3 / 4, 2 / 3]
    expected = 100 * math.exp(1 - 7 / 6) * math.prod(precisions) ** 0.25  # ≈ 67.32
    scores = translation_scores(["the cat sat on the mat"], ["the cat sat on the red mat"])
    assert scores["bleu"] == pytest.approx(expected, abs=0.006)


def test_exact_match_trims_surrounding_whitespace_only():
    hypotheses = ["a dog", "  a cat \n", "a  bird", "a fish"]
    references = ["a dog", "a cat", "a bird", "the fish"]
    # matches: 1 (identical), 2 (after trimming); 3 differs inside, 4 differs
    assert exact_match(hypotheses, references) == pytest.approx(0.5)
    assert translation_scores(hypotheses, references)["exact_match"] == 50.0
    assert exact_match(["x", "y", "z"], ["x", "q", "q"]) == pytest.approx(1 / 3)
    assert translation_scores(["x", "y", "z"], ["x", "q", "q"])["exact_match"] == 33.33


def test_exact_match_of_nothing_is_zero_and_lengths_must_agree():
    assert exact_match([], []) == 0.0
    with pytest.raises(ValueError):
        exact_match(["a", "b"], ["a"])


def test_perplexity_is_exp_of_the_loss_capped_at_exp_100():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert perplexity(2.5) == pytest.approx(12.182493960703473)  # e^2.5
    assert perplexity(100.0) == pytest.approx(2.6881171418161356e43)  # e^100
    assert perplexity(1e6) == perplexity(100.0)  # capped: no overflow
    assert math.isfinite(perplexity(float("inf")))


def test_classification_scores_from_a_hand_computed_confusion():
    names = ["a", "b", "c", "d", "e"]
    references = [0, 0, 0, 0, 1, 1, 2, 2]
    predictions = [0, 0, 0, 1, 1, 0, 0, 3]
    # rows: true class, columns: predicted class
    #   a: 3 right, 1 → b         b: 1 → a, 1 right         c: 1 → a, 1 → d (c never predicted)
    #   d: never true, predicted once                       e: neither true nor predicted
    scores = classification_scores(predictions, references, names)
    assert scores["confusion_matrix"]["labels"] == names
    assert scores["confusion_matrix"]["matrix"] == [
        [3, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 0, 0, 1, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]
    per_class = scores["per_class"]
    # a: precision 3/5 (3 of the 5 predicted a), recall 3/4, F1 = 2PR/(P+R) = 2/3
    assert per_class["a"] == {"precision": 60.0, "recall": 75.0, "f1": 66.67, "support": 4}
    assert per_class["b"] == {"precision": 50.0, "recall": 50.0, "f1": 50.0, "support": 2}
    assert per_class["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert per_class["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert per_class["e"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert scores["accuracy"] == 50.0  # 4 of 8
    # macro-F1 over a, b, c, d (present in references or predictions), not e: (2/3 + 1/2) / 4
    assert scores["macro_f1"] == round(100 * (2 / 3 + 1 / 2 + 0 + 0) / 4, 2)  # 29.17
    assert scores["macro_f1"] == 29.17


def test_perfect_classification():
    scores = classification_scores([1, 0, 1, 2], [1, 0, 1, 2], ["x", "y", "z"])
    assert scores["accuracy"] == 100.0
    assert scores["macro_f1"] == 100.0
    assert scores["per_class"]["y"] == {
        "precision": 100.0,
        "recall": 100.0,
        "f1": 100.0,
        "support": 2,
    }


def test_classification_of_nothing_scores_zero():
    scores = classification_scores([], [], ["x", "y"])
    assert scores["accuracy"] == 0.0 and scores["macro_f1"] == 0.0
    assert scores["confusion_matrix"]["matrix"] == [[0, 0], [0, 0]]
