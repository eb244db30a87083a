"""`minitx sweep`: an Optuna study of tiny runs, its best config, resuming after a kill, and the
space file's checks."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import write_tiny_config
from test_cli import minitx as minitx_cli

pytest.importorskip("optuna")

SPACE = """
train.lr: {log: [1.0e-3, 1.0e-2]}
model.dropout: [0.0, 0.2]
tokenizer.vocab_size: {choice: [50, 60]}
"""


def _events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Three trials of 12 steps (validations at 6 and 12), then --show."""
    root = tmp_path_factory.mktemp("sweep")
    config = write_tiny_config(root)
    (root / "space.yaml").write_text(SPACE)
    result = minitx_cli(
        "sweep", config, "--space", root / "space.yaml", "--trials", 3, "--study", root / "study",
        "--quiet", cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root, result


def test_a_sweep_runs_its_trials_and_reports_the_best(swept):
    root, result = swept
    study = root / "study"
    trials = sorted(p.name for p in study.glob("trial-*") if p.is_dir())
    assert trials == ["trial-0", "trial-1", "trial-2"]
    rows = result.stdout.splitlines()
    assert rows[0].split()[:4] == ["trial", "state", "bleu", "steps"]
    values = {}
    for line in rows[1:4]:
        number, state, value, steps, lr, dropout, vocab = line.split()
        # Each trial ran with its own values: the run's saved config says what Optuna chose.
        saved = yaml.safe_load((study / f"trial-{number}" / "config.yaml").read_text())
        assert saved["train"]["lr"] == pytest.approx(float(lr), rel=1e-3)
        assert 1e-3 <= saved["train"]["lr"] <= 1e-2 and 0.0 <= saved["model"]["dropout"] <= 0.2
        assert saved["tokenizer"]["vocab_size"] == int(vocab) in (50, 60)
        # No pruning before five trials have finished: all three run to the end. The objective
        # is the best validation BLEU the run logged.
        logged = [e["bleu"] for e in _events(study / f"trial-{number}", "validation")]
        assert (state, steps) == ("complete", "12")
        assert float(value) == pytest.approx(max(logged), abs=1e-3)
        values[int(number)] = max(logged)
    best_value = max(values.values())
    best = yaml.safe_load((study / "best.yaml").read_text())
    chosen = next(n for n, v in values.items() if v == best_value)
    saved = yaml.safe_load((study / f"trial-{chosen}" / "config.yaml").read_text())
    assert best["train"]["lr"] == saved["train"]["lr"]
    assert best["model"]["dropout"] == saved["model"]["dropout"]
    page = (study / "report.html").read_text()
    assert page.count("<svg") == 4  # per trial, and one per parameter
    assert "http" not in page.replace("http-equiv", "")


def test_the_best_config_trains_as_it_is(swept):
    root, _ = swept
    result = minitx_cli(
        "train", root / "study" / "best.yaml", "--run-dir", root / "again", "-q", cwd=root
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["bleu"] >= 0


def test_a_finished_sweep_run_again_runs_nothing_more_and_refuses_another_space(swept):
    root, _ = swept
    args = ["sweep", root / "tiny.yaml", "--study", root / "study", "--trials", 3, "-q"]
    again = minitx_cli(*args, "--space", root / "space.yaml", cwd=root)
    assert again.returncode == 0, again.stderr
    assert "3 trial(s) finished, nothing left to run" in again.stderr
    assert not (root / "study" / "trial-3").exists()
    (root / "other.yaml").write_text("train.lr: [1.0e-3, 2.0e-3]\n")
    other = minitx_cli(*args, "--space", root / "other.yaml", cwd=root)
    assert other.returncode == 2 and "another config or space" in other.stderr


def test_a_killed_sweep_resumes_without_repeating_finished_trials(tmp_path):
    config = write_tiny_config(tmp_path)
    (tmp_path / "space.yaml").write_text("model.dropout: [0.0, 0.2]\n")
    args = [sys.executable, "-m", "minitx", "sweep", str(config), "--space", "space.yaml"]
    args += ["--trials", "2", "--study", "study", "-q", "--set", "train.max_steps=120"]
    args += ["--set", "train.eval_every=10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen(args, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env)
    first_lines = []
    for line in sweep.stderr:  # kill it once trial 0 is done and trial 1 has validated
        first_lines.append(line)
        if line.startswith("trial 0:"):
            break
    deadline = time.monotonic() + 120
    trial_1 = tmp_path / "study" / "trial-1"
    while not (trial_1 / "checkpoints" / "last").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    assert sweep.returncode == -signal.SIGKILL, "".join(first_lines)
    resumed = minitx_cli(*args[3:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 trial(s) finished, 1 interrupted one(s) to resume, 1 to run" in resumed.stderr
    assert "trial 0:" not in resumed.stderr  # not trained again
    assert len(_events(tmp_path / "study" / "trial-0", "start")) == 1
    # The interrupted trial went on in its own run directory, from its checkpoint, to the end.
    assert len(_events(trial_1, "start")) == 1
    assert _events(trial_1, "end")[-1]["step"] == 120
    assert not (tmp_path / "study" / "trial-2").exists()
    table = [line.split() for line in resumed.stdout.splitlines()[1:4]]
    assert [row[:2] for row in table] == [["0", "complete"], ["1", "fail"], ["2", "complete"]]


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ("model.dropotu: [0.1, 0.2]\n", "unknown config key 'model.dropotu'"),
        ("model.dropout: [0.3, 0.1]\n", "model.dropout: the range [0.3, 0.1] is empty"),
        ("model.n_heads: [1.5, 4]\n", "model.n_heads is an integer key"),
        ("model.norm: {choice: [pre, sideways]}\n", "model.norm: the value 'sideways' is refused"),
        ("model.dropout: [0.1, 1.5]\n", "model.dropout: the value 1.5 is refused"),
        ("model.norm: [0, 1]\n", "model.norm takes no range"),
        ("train.lr: {log: [0, 1.0e-3]}\n", "train.lr: a log range needs numbers above 0"),
        ("model: [1, 2]\n", "'model' is a section"),
        ("model.dropout: 0.1\n", "model.dropout: expected [LOW, HIGH]"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_key_and_runs_nothing(tmp_path, space, fragment):
    from minitx.errors import UserError
    from minitx.sweep.study import SweepRequest, prepare

    config = write_tiny_config(tmp_path)
    (tmp_path / "space.yaml").write_text(space)
    request = SweepRequest(config, (), tmp_path / "space.yaml", tmp_path / "study", trials=2)
    with pytest.raises(UserError, match="space.yaml: ") as caught:
        prepare(request)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "study").exists()


def test_the_command_line_says_what_is_missing(tmp_path):
    config = write_tiny_config(tmp_path)
    cases = [
        (["sweep", config], "give a CONFIG and a --space"),
        (["sweep", "--show", tmp_path], "is not a sweep directory"),
        (["sweep", config, "--space", tmp_path / "none.yaml"], "none.yaml not found"),
    ]
    for args, fragment in cases:
        result = minitx_cli(*args, cwd=tmp_path)
        assert result.returncode == 2 and fragment in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_without_optuna_the_sweep_names_its_extra(tmp_path, monkeypatch):
    from minitx.errors import UserError
    from minitx.sweep.study import SweepRequest, run_sweep

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now fails
    config = write_tiny_config(tmp_path)
    request = SweepRequest(config, (), tmp_path / "space.yaml", tmp_path / "study", trials=1)
    with pytest.raises(UserError, match=r"pip install 'minitx\[sweep\]' \(Optuna\)"):
        run_sweep(request, say=print)


class _Trial:
    """The part of an Optuna trial the objective uses: it prunes at the second report."""

    def __init__(self):
        self.reports = []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return len(self.reports) >= 2


def test_a_pruned_trial_stops_its_run(tmp_path):
    from minitx.sweep.study import Sweep, _Objective

    metrics = tmp_path / "metrics.jsonl"
    lines = [
        {"event": "validation", "step": s, "bleu": b} for s, b in [(10, 1.0), (20, 2.0), (30, 3.0)]
    ]
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"event": "valid')
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sweep = Sweep(tmp_path, {}, [], "bleu", lower_is_better=False, eval_every=10)
    objective = _Objective(sweep, request=None, say=print)
    trial = _Trial()
    try:
        assert objective._follow(trial, child, metrics) is None  # pruned
        assert trial.reports == [(10, 1.0), (20, 2.0)]
    finally:
        child.kill()


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_trial_process_ends_when_the_sweep_that_started_it_is_killed():
    """The sweep names itself in MINITX_END_WITH_PARENT (no preexec_fn, which is unsafe in a
    parent with threads); the child asks Linux for SIGTERM when that parent dies."""
    child_code = (
        "from minitx.runtime import end_with_parent; end_with_parent(); import time; "
        "print('ready', flush=True); time.sleep(60)"
    )
    parent_code = (
        "import os, subprocess, sys, time; "
        "env = {**os.environ, 'MINITX_END_WITH_PARENT': str(os.getpid())}; "
        f"child = subprocess.Popen([sys.executable, '-c', {child_code!r}], env=env); "
        "print(child.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    child_pid = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "ready"  # the child's line, on the same pipe
    parent.kill()
    parent.wait()

    def alive() -> bool:
        try:
            state = Path(f"/proc/{child_pid}/stat").read_text().split(") ")[1][0]
        except (FileNotFoundError, IndexError):
            return False
        return state not in "ZX"

    deadline = time.monotonic() + 30
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive()
