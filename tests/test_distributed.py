"""Training in two processes: gloo on loopback, started by torchrun (`minitx train --nproc 2` and
`torchrun ... -m minitx train`), compared with one process that accumulates the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minitx.config import load_config

from conftest import train_run

WORKER = Path(__file__).with_name("ddp_worker.py")
TIMEOUT = 240  # seconds: a hang fails the test instead of stalling CI

CONFIG = """\
task: translation
data: {path: synthetic, synthetic_size: 2000}
tokenizer: {type: bpe, vocab_size: 96}
model: {d_model: 32, n_heads: 4, n_encoder_layers: 1, n_decoder_layers: 1, d_ff: 64, dropout: 0.0}
train: {batch_tokens: 512, max_steps: 8, eval_every: 4, log_every: 1, eval_max_sentences: 20}
decode: {beam_size: 1}
run: {device: cpu, seed: 1, dtype: fp32}
"""


ROUNDING = 1.0001e-4  # one unit in the last logged decimal


def _env(**extra: str) -> dict:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1", **extra}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def _run(command: list, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, command)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(**env),
    )


def _torchrun(args: list, **env: str) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", WORKER]
    return _run([*launcher, *args], **env)


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _train_logs(run_dir: Path) -> list[dict]:
    return [e for e in _events(run_dir) if e["event"] == "train"]


def _files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One process with 2 batches per step, 8 steps; two processes with 1 batch each: 4 steps
    through `minitx train --nproc 2`, then resumed to 8 with torchrun, saving each rank's weights."""
    tmp = tmp_path_factory.mktemp("ddp")
    config = tmp / "tiny.yaml"
    config.write_text(CONFIG)
    single = tmp / "single"
    cfg = load_config(config, ["train.accumulate=2"])
    train_run(cfg, single)

    ddp, params = tmp / "ddp", tmp / "params"
    params.mkdir()
    first = _run(["-m", "minitx", "train", config, "--run-dir", ddp, "--nproc", "2", "--set",
                  "train.max_steps=4", "-q"])  # fmt: skip
    assert first.returncode == 0, first.stderr
    resumed = _torchrun(["train", config, "--run-dir", ddp], MINITX_TEST_PARAMS_DIR=str(params))
    assert resumed.returncode == 0, resumed.stderr
    return {"config": config, "single": single, "ddp": ddp, "params": params}


def test_two_processes_train_like_one_process_with_their_global_batch(runs):
    single, ddp = _train_logs(runs["single"]), _train_logs(runs["ddp"])
    assert [e["step"] for e in ddp] == list(range(1, 9))
    # metrics.jsonl rounds to 4 decimals: values 1e-9 apart may round 1e-4 apart.
    for one, two in zip(single, ddp, strict=True):
        assert two["loss"] == pytest.approx(one["loss"], abs=ROUNDING), one["step"]
        assert two["grad_norm"] == pytest.approx(one["grad_norm"], abs=ROUNDING), one["step"]
    final = torch.load(runs["params"] / "rank0.pt", weights_only=True)
    reference = load_file(runs["single"] / "checkpoints/last/model.safetensors")
    for name, tensor in reference.items():
        torch.testing.assert_close(final[name], tensor, atol=1e-5, rtol=1e-5, msg=name)


def test_every_rank_ends_with_the_same_parameters(runs):
    rank0 = torch.load(runs["params"] / "rank0.pt", weights_only=True)
    rank1 = torch.load(runs["params"] / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)


def test_only_rank_zero_writes_the_run_directory(runs):
    """The same files as the one-process run, and each event once (two writers would double them)."""
    assert _files(runs["ddp"]) == _files(runs["single"])
    events = [(e["event"], e.get("step")) for e in _events(runs["ddp"])]
    assert len(events) == len(set(events))
    assert [e for e in _events(runs["ddp"]) if e["event"] == "start"][0]["processes"] == 2
    assert ("resume", 4) in events
    # one token store, written by rank 0 and mapped by both ranks, no leftover temporary copy
    assert [p.name.split("-")[0] for p in (runs["ddp"] / "cache").iterdir()] == ["train"]


def test_an_error_on_rank_zero_ends_both_ranks_with_one_line(runs):
    changed = _run(["-m", "minitx", "train", runs["config"], "--run-dir", runs["ddp"], "--nproc",
                    "2", "--set", "model.d_ff=128"])  # fmt: skip
    assert changed.returncode == 2
    errors = [line for line in changed.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {runs['ddp']} was trained with a different config (model.d_ff: 64 → 128); "
        "use another --run-dir, or --fresh to start over"
    ]
    assert "Traceback" not in changed.stderr


def test_a_failing_rank_ends_every_rank_instead_of_hanging(runs, tmp_path):
    failed = _torchrun(
        ["train", runs["config"], "--run-dir", tmp_path / "run", "--set", "train.max_steps=200"],
        MINITX_TEST_FAIL_RANK="1",
    )
    assert failed.returncode != 0
    assert "injected failure" in failed.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_sigterm_on_one_rank_stops_both_at_the_same_step_and_resumes(runs, tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", runs["config"], "--run-dir", run_dir, "--set", "train.max_steps=200"]
    stopped = _torchrun(args, MINITX_TEST_SIGNAL_RANK="1")
    assert stopped.returncode != 0  # torchrun itself exits 1 when a process fails
    assert "exitcode  : 143" in stopped.stderr  # 128 + SIGTERM, in torchrun's summary
    message = f"stopped by SIGTERM at step 3; saved {run_dir}/checkpoints/last"
    assert stopped.stderr.count(message) == 1  # rank 0 speaks for both
    assert json.loads((run_dir / "checkpoints/last/meta.json").read_text())["step"] == 3
    resumed = _torchrun([*args[:-1], "train.max_steps=5"])
    assert resumed.returncode == 0, resumed.stderr
    assert [e["step"] for e in _train_logs(run_dir)] == [1, 2, 3, 4, 5]


def test_nproc_inside_a_launched_process_is_refused(runs, tmp_path):
    """A process that a launcher started (WORLD_SIZE set) must not start torchrun again."""
    nested = _run(
        ["-m", "minitx", "train", runs["config"], "--run-dir", tmp_path / "run", "--nproc", "2"],
        WORLD_SIZE="2",
        RANK="0",
    )
    assert nested.returncode == 2
    assert nested.stderr == "error: --nproc starts torchrun itself; inside torchrun, leave it out\n"


def test_with_dropout_ranks_draw_their_own_masks_and_a_resume_draws_them_again(tmp_path):
    """Dropout 0.3 in two processes: 4 steps in one go equal 2 steps plus a resume to 4 (each
    rank reseeds each step), and the ranks still end with the same weights."""
    config = tmp_path / "dropout.yaml"
    config.write_text(CONFIG.replace("dropout: 0.0", "dropout: 0.3"))
    whole, parts, params = tmp_path / "whole", tmp_path / "parts", tmp_path / "params"
    params.mkdir()
    train = ["-m", "minitx", "train", config, "--nproc", "2", "-q", "--set"]
    assert _run([*train, "train.max_steps=4", "--run-dir", whole]).returncode == 0
    assert _run([*train, "train.max_steps=2", "--run-dir", parts]).returncode == 0
    resumed = _torchrun(
        ["train", config, "--run-dir", parts, "--set", "train.max_steps=4"],
        MINITX_TEST_PARAMS_DIR=str(params),
    )
    assert resumed.returncode == 0, resumed.stderr
    assert [e["loss"] for e in _train_logs(parts)] == [e["loss"] for e in _train_logs(whole)]
    rank0 = torch.load(params / "rank0.pt", weights_only=True)
    rank1 = torch.load(params / "rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)
    saved = load_file(whole / "checkpoints/last/model.safetensors")
    assert all(torch.equal(saved[name], rank0[name]) for name in saved)
    # and dropout was on: the same run without it logs other losses
    plain = tmp_path / "plain"
    train = [*train, "model.dropout=0.0", "--set", "train.max_steps=2", "--run-dir", plain]
    assert _run(train).returncode == 0
    assert _train_logs(plain)[1]["loss"] != _train_logs(whole)[1]["loss"]
