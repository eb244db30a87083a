"""Bad input as a user would type it: every case exits with 2 and one `error:` line naming the fix,
with no traceback, and leaves the trained run directory untouched.

The CLI runs in-process (`minitx.cli.main` with a patched argv) so the table stays fast.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import sys
from pathlib import Path

import pytest
import torch

from minitx.cli import main

from conftest import PAIRS, tiny_config_yaml


def run_cli(args, monkeypatch, capsys, stdin: bytes = b""):
    monkeypatch.setattr(sys, "argv", ["minitx", *map(str, args)])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def world(tiny_translation_run):
    """Data, the valid config it was trained from and the session's tiny trained run (2 + 2
    layers, step_3 … step_12 kept and averaged), shared by every case, which must leave it as
    it was."""
    shared = tiny_translation_run
    return {"root": shared.root, "data": shared.data, "config": shared.config, "run": shared.run}


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def config_with(world, tmp: Path, extra: str = "", data: str | None = None) -> Path:
    return _write(tmp / "c.yaml", tiny_config_yaml(data or str(world["data"]), extra))


def data_dir(tmp: Path, **files: str | bytes) -> Path:
    for name, content in files.items():
        _write(tmp / "d" / name.replace("__", "."), content)
    return tmp / "d"


def with_val(tmp: Path, **files: str | bytes) -> Path:
    """`data_dir` with a good validation split: the training files are read after it."""
    return data_dir(tmp, val__de=lines(0, 3), val__en=lines(1, 3), **files)


def gz(text: str) -> bytes:
    return gzip.compress(text.encode())


def lines(side: int, n: int = 6) -> str:
    return "".join(p[side] + "\n" for p in (PAIRS * 3)[:n])


def damaged_run(world, tmp: Path, damage) -> Path:
    run = tmp / "run_copy"
    shutil.copytree(world["run"], run)
    damage(run)
    return run


def _without_snapshots(run: Path) -> None:
    """As a run trained without train.keep_last: no step_N checkpoints, nothing averaged."""
    for snapshot in (run / "checkpoints").glob("step_*"):
        shutil.rmtree(snapshot)
    shutil.rmtree(run / "checkpoints/averaged")


def _bad_pickle(run: Path) -> None:
    class Marker:
        def __reduce__(self):
            return (open, (str(run / "PWNED"), "w"))

    torch.save({"state": Marker()}, run / "checkpoints/last/trainer.pt")


# (case id, function(world, tmp) → argv, expected fragments of the error line)
CASES = [
    # --- configs ---------------------------------------------------------------------------
    (
        "yaml-syntax",
        lambda w, t: ["train", _write(t / "c.yaml", "model: {d_model: 64\n")],
        ["line", "fix the YAML"],
    ),
    (
        "yaml-tabs",
        lambda w, t: ["train", _write(t / "c.yaml", "model:\n\td_model: 64\n")],
        ["YAML"],
    ),
    (
        "yaml-top-list",
        lambda w, t: ["train", _write(t / "c.yaml", "- 1\n")],
        ["top level must be a mapping"],
    ),
    (
        "yaml-not-utf8",
        lambda w, t: ["train", _write(t / "c.yaml", b"model: {d_model: \xff}\n")],
        ["UTF-8"],
    ),
    ("config-missing", lambda w, t: ["train", t / "none.yaml"], ["config file not found"]),
    ("config-is-dir", lambda w, t: ["train", t], ["config file not found"]),
    (
        "unknown-section",
        lambda w, t: ["train", config_with(w, t, "modle: {}")],
        ["did you mean 'model'"],
    ),
    (
        "unknown-key",
        lambda w, t: ["train", config_with(w, t, "decode: {beam: 2}")],
        ["did you mean 'decode.beam_size'"],
    ),
    (
        "wrong-type-int",
        lambda w, t: ["train", w["config"], "--set", "model.d_model=big"],
        ["model.d_model: expected an integer"],
    ),
    (
        "wrong-type-bool",
        lambda w, t: ["train", w["config"], "--set", "tokenizer.joint=maybe"],
        ["expected true or false"],
    ),
    (
        "wrong-choice",
        lambda w, t: ["train", w["config"], "--set", "run.dtype=fp8"],
        ["run.dtype", "'bf16'"],
    ),
    (
        "task-unknown",
        lambda w, t: ["train", w["config"], "--set", "task=summarise"],
        ["task: 'summarise' is not a task; use one of classification, translation"],
    ),
    (
        "negative-size",
        lambda w, t: ["train", w["config"], "--set", "model.d_model=-8"],
        ["at least 8"],
    ),
    (
        "zero-heads",
        lambda w, t: ["train", w["config"], "--set", "model.n_heads=0"],
        ["model.n_heads: must be at least 1"],
    ),
    (
        "heads-not-dividing",
        lambda w, t: ["train", w["config"], "--set", "model.n_heads=3"],
        ["divisible by model.n_heads (3)"],
    ),
    (
        "dropout-too-big",
        lambda w, t: ["train", w["config"], "--set", "model.dropout=1.5"],
        ["at most 0.9"],
    ),
    (
        "zero-batch",
        lambda w, t: ["train", w["config"], "--set", "train.batch_tokens=0"],
        ["train.batch_tokens"],
    ),
    (
        "beam-zero-config",
        lambda w, t: ["train", w["config"], "--set", "decode.beam_size=0"],
        ["decode.beam_size"],
    ),
    (
        "bad-duration",
        lambda w, t: ["train", w["config"], "--set", "train.max_time=soon"],
        ["train.max_time", "30m"],
    ),
    (
        "bad-betas",
        lambda w, t: ["train", w["config"], "--set", "train.betas=[0.9]"],
        ["train.betas must be two numbers"],
    ),
    (
        "section-not-mapping",
        lambda w, t: ["train", w["config"], "--set", "model=5"],
        ["model must be a mapping"],
    ),
    (
        "splits-missing-role",
        lambda w, t: ["train", w["config"], "--set", "data.splits={train: train, validation: val}"],
        ["data.splits needs keys ['test']"],
    ),
    (
        "splits-unknown-role",
        lambda w, t: [
            "train",
            w["config"],
            "--set",
            "data.splits={train: a, validation: b, test: c, dev: d}",
        ],
        ["unknown keys ['dev']"],
    ),
    (
        "set-without-equals",
        lambda w, t: ["train", w["config"], "--set", "train.lr"],
        ["--set expects KEY=VALUE"],
    ),
    (
        "set-unknown-key",
        lambda w, t: ["train", w["config"], "--set", "train.lr_max=1"],
        ["unknown key 'train.lr_max'"],
    ),
    (
        "many-problems-at-once",
        lambda w, t: ["train", w["config"], "--set", "model.d_ff=0", "--set", "run.seed=x"],
        ["2 problem(s)", "model.d_ff", "run.seed"],
    ),
    # --- data --------------------------------------------------------------------------------
    (
        "data-dir-missing",
        lambda w, t: ["train", config_with(w, t, data=str(t / "nowhere"))],
        ["data directory not found"],
    ),
    (
        "data-path-is-file",
        lambda w, t: ["train", config_with(w, t, data=str(w["config"]))],
        ["must be a directory"],
    ),
    (
        "split-missing",
        lambda w, t: [
            "train",
            config_with(w, t, data=str(data_dir(t, train__de="a\n", train__en="b\n"))),
        ],
        ["no split 'val'", "data.splits"],
    ),
    (
        "side-missing",
        lambda w, t: ["train", config_with(w, t, data=str(data_dir(t, train__de="a\n")))],
        ["no train.en or train.en.gz"],
    ),
    (
        "line-counts-differ",
        lambda w, t: [
            "train",
            config_with(w, t, data=str(with_val(t, train__de=lines(0, 6), train__en=lines(1, 5)))),
        ],
        ["6 lines", "5", "align"],
    ),
    (
        "empty-files",
        lambda w, t: [
            "train",
            config_with(w, t, data=str(with_val(t, train__de="", train__en=""))),
        ],
        ["no non-empty sentence pairs"],
    ),
    (
        "all-lines-empty",
        lambda w, t: [
            "train",
            config_with(w, t, data=str(with_val(t, train__de="\n\n", train__en="\n\n"))),
        ],
        ["no non-empty sentence pairs"],
    ),
    (
        "data-not-utf8",
        lambda w, t: [
            "train",
            config_with(w, t, data=str(with_val(t, train__de=b"\xff\xfe\n", train__en="a\n"))),
        ],
        ["not UTF-8"],
    ),
    (
        "gzip-corrupt",
        lambda w, t: [
            "train",
            config_with(
                w, t, data=str(with_val(t, train__de__gz=b"not gzip", train__en__gz=gz("a\n")))
            ),
        ],
        ["cannot read"],
    ),
    (
        "tsv-missing-column",
        lambda w, t: [
            "train",
            config_with(w, t, data=str(data_dir(t, train__tsv="source\ttarget\na\tb\n"))),
        ],
        ["no column 'de' or 'en'", "columns are"],
    ),
    (
        "translation-column-wrong-langs",
        lambda w, t: [
            "train",
            config_with(
                w,
                t,
                data=str(data_dir(t, train__jsonl='{"translation": {"fr": "a", "en": "b"}}\n')),
            ),
        ],
        ["languages ['en', 'fr']"],
    ),
    (
        "tokenizer-file-missing",
        lambda w, t: ["train", config_with(w, t, f"tokenizer: {{path: {t / 'tok.json'}}}")],
        ["tokenizer file not found"],
    ),
    (
        "tokenizer-file-broken",
        lambda w, t: [
            "train",
            config_with(w, t, f"tokenizer: {{path: {_write(t / 'tok.json', '{oops')}}}"),
        ],
        ["not a valid tokenizer.json"],
    ),
    # --- command-line arguments --------------------------------------------------------------
    ("no-such-command", lambda w, t: ["fly"], ["No such command 'fly'"]),
    ("train-no-config", lambda w, t: ["train"], ["Missing argument"]),
    ("eval-run-missing", lambda w, t: ["eval", t / "nope"], ["run directory not found"]),
    ("eval-not-a-run", lambda w, t: ["eval", t], ["not a minitx run directory"]),
    ("eval-unknown-split", lambda w, t: ["eval", w["run"], "--split", "dev"], ["no split 'dev'"]),
    (
        "eval-beam-zero",
        lambda w, t: ["eval", w["run"], "--beam", "0"],
        ["--beam", "minitx eval --help"],
    ),
    ("eval-beam-not-int", lambda w, t: ["eval", w["run"], "--beam", "five"], ["--beam"]),
    (
        "eval-bad-checkpoint-name",
        lambda w, t: ["eval", w["run"], "--checkpoint", "middle"],
        ["best, last"],
    ),
    (
        "eval-bad-set",
        lambda w, t: ["eval", w["run"], "--set", "decode.beam=2"],
        ["did you mean 'decode.beam_size'"],
    ),
    (
        "translate-input-missing",
        lambda w, t: ["translate", w["run"], "--input", t / "none.txt"],
        ["input file not found"],
    ),
    (
        "translate-text-and-input",
        lambda w, t: ["translate", w["run"], "x", "--input", w["config"]],
        ["not both"],
    ),
    (
        "translate-batch-zero",
        lambda w, t: ["translate", w["run"], "x", "--batch-size", "0"],
        ["--batch-size"],
    ),
    (
        "translate-input-not-utf8",
        lambda w, t: ["translate", w["run"], "--input", _write(t / "in.txt", b"\xff\n")],
        ["not UTF-8"],
    ),
    (
        "translate-n-best-above-the-beam",
        lambda w, t: ["translate", w["run"], "ein hund", "--beam", "2", "--n-best", "3"],
        ["decode.n_best (3) must be at most decode.beam_size (2)"],
    ),
    (
        "translate-top-p-zero",
        lambda w, t: ["translate", w["run"], "ein hund", "--sample", "--top-p", "0"],
        ["decode.top_p: must be above 0.0"],
    ),
    (
        "translate-top-p-above-one",
        lambda w, t: ["translate", w["run"], "ein hund", "--sample", "--top-p", "1.5"],
        ["--top-p", "minitx translate --help"],  # Click and Typer word the range per version
    ),
    (
        "translate-negative-temperature",
        lambda w, t: ["translate", w["run"], "ein hund", "--sample", "--temperature", "-1"],
        ["--temperature", "minitx translate --help"],
    ),
    (
        "translate-zero-temperature",
        lambda w, t: ["translate", w["run"], "ein hund", "--sample", "--temperature", "0"],
        ["decode.temperature must be above 0"],
    ),
    (
        "translate-unknown-format",
        lambda w, t: ["translate", w["run"], "ein hund", "--format", "xml"],
        ["--format must be text or jsonl"],
    ),
    (
        "translate-alignment-layer-out-of-range",
        lambda w, t: [
            "translate",
            w["run"],
            "ein hund",
            "--alignments",
            "--set",
            "decode.alignment_layer=5",
        ],
        ["decode.alignment_layer 5", "layers 0 to 1"],
    ),
    (
        "fresh-without-yes",
        lambda w, t: ["train", w["config"], "--run-dir", w["run"], "--fresh"],
        ["--yes"],
    ),
    (
        "resume-changed-lr",
        lambda w, t: ["train", w["config"], "--run-dir", w["run"], "--set", "train.lr=1e-4"],
        ["train.lr: 0.003 → 0.0001"],
    ),
    (
        "resume-changed-seed",
        lambda w, t: ["train", w["config"], "--run-dir", w["run"], "--set", "run.seed=9"],
        ["run.seed: 3 → 9"],
    ),
    (
        "fresh-on-a-non-run-directory",
        lambda w, t: [
            "train",
            w["config"],
            "--run-dir",
            _write(t / "mine" / "notes.txt", "keep").parent,
            "--fresh",
            "--yes",
        ],
        ["deletes run directories only"],
    ),
    (
        "resume-changed-model",
        lambda w, t: ["train", w["config"], "--run-dir", w["run"], "--set", "model.d_ff=128"],
        ["model.d_ff: 64 → 128"],
    ),
    (
        "run-dir-unwritable",
        lambda w, t: ["train", w["config"], "--run-dir", _write(t / "file", "x") / "run"],
        ["cannot write to", "--run-dir"],
    ),
    # --- checkpoints -------------------------------------------------------------------------
    (
        "weights-truncated",
        lambda w, t: [
            "eval",
            damaged_run(
                w, t, lambda r: _write(r / "checkpoints/best/model.safetensors", b"\x10\x00")
            ),
        ],
        ["damaged"],
    ),
    (
        "meta-corrupt",
        lambda w, t: [
            "eval",
            damaged_run(w, t, lambda r: _write(r / "checkpoints/best/meta.json", "{")),
        ],
        ["meta.json"],
    ),
    (
        "no-checkpoint-yet",
        lambda w, t: ["eval", damaged_run(w, t, lambda r: shutil.rmtree(r / "checkpoints"))],
        ["no 'best' checkpoint"],
    ),
    (
        "tokenizer-does-not-fit-weights",
        lambda w, t: [
            "eval",
            damaged_run(w, t, lambda r: _write(r / "tokenizer.json", _bigger_tokenizer())),
        ],
        ["different model config"],
    ),
    (
        "trainer-state-corrupt",
        lambda w, t: [
            "train",
            w["config"],
            "--run-dir",
            damaged_run(w, t, lambda r: _write(r / "checkpoints/last/trainer.pt", b"garbage")),
        ],
        ["cannot load trainer state"],
    ),
    (
        "trainer-state-runs-code",
        lambda w, t: ["train", w["config"], "--run-dir", damaged_run(w, t, _bad_pickle)],
        ["cannot load trainer state"],
    ),
    # --- classification ---------------------------------------------------------------------
    (
        "classification-on-the-synthetic-task",
        lambda w, t: [
            "train",
            _write(t / "c.yaml", "task: classification\ndata: {path: synthetic}\n"),
        ],
        ["the synthetic task is translation", "data.path"],
    ),
    (
        "classification-label-column-missing",
        lambda w, t: [
            "train",
            classification_config(t, train="text\tsentiment\ngood\t1\nbad\t0\n"),
            "--run-dir",
            t / "run",
        ],
        ["no column 'label'", "['text', 'sentiment']", "data.label"],
    ),
    (
        "classification-one-label",
        lambda w, t: [
            "train",
            classification_config(
                t,
                train="text\tlabel\ngood\t1\nfine\t1\n",
                validation="text\tlabel\ngood\t1\n",
            ),
            "--run-dir",
            t / "run",
        ],
        ["1 distinct label(s)", "at least 2"],
    ),
    ("predict-on-a-translation-run", lambda w, t: ["predict", w["run"], "hi"], ["translation run"]),
    (
        "attention-text-too-long",  # 3,000 words once ended in MemoryError: std::bad_alloc
        lambda w, t: ["attention", w["run"], " ".join(["ein hund rennt"] * 1000)],
        ["tokens", "at most 200", "shorter text"],
    ),
    # --- checkpoint averaging ----------------------------------------------------------------
    (
        "average-fewer-snapshots-than-asked",
        lambda w, t: ["average", damaged_run(w, t, _without_snapshots), "--last", "3"],
        ["averaging the last 3 checkpoints needs 3 kept step_N", "has 0", "train.keep_last >= 3"],
    ),
    (
        "average-default-is-the-last-five",
        lambda w, t: ["average", w["run"]],
        ["averaging the last 5 checkpoints needs 5"],
    ),
    (
        "average-unknown-steps",
        lambda w, t: ["average", damaged_run(w, t, _without_snapshots), "--steps", "3,99"],
        ["no checkpoint step_00000003, step_00000099", "kept: none (set train.keep_last)"],
    ),
    (
        "average-last-and-steps",
        lambda w, t: ["average", w["run"], "--last", "2", "--steps", "3,6"],
        ["give --last or --steps, not both"],
    ),
    (
        "average-steps-not-numbers",
        lambda w, t: ["average", w["run"], "--steps", "3,six"],
        ["--steps takes step numbers separated by commas, got '3,six'"],
    ),
    (
        "average-steps-empty",
        lambda w, t: ["average", w["run"], "--steps", ","],
        ["--steps takes step numbers"],
    ),
    ("average-last-one", lambda w, t: ["average", w["run"], "--last", "1"], ["--last"]),
    ("average-not-a-run", lambda w, t: ["average", t], ["not a minitx run directory"]),
    (
        "eval-averaged-before-averaging",
        lambda w, t: ["eval", damaged_run(w, t, _without_snapshots), "--checkpoint", "averaged"],
        ["no 'averaged' checkpoint"],
    ),
    (
        "average-last-above-keep-last",
        lambda w, t: [
            "train",
            w["config"],
            "--set",
            "train.average_last=3",
            "--set",
            "train.keep_last=2",
        ],
        ["train.average_last (3) needs train.keep_last of at least 3 (got 2)"],
    ),
    (
        "average-last-one-in-the-config",
        lambda w, t: ["train", w["config"], "--set", "train.average_last=1"],
        ["train.average_last: must be at least 2, got 1"],
    ),
    # --- fine-tuning -------------------------------------------------------------------------
    (
        "init-from-missing-path",
        lambda w, t: ["train", w["config"], "--set", f"train.init_from={t / 'nowhere'}"],
        ["train.init_from", "nowhere is neither a run directory"],
    ),
    (
        "init-from-another-d-ff",
        lambda w, t: [
            "train",
            w["config"],
            "--set",
            f"train.init_from={w['run']}",
            "--set",
            "model.d_ff=128",
        ],
        ["model.d_ff: 64 → 128", "same task and model shape"],
    ),
    (
        "init-from-a-classification-run",  # its config says classification; refused before loading
        lambda w, t: [
            "train",
            w["config"],
            "--set",
            "train.init_from="
            + str(
                damaged_run(
                    w,
                    t,
                    lambda r: _write(
                        r / "config.yaml",
                        (r / "config.yaml")
                        .read_text()
                        .replace("task: translation", "task: classification")
                        .replace("early_stopping_metric: bleu", "early_stopping_metric: accuracy"),
                    ),
                )
            ),
        ],
        ["task: 'classification' → 'translation'"],
    ),
    (
        "init-from-a-translation-run-into-classification",
        lambda w, t: [
            "train",
            classification_config(
                t, train="text\tlabel\ngood\t1\nbad\t0\n", validation="text\tlabel\ngood\t1\n"
            ),
            "--set",
            f"train.init_from={w['run']}",
        ],
        ["task: 'translation' → 'classification'"],
    ),
    (
        "init-from-a-run-without-checkpoints",
        lambda w, t: [
            "train",
            w["config"],
            "--set",
            "train.init_from=" + str(damaged_run(w, t, lambda r: shutil.rmtree(r / "checkpoints"))),
        ],
        ["has no checkpoint to start from"],
    ),
    (
        "init-from-with-tokenizer-path",
        lambda w, t: [
            "train",
            w["config"],
            "--set",
            f"train.init_from={w['run']}",
            "--set",
            f"tokenizer.path={w['run'] / 'tokenizer.json'}",
        ],
        ["train.init_from brings the earlier run's tokenizer; leave tokenizer.path unset"],
    ),
]


def classification_config(tmp: Path, **tables: str) -> Path:
    """A tiny classification config over TSV files `tables` (split name → content)."""
    for split, content in tables.items():
        _write(tmp / "cls" / f"{split}.tsv", content)
    return _write(
        tmp / "cls.yaml",
        f"task: classification\ndata: {{path: {tmp / 'cls'}}}\n"
        "tokenizer: {vocab_size: 40, min_frequency: 1}\n"
        "model: {d_model: 16, n_heads: 2, n_encoder_layers: 1, d_ff: 32}\n"
        "train: {max_steps: 2, batch_tokens: 64}\nrun: {device: cpu}\n",
    )


def _bigger_tokenizer() -> str:
    from minitx.data.tokenizer import train_tokenizer

    texts = [s for p in PAIRS for s in p] + [f"word{i} token{i}" for i in range(200)]
    return train_tokenizer(texts, "bpe", 300, 1).to_str()


def test_case_ids_are_unique():
    """pytest would run a repeated id twice under one name, hiding which case failed."""
    ids = [case_id for case_id, _, _ in CASES]
    assert sorted({i for i in ids if ids.count(i) > 1}) == []


@pytest.mark.parametrize(("case_id", "make_args", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, tmp_path, monkeypatch, capsys, case_id, make_args, fragments):
    before = digest(world["run"])
    args = make_args(world, tmp_path)
    if args[0] == "train" and "--run-dir" not in args:
        args = [*args, "--run-dir", tmp_path / "new_run"]
    code, _, stderr = run_cli(args, monkeypatch, capsys)
    assert code == 2, stderr
    error_lines = stderr.strip().splitlines()
    assert len(error_lines) == 1, stderr
    assert error_lines[0].startswith("error: ") and "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in error_lines[0], (fragment, error_lines[0])
    assert digest(world["run"]) == before
    assert not list(tmp_path.rglob("PWNED"))
    if case_id == "fresh-on-a-non-run-directory":
        assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
