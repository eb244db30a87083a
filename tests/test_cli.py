"""The command line as a user runs it: real subprocesses, exit codes, files in the run directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config_yaml


def minitx(*args, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "minitx", *map(str, args)],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def start_long_training(
    config: Path, run_dir: Path, *args: str, stderr=subprocess.PIPE
) -> subprocess.Popen:
    """`minitx train` with no practical step limit, in the background."""
    command = [
        sys.executable,
        "-m",
        "minitx",
        "train",
        str(config),
        "--run-dir",
        str(run_dir),
        "--set",
        "train.max_steps=100000",
        *args,
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def wait_until(condition, process: subprocess.Popen, seconds: float = 300) -> None:
    """Poll `condition` until it holds; fail (not carry on) if the process ends or time runs out."""
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            pytest.fail(f"training ended early with exit code {process.returncode}: {stderr}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no progress within {seconds} s")
        time.sleep(0.05)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny model trained for a few steps through the CLI, for the tests of training (what it
    writes, resuming, refusals); the tests that only read a run use the session's
    `tiny_translation_run`."""
    from conftest import write_splits

    root = tmp_path_factory.mktemp("e2e")
    data = write_splits(root / "data")
    config = root / "tiny.yaml"
    config.write_text(tiny_config_yaml(str(data)))
    run_dir = root / "run"
    result = minitx("train", config, "--run-dir", run_dir, "--set", "train.max_steps=6")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["run_dir"] == str(run_dir)
    return run_dir


def test_train_writes_a_self_describing_run_directory(trained_run):
    for path in (
        "config.yaml",
        "tokenizer.json",
        "metrics.jsonl",
        "checkpoints/last/model.safetensors",
        "checkpoints/last/trainer.pt",
        "checkpoints/last/meta.json",
        "checkpoints/best/model.safetensors",
    ):
        assert (trained_run / path).is_file(), path
    events = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    train_events = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in train_events] == [3, 6]
    assert {"loss", "lr", "tgt_tokens_per_s", "elapsed"} <= set(train_events[0])
    validations = [e for e in events if e["event"] == "validation"]
    assert [v["step"] for v in validations] == [6]
    assert {"loss", "ppl", "bleu", "chrf"} <= set(validations[0])
    assert "max_steps: 6" in (trained_run / "config.yaml").read_text()


def test_training_again_resumes_and_says_so(trained_run, tmp_path):
    import shutil

    run_dir = tmp_path / "resumed"
    shutil.copytree(trained_run, run_dir)
    config = run_dir / "config.yaml"
    result = minitx(
        "train",
        config,
        "--run-dir",
        run_dir,
        "--set",
        "train.max_steps=9",
        "--set",
        "train.eval_every=9",
    )
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr and "from step 6" in result.stderr
    steps = [
        json.loads(line).get("step")
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps.count(9) >= 2  # train log and validation at the new max_steps
    assert json.loads((run_dir / "checkpoints/last/meta.json").read_text())["step"] == 9


def test_resume_refuses_a_changed_model(trained_run, tmp_path):
    import shutil

    run_dir = tmp_path / "changed"
    shutil.copytree(trained_run, run_dir)
    result = minitx(
        "train", run_dir / "config.yaml", "--run-dir", run_dir, "--set", "model.d_ff=128"
    )
    assert_user_error(result, "different config", "model.d_ff: 64 → 128", "--fresh")


def test_fresh_needs_confirmation_without_a_terminal(trained_run):
    result = minitx("train", trained_run / "config.yaml", "--run-dir", trained_run, "--fresh")
    assert_user_error(result, "--yes")
    assert (trained_run / "checkpoints/last/model.safetensors").is_file()


def test_eval_writes_scores_and_hypotheses(tiny_translation_run, tmp_path):
    trained_run = tiny_translation_run.copy(tmp_path)  # eval writes into the run directory
    result = minitx("eval", trained_run, "--split", "test", "--beam", "2")
    assert result.returncode == 0, result.stderr
    assert "bleu" in result.stdout and "chrf" in result.stdout
    report = json.loads((trained_run / "eval/test.json").read_text())
    best = json.loads((trained_run / "checkpoints/best/meta.json").read_text())
    assert report["sentences"] == 3 and report["checkpoint_step"] == best["step"]
    assert report["decoding"]["beam_size"] == 2
    assert report["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    for key in ("bleu", "chrf", "loss", "ppl", "exact_match", "chrf_signature"):
        assert key in report
    assert len((trained_run / "eval/test.hyp").read_text().splitlines()) == 3


def test_eval_accepts_the_data_split_name_and_last_checkpoint(tiny_translation_run, tmp_path):
    trained_run = tiny_translation_run.copy(tmp_path)
    result = minitx("eval", trained_run, "--split", "val", "--checkpoint", "last", "--beam", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads((trained_run / "eval/val.json").read_text())
    assert report["sentences"] == 3 and report["checkpoint_step"] == 12


def test_translate_arguments_file_and_stdin_agree(tiny_translation_run, tmp_path):
    trained_run = tiny_translation_run.run
    sentences = ["ein hund rennt", "", "eine katze schläft"]
    by_args = minitx("translate", trained_run, sentences[0], sentences[2])
    assert by_args.returncode == 0, by_args.stderr
    assert len(by_args.stdout.splitlines()) == 2
    source = tmp_path / "in.txt"
    source.write_text("\n".join(sentences) + "\n")
    by_file = minitx("translate", trained_run, "--input", source, "--batch-size", "1")
    by_stdin = minitx("translate", trained_run, stdin="\n".join(sentences) + "\n")
    assert by_file.stdout == by_stdin.stdout
    lines = by_file.stdout.split("\n")[:3]
    assert lines[1] == "" and [lines[0], lines[2]] == by_args.stdout.splitlines()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["eval", "{missing}"], ["run directory not found"]),
        (["eval", "{run}", "--split", "dev"], ["no split 'dev'", "splits found"]),
        (["train", "{config}", "--set", "model.n_heads=3"], ["divisible by model.n_heads"]),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tiny_translation_run, tmp_path, args, fragments):
    (tmp_path / "empty").mkdir()
    names = {
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "run": tiny_translation_run.run,
        "config": tiny_translation_run.run / "config.yaml",
    }
    result = (
        minitx(*[a.format(**names) for a in args], "--run-dir", tmp_path / "new")
        if args[0] == "train"
        else minitx(*[a.format(**names) for a in args])
    )
    assert_user_error(result, *fragments)


def test_bad_yaml_is_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("model: {d_model: 64\n")
    assert_user_error(minitx("train", config, "--run-dir", tmp_path / "r"), "bad.yaml", "line")


def test_help_shows_examples():
    result = minitx("--help")
    assert result.returncode == 0 and "train" in result.stdout and "translate" in result.stdout
    for command in ("train", "eval", "translate"):
        shown = minitx(command, "--help")
        assert shown.returncode == 0 and "Examples" in shown.stdout, command


@pytest.mark.parametrize(("signal_name", "exit_code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_finishes_the_step_saves_and_says_how_to_resume(
    parallel_dir, tmp_path, signal_name, exit_code
):
    import signal

    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config_yaml(str(parallel_dir)))
    run_dir = tmp_path / "run"
    process = start_long_training(
        config, run_dir, "--set", "train.log_every=1", "--set", "train.eval_every=100000"
    )
    metrics = run_dir / "metrics.jsonl"
    wait_until(lambda: metrics.is_file() and '"train"' in metrics.read_text(), process)
    process.send_signal(getattr(signal, signal_name))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == exit_code, stderr
    assert f"stopped by {signal_name}" in stderr and "run the same command to resume" in stderr
    saved = json.loads((run_dir / "checkpoints/last/meta.json").read_text())
    assert saved["step"] >= 1
    resumed = minitx(
        "train",
        config,
        "--run-dir",
        run_dir,
        "--set",
        f"train.max_steps={saved['step'] + 2}",
        "--set",
        "train.log_every=1",
        "--set",
        "train.eval_every=100000",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step {saved['step']}" in resumed.stderr


@pytest.mark.parametrize("seed", [3, 8])
def test_kill_9_at_a_random_moment_then_train_again_continues(parallel_dir, tmp_path, seed):
    import random
    import signal
    import time

    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config_yaml(str(parallel_dir)))
    run_dir = tmp_path / "run"
    args = ["--set", "train.eval_every=2", "--set", "train.log_every=1"]
    process = start_long_training(config, run_dir, *args)
    meta = run_dir / "checkpoints/last/meta.json"
    wait_until(meta.is_file, process)
    # Anywhere after the first checkpoint: mid-step, mid-validation or mid-save; seeded, so a
    # failure names a moment that can be replayed.
    time.sleep(random.Random(seed).uniform(0.0, 1.0))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    resumed = minitx("train", config, "--run-dir", run_dir, "--set", "train.max_steps=1", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    step = json.loads(meta.read_text())["step"]
    assert step >= 2 and f"from step {step}" in resumed.stderr
    leftovers = [
        p.name for p in (run_dir / "checkpoints").iterdir() if p.name.endswith((".tmp", ".old"))
    ]
    assert leftovers == []


def test_version_completion_and_quiet_on_every_command():
    from minitx import __version__

    version = minitx("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"minitx {__version__}"
    assert "--install-completion" in minitx("--help").stdout
    for command in ("train", "eval", "translate", "predict", "attention", "plot"):
        shown = minitx(command, "--help")
        assert shown.returncode == 0 and "--quiet" in shown.stdout, command


def test_eval_json_is_one_object_with_the_scores_it_wrote(tiny_translation_run, tmp_path):
    trained_run = tiny_translation_run.copy(tmp_path)  # eval writes into the run directory
    result = minitx("eval", trained_run, "--split", "test", "--beam", "1", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    report = json.loads(line)
    written = json.loads((trained_run / "eval/test.json").read_text())
    assert report["written"] == str(trained_run / "eval/test.json")
    assert report["sentences"] == 3 and report["decoding"]["beam_size"] == 1
    assert {key: report[key] for key in written} == written
    assert result.stderr == ""  # --quiet: no status lines


def test_translate_answers_each_line_while_stdin_stays_open(tiny_translation_run):
    """`tail -f sentences | minitx translate RUN`: a line in, its translation out, no EOF needed."""
    import select

    trained_run = tiny_translation_run.run
    process = subprocess.Popen(
        [sys.executable, "-m", "minitx", "translate", str(trained_run), "--beam", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        answers = []
        for sentence in (b"ein hund rennt\n", b"eine katze schl\xc3\xa4ft\n"):
            process.stdin.write(sentence)
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], 120)
            assert ready, "no translation printed while stdin is still open"
            answers.append(process.stdout.readline().decode())
        assert all(answer.endswith("\n") for answer in answers)
    finally:
        process.stdin.close()
        process.wait(timeout=60)
    assert process.returncode == 0, process.stderr.read().decode()
    by_args = minitx(
        "translate", trained_run, "--beam", "1", "ein hund rennt", "eine katze schläft"
    )
    assert "".join(answers) == by_args.stdout


def test_a_second_train_of_a_run_in_training_is_refused_and_reading_still_works(
    trained_run, tmp_path
):
    import shutil
    import signal

    run_dir = tmp_path / "busy"
    shutil.copytree(trained_run, run_dir)
    config = run_dir / "config.yaml"
    metrics = run_dir / "metrics.jsonl"
    logged = metrics.read_text().count('"train"')
    process = start_long_training(config, run_dir, "--set", "train.log_every=1")
    try:
        wait_until(lambda: metrics.read_text().count('"train"') > logged, process)
        second = minitx("train", config, "--run-dir", run_dir, "--set", "train.max_steps=100000")
        assert_user_error(second, "being trained by another process", f"pid {process.pid}")
        assert minitx("eval", run_dir, "--split", "test", "--beam", "1", "-q").returncode == 0
        assert minitx("translate", run_dir, "ein hund rennt").returncode == 0
        assert minitx("plot", run_dir).returncode == 0
    finally:
        process.send_signal(signal.SIGKILL)  # a killed holder must not leave the run locked
        process.wait(timeout=30)
    again = minitx("train", config, "--run-dir", run_dir, "--set", "train.max_steps=7")
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr


def test_fresh_yes_deletes_the_run_and_starts_over(trained_run, tmp_path):
    import shutil

    run_dir = tmp_path / "again"
    shutil.copytree(trained_run, run_dir)
    (run_dir / "eval").mkdir(exist_ok=True)
    (run_dir / "eval/old.json").write_text("{}")
    result = minitx(
        "train",
        run_dir / "config.yaml",
        "--run-dir",
        run_dir,
        "--fresh",
        "--yes",
        "--set",
        "train.max_steps=2",
        "--set",
        "train.eval_every=2",
    )
    assert result.returncode == 0, result.stderr
    assert "resuming" not in result.stderr
    assert not (run_dir / "eval/old.json").exists()
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "start" and max(e.get("step", 0) for e in events) == 2
    assert json.loads((run_dir / "checkpoints/last/meta.json").read_text())["step"] == 2
