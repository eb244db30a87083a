"""Every decoding option is declared once, in DecodeConfig: `minitx translate`, the HTTP
TranslateRequest and `Model.translate` take the same names with the same bounds and defaults, and
a command or request validates its options once, however many batches it decodes."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import typing

import pytest
import typer

from minitx.api import Model, load
from minitx.cli import app, main
from minitx.config import DecodeConfig
from minitx.errors import UserError
from minitx.inference.engines.ctranslate2 import BEAM_PATIENCE, _search_options
from minitx.serve.app import ServeOptions
from minitx.serve.schema import request_models

DECLARED = dataclasses.fields(DecodeConfig)
NAMES = [option.name for option in DECLARED]
BOUND_KEYS = ("min", "max", "above")
# Bounds as the config declares them, each option's {min, max, above} that it has.
BOUNDS = {o.name: {k: o.metadata[k] for k in BOUND_KEYS if k in o.metadata} for o in DECLARED}
NOT_DECODE = {
    "run_dir", "texts", "input_file", "output_format", "split", "output", "checkpoint", "overrides",
    "quiet", "input_format", "prefix", "constraints", "banned", "ensemble",
}  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tiny_translation_run):
    return tiny_translation_run.run  # read only: translated from, never written


@pytest.fixture(scope="module")
def model(run_dir) -> Model:
    return load(run_dir)


def run_cli(args, monkeypatch, capsys) -> tuple[int, str, str]:
    """`minitx ARGS` in this process, as a user runs it: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["minitx", *map(str, args)])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def _command_params(name: str) -> dict:
    command = typer.main.get_command(app).commands[name]
    return {param.name: param for param in command.params}


# --- the same names, bounds and defaults everywhere ----------------------------------------------


def test_the_translate_command_takes_every_decode_option_with_its_bounds():
    params = _command_params("translate")
    decode = [name for name in params if name not in NOT_DECODE]
    assert decode == NAMES  # every option, in declaration order, and nothing else
    for name in NAMES:
        param = params[name]
        assert param.default is None, name  # the run's own setting
        cli_bounds = {"min": param.min, "max": param.max}
        # An open bound (above) has no command-line form: validation refuses it (test below).
        assert cli_bounds == {k: BOUNDS[name].get(k) for k in ("min", "max")}, name
    assert params["beam_size"].opts == ["--beam"]  # the flag the metadata names
    assert params["length_penalty"].opts == ["--length-penalty"]
    assert params["sample"].secondary_opts == ["--no-sample"]


def test_eval_beam_is_the_derived_beam_size_option():
    beam = _command_params("eval")["beam"]
    derived = _command_params("translate")["beam_size"]
    assert beam.opts == derived.opts == ["--beam"]
    assert (beam.min, beam.max, beam.default) == (1, 64, None)
    assert (beam.min, beam.max, beam.help) == (derived.min, derived.max, derived.help)


def test_the_http_request_takes_every_decode_option_with_its_bounds():
    translate_request, _ = request_models(ServeOptions())
    properties = translate_request.model_json_schema()["properties"]
    steering = ["target_prefix", "constraints", "banned"]
    assert list(properties) == ["texts", "timeout_s", *NAMES, *steering]
    json_types = {int: "integer", float: "number", bool: "boolean"}
    hints = typing.get_type_hints(DecodeConfig)
    json_bounds = {"minimum": "min", "maximum": "max", "exclusiveMinimum": "above"}
    for name in NAMES:
        schema = properties[name]
        assert schema["default"] is None, name  # absent: the model's own setting
        given, null = schema["anyOf"]
        assert null == {"type": "null"}
        if typing.get_origin(hints[name]) is typing.Literal:  # a choice of strings
            assert given["enum"] == list(typing.get_args(hints[name])), name
            continue
        (value_type,) = set(typing.get_args(hints[name]) or [hints[name]]) - {type(None)}
        assert given["type"] == json_types[value_type], name
        found = {json_bounds[key]: value for key, value in given.items() if key in json_bounds}
        assert found == BOUNDS[name], name


def test_the_api_takes_every_decode_option_and_keeps_the_run_value_by_default(model):
    assert model.decode_config() == model.config.decode
    for name in NAMES:
        assert model.decode_config(**{name: None}) == model.config.decode
        value = getattr(DecodeConfig(), name)
        if value is not None:
            assert getattr(model.decode_config(**{name: value}), name) == value


def _outside(bounds: dict) -> list:
    """A value just past each bound: below min, above max, at an open lower bound."""
    values = []
    if "min" in bounds:
        values.append(bounds["min"] - 1)
    if "max" in bounds:
        values.append(bounds["max"] + 1)
    if "above" in bounds:
        values.append(bounds["above"])
    return values


@pytest.mark.parametrize("name", [name for name in NAMES if BOUNDS[name]])
def test_the_api_refuses_a_value_past_each_declared_bound(model, name):
    for value in _outside(BOUNDS[name]):
        with pytest.raises(UserError, match=rf"decode\.{name}: must be") as error:
            model.translate(["ein hund rennt"], **{name: value})
        assert "\n" not in str(error.value)


def test_the_caps_and_the_open_bound_are_declared_in_decode_config():
    """beam_size and n_best are capped at 64 for every caller (the HTTP schema alone capped them
    before); top_p's lower bound is open. The tests above check that each caller derives them."""
    assert BOUNDS["beam_size"] == BOUNDS["n_best"] == {"min": 1, "max": 64}
    assert BOUNDS["top_p"] == {"above": 0.0, "max": 1.0}


# --- errors: one line, exit 2 ----------------------------------------------------------------


def test_an_unknown_api_keyword_is_one_line_naming_every_option(model):
    with pytest.raises(UserError) as error:
        model.translate(["ein hund rennt"], beam=3)
    message = str(error.value)
    assert "'beam' (did you mean 'beam_size'?)" in message and "\n" not in message
    assert message.endswith(", ".join(NAMES))


def test_translate_takes_a_decode_config_or_options_not_both(model):
    with pytest.raises(UserError, match="not both"):
        model.translate(["ein hund rennt"], decode=model.config.decode, beam_size=3)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--beam", "65"], "--beam"),
        (["--n-best", "0"], "--n-best"),
        (["--top-p", "0"], "decode.top_p: must be above 0.0"),
        (["--length-penalty", "-1"], "--length-penalty"),
        (["--sample", "--temperature", "0"], "decode.temperature must be above 0"),
    ],
)
def test_an_out_of_bounds_option_is_one_line_and_exit_2(
    run_dir, monkeypatch, capsys, args, fragment
):
    code, out, err = run_cli(["translate", run_dir, "ein hund rennt", *args], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0]


# --- end to end ----------------------------------------------------------------------------------


def test_length_penalty_reaches_the_search_from_the_command_line(
    model, run_dir, monkeypatch, capsys
):
    texts = ["ein hund rennt", "ein kind spielt im park"]
    options = ["--beam", "2", "--n-best", "2", "--format", "jsonl", "-q"]
    code, out, err = run_cli(
        ["translate", run_dir, *texts, *options, "--length-penalty", "0"], monkeypatch, capsys
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    expected = model.translate(texts, beam_size=2, n_best=2, length_penalty=0.0)
    for record, translation in zip(records, expected, strict=True):
        assert [h["text"] for h in record["hypotheses"]] == [h.text for h in translation.hypotheses]
        for h in record["hypotheses"]:
            assert h["score"] == h["log_prob"]  # length_penalty 0: the score is the log-prob
    # and the run's own length penalty (1.0) divides by the length
    code, out, _ = run_cli(["translate", run_dir, *texts, *options], monkeypatch, capsys)
    first = json.loads(out.splitlines()[0])["hypotheses"][0]
    assert code == 0 and first["score"] != first["log_prob"]


def test_translate_validates_its_options_once_however_many_batches_stream(
    run_dir, tmp_path, monkeypatch, capsys
):
    lines = ["ein hund rennt", "eine katze schläft", "zwei männer gehen", "ein mann", "die frau"]
    source = tmp_path / "in.txt"
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    validations, batches = [], []
    decode_config, translate = Model.decode_config, Model.translate

    def counting_decode_config(self, **options):
        validations.append(options)
        return decode_config(self, **options)

    def counting_translate(self, texts, *args, **kwargs):
        batches.append(len(texts))
        return translate(self, texts, *args, **kwargs)

    monkeypatch.setattr(Model, "decode_config", counting_decode_config)
    monkeypatch.setattr(Model, "translate", counting_translate)
    args = ["translate", run_dir, "-i", source, "--batch-size", "2", "--beam", "1", "-q"]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert len(out.splitlines()) == len(lines)
    assert batches == [2, 2, 1]
    assert len(validations) == 1 and validations[0]["beam_size"] == 1


# --- the CTranslate2 engine's arguments ----------------------------------------------------------


def test_ctranslate2_arguments_come_from_the_declared_names():
    decode = DecodeConfig(beam_size=4, n_best=3, length_penalty=0.6, top_k=5)
    assert _search_options(decode) == {
        "beam_size": 4,
        "num_hypotheses": 3,
        "length_penalty": 0.6,
        "patience": BEAM_PATIENCE,
        "return_scores": True,
    }


def test_ctranslate2_sampling_arguments_come_from_the_declared_names():
    pytest.importorskip("ctranslate2")
    decode = DecodeConfig(sample=True, n_best=2, temperature=0.7, top_p=0.9, seed=1)
    assert _search_options(decode) == {
        "beam_size": 1,
        "num_hypotheses": 2,
        "length_penalty": 1.0,
        "sampling_temperature": 0.7,
        "sampling_topk": 0,  # top_k null: the whole vocabulary
        "sampling_topp": 0.9,
        "return_scores": True,
    }
