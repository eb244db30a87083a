"""Steerable decoding: target prefixes, lexical constraints, banned phrases and ensembles, through
the searches, the Python API, `minitx translate`/`eval` and `minitx serve`."""

from __future__ import annotations

import json

import pytest
import torch

import minitx
from minitx.errors import UserError
from minitx.inference.steering import Steering, tokenizations

from test_cli import assert_user_error
from test_cli import minitx as run_cli

SOURCES = ["ein hund rennt", "eine katze schläft", "ein kind spielt im park", "zwei männer gehen"]


@pytest.fixture(scope="module")
def model(tiny_translation_run):
    return minitx.load(tiny_translation_run.run)


def _texts(found) -> list[list[str]]:
    return [[h.text for h in t.hypotheses] for t in found]


def _tokens(found) -> list[list[list[int]]]:
    return [[h.tokens for h in t.hypotheses] for t in found]


def _contains(tokens: list[int], phrase: tuple[int, ...]) -> bool:
    return any(tuple(tokens[i : i + len(phrase)]) == phrase for i in range(len(tokens)))


DECODINGS = [
    {"beam_size": 1},
    {"beam_size": 3, "n_best": 2},
    {"sample": True, "n_best": 2, "seed": 3},
]


@pytest.mark.parametrize("options", DECODINGS)
def test_no_steering_is_exactly_the_plain_search(model, options):
    plain = model.translate(SOURCES, **options)
    empty = model.translate(SOURCES, steering=[Steering(), None, Steering(), None], **options)
    assert _tokens(empty) == _tokens(plain)
    assert [[h.score for h in t.hypotheses] for t in empty] == [
        [h.score for h in t.hypotheses] for t in plain
    ]


def test_a_prefix_of_the_greedy_output_gives_the_greedy_output(model):
    plain = model.translate(SOURCES, beam_size=1)
    codec = model.codecs.tgt
    for k in (1, 2):
        prefixes = [Steering(target_prefix=codec.decode([t.hypotheses[0].tokens[:k]])[0])
                    for t in plain]  # fmt: skip
        steered = model.translate(SOURCES, beam_size=1, steering=prefixes)
        assert _tokens(steered) == _tokens(plain)
        for got, want in zip(steered, plain, strict=True):
            assert got.hypotheses[0].log_prob == pytest.approx(want.hypotheses[0].log_prob, 1e-5)


@pytest.mark.parametrize("options", DECODINGS)
def test_every_output_starts_with_its_prefix_scored_and_the_cache_changes_nothing(model, options):
    from minitx.inference.decode import translate
    from minitx.inference.steering import steering_tokens

    prefixes = ["a dog", "", "the woman reads", "two"]
    steering = [Steering(target_prefix=p) for p in prefixes]
    found = model.translate(SOURCES, steering=steering, **options)
    for prefix, translation in zip(prefixes, found, strict=True):
        wanted = model.codecs.tgt.encode([prefix])[0]
        assert all(h.tokens[: len(wanted)] == wanted for h in translation.hypotheses)
    decode = model.decode_config(**options)
    inputs = steering_tokens(steering, model.codecs.tgt, 8)
    src_ids = model.codecs.src.encode(SOURCES)
    network, codecs, compute = model.engine.model, model.codecs, model.compute
    cached = translate(network, src_ids, codecs, decode, compute, True, inputs)
    uncached = translate(network, src_ids, codecs, decode, compute, False, inputs)
    assert [[h.tokens for h in t] for t in cached] == [[h.tokens for h in t] for t in uncached]
    assert [h.log_prob for t in cached for h in t] == pytest.approx(
        [h.log_prob for t in uncached for h in t], abs=1e-4
    )


CONSTRAINED = [
    Steering(constraints=("park",)),
    Steering(constraints=("the woman", "book")),
    Steering(constraints=("a cat", "sleeps", "dog"), target_prefix="two"),
    None,
]


@pytest.mark.parametrize("beam", [2, 4])
def test_every_constrained_hypothesis_holds_every_constraint(model, beam):
    found = model.translate(SOURCES, beam_size=beam, n_best=2, steering=CONSTRAINED)
    codec = model.codecs.tgt
    for steering, translation in zip(CONSTRAINED, found, strict=True):
        assert translation.hypotheses
        for hypothesis in translation.hypotheses:
            for phrase in steering.constraints if steering else ():
                assert _contains(hypothesis.tokens, tuple(codec.encode([phrase])[0]))
                assert phrase in hypothesis.text
            if steering and steering.target_prefix:
                assert hypothesis.text.startswith(steering.target_prefix)


def test_a_banned_phrase_never_appears_in_any_spelling(model):
    plain = model.translate(SOURCES, beam_size=3, n_best=3)
    # ban a word each plain output used
    words = [t.hypotheses[0].text.split()[-1].strip(".") or "a" for t in plain]
    steering = [Steering(banned=(word,)) for word in words]
    for options in DECODINGS:
        found = model.translate(SOURCES, steering=steering, **options)
        for word, translation in zip(words, found, strict=True):
            spellings = tokenizations(model.codecs.tgt, word)
            for hypothesis in translation.hypotheses:
                assert not any(_contains(hypothesis.tokens, s) for s in spellings)


def test_batched_equals_one_by_one(model):
    steering = [*CONSTRAINED[:3], Steering(target_prefix="a", banned=("dog",))]
    together = model.translate(SOURCES, beam_size=3, steering=steering)
    alone = [
        model.translate([text], beam_size=3, steering=[one])[0]
        for text, one in zip(SOURCES, steering, strict=True)
    ]
    assert _tokens(together) == _tokens(alone)


def test_tokenizations_include_other_splits_and_punctuated_last_pieces(model):
    codec = model.codecs.tgt
    own = tuple(codec.encode(["dog"])[0])
    spellings = tokenizations(codec, "dog")
    assert own in spellings
    for spelling in spellings:
        text = "".join(codec.tokenizer.id_to_token(i) for i in spelling)
        assert text.startswith("▁dog") and not any(c.isalnum() for c in text[len("▁dog") :])
    vocabulary = codec.tokenizer.get_vocab()
    if "▁d" in vocabulary and "og" in vocabulary:
        assert (vocabulary["▁d"], vocabulary["og"]) in spellings


@pytest.mark.parametrize(
    ("steering", "options", "fragment"),
    [
        (Steering(constraints=("日本",)), {"beam_size": 2}, "lacks"),
        (Steering(constraints=(" ",)), {"beam_size": 2}, "empty phrase"),
        (Steering(constraints=("dog",) * 9), {"beam_size": 2}, "at most 8"),
        (Steering(constraints=("a dog runs " * 8,)), {"beam_size": 2}, "may have"),
        (Steering(target_prefix="a dog runs " * 8), {"beam_size": 1}, "may have"),
        (Steering(constraints=("dog",)), {"beam_size": 1}, "need beam search"),
        (Steering(constraints=("dog",)), {"sample": True}, "need beam search"),
    ],
)
def test_impossible_requests_are_one_clear_error(model, steering, options, fragment):
    with pytest.raises(UserError, match=fragment):
        model.translate(["ein hund rennt"], steering=[steering], **options)


@pytest.mark.parametrize("combine", ["mean_prob", "mean_log_prob"])
def test_an_ensemble_of_a_run_with_itself_is_that_run(model, tiny_translation_run, combine):
    run = tiny_translation_run.run
    assert minitx.load([run]).members == ()
    pair = minitx.load([run, run])
    assert len(pair.members) == 2
    for options in DECODINGS[:2]:
        alone = model.translate(SOURCES, **options)
        together = pair.translate(SOURCES, ensemble_combine=combine, **options)
        assert _tokens(together) == _tokens(alone)
        assert [h.score for t in together for h in t.hypotheses] == pytest.approx(
            [h.score for t in alone for h in t.hypotheses], abs=1e-4
        )


def test_an_ensemble_combines_two_models_distributions(tiny_translation_run):
    """Two different models: the ensemble's first-step log-probabilities are the chosen mean."""
    from minitx.inference.ensemble import Ensemble

    a = minitx.load(tiny_translation_run.run).engine.model
    b = minitx.load(tiny_translation_run.run, checkpoint="last").engine.model
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in b.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    src = torch.tensor([[5, 6, 7, 2]])
    bos = torch.tensor([[1]])
    each = [torch.log_softmax(m(src, bos)[:, -1].float(), -1) for m in (a, b)]
    with torch.no_grad():
        mean_prob = Ensemble([a, b], "mean_prob")(src, bos)[:, -1]
        mean_log = Ensemble([a, b], "mean_log_prob")(src, bos)[:, -1]
    expected = torch.log((each[0].exp() + each[1].exp()) / 2)
    torch.testing.assert_close(mean_prob, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(mean_log, torch.log_softmax((each[0] + each[1]) / 2, -1))


def test_an_ensemble_refuses_runs_of_other_vocabularies(tiny_translation_run, tmp_path):
    other = tmp_path / "other"
    result = run_cli("train", tiny_translation_run.config, "--run-dir", other, "-q",
                     "--set", "tokenizer.type=unigram", "--set", "train.max_steps=2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = run_cli("translate", tiny_translation_run.run, other, "ein hund rennt", "-q")
    assert_user_error(result, "different src vocabularies")


def test_translate_options_and_jsonl_input(tiny_translation_run, tmp_path):
    run = tiny_translation_run.run
    result = run_cli("translate", run, "ein hund rennt", "--beam", "2", "--prefix", "a dog",
                     "--constraint", "park", "--ban", "cat", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("a dog") and "park" in result.stdout
    lines = tmp_path / "in.jsonl"
    lines.write_text(
        json.dumps({"text": "ein hund rennt", "constraints": ["book"]}) + "\n"
        + json.dumps({"text": "eine katze schläft", "target_prefix": "the"}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    result = run_cli("translate", run, "-i", lines, "--input-format", "jsonl", "--beam", "2",
                     "--format", "jsonl", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert "book" in first["hypotheses"][0]["text"]
    assert second["hypotheses"][0]["text"].startswith("the")
    lines.write_text('{"text": "x", "constrains": ["a"]}\n', encoding="utf-8")
    result = run_cli("translate", run, "-i", lines, "--input-format", "jsonl", "-q")
    assert_user_error(result, "unknown field 'constrains'")
    assert_user_error(run_cli("translate", run, "x", "--ban", "", "-q"), "empty phrase")


def test_eval_with_an_ensemble_and_a_steering_file(tiny_translation_run, tmp_path):
    run = tiny_translation_run.run
    result = run_cli("eval", run, "--ensemble", run, "--beam", "2", "--json", "-q")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["ensemble"]) == 2 and "/eval/ensemble/" in report["written"]
    alone = json.loads(run_cli("eval", run, "--beam", "2", "--json", "-q").stdout)
    assert report["bleu"] == alone["bleu"] and report["loss"] == pytest.approx(alone["loss"], 1e-3)
    pairs = minitx.load(run).task.load_split(minitx.load(run).config, "test")
    steer = tmp_path / "steer.jsonl"
    steer.write_text("".join(json.dumps({"constraints": ["park"]}) + "\n" for _ in pairs["src"]))
    result = run_cli("eval", run, "--steer", steer, "--beam", "2", "--json", "-q")
    assert result.returncode == 0, result.stderr
    hypotheses = (run / "eval" / "test.hyp").read_text(encoding="utf-8").splitlines()
    assert hypotheses and all("park" in h for h in hypotheses)
    steer.write_text(json.dumps({"constraints": ["park"]}) + "\n")
    assert_user_error(
        run_cli("eval", run, "--steer", steer, "--beam", "2", "-q"), "one line per pair"
    )


def test_an_error_names_the_input_by_its_place_in_the_input(model):
    texts = ["ein kind spielt im park", "ein hund", "eine katze schläft"]
    steering = [None, Steering(target_prefix="a dog runs " * 8), None]  # the shortest source
    with pytest.raises(UserError, match=r"^input 2: its target prefix has \d+ tokens"):
        model.translate(texts, beam_size=2, steering=steering)
    steering = [Steering(constraints=("dog",)), None, Steering(constraints=("a dog runs " * 8,))]
    with pytest.raises(UserError, match=r"^input 3: its constraints"):
        model.translate(texts, beam_size=2, steering=steering)


def test_what_the_prefix_already_meets_needs_no_more_room(model):
    prefix = "a dog runs"
    room = len(model.codecs.tgt.encode([prefix])[0]) + 1  # the prefix and EOS, nothing more
    options = {"beam_size": 2, "max_len_ratio": 0.0, "max_len_offset": room}
    found = model.translate(
        ["ein hund rennt"], steering=Steering(prefix, constraints=("dog",)), **options
    )
    assert found[0].text.startswith(prefix) and "dog" in found[0].text
    with pytest.raises(UserError, match="its constraints"):
        model.translate(["ein hund rennt"], steering=Steering(prefix, ("cat",)), **options)
