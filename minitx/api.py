"""The Python API: `minitx.load(run_dir)` gives a trained model to translate, classify and look into;
`minitx.train(config)` trains one. The command line is built on these two.

    import minitx

    model = minitx.load("runs/quickstart")
    best = model.translate(["three hundred forty two"])[0].text
    five = model.translate(["seventy two"], beam_size=5, n_best=5)[0].hypotheses
    drawn = model.translate(["seventy two"], sample=True, n_best=3, top_p=0.9, seed=1)
    scores = minitx.train("configs/quickstart.yaml", ["train.max_steps=500"], "runs/short")
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from minitx import runtime
from minitx.config import (
    Config,
    DecodeConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from minitx.data.labels import load_label_names
from minitx.data.tokenizer import Codecs, load_codecs
from minitx.errors import UserError
from minitx.inference.decode import Hypothesis
from minitx.inference.engines import EXPORT_ENGINES, Engine, ExportedRun, PyTorchEngine
from minitx.inference.steering import Steering
from minitx.model.checkpoint import find_checkpoint, load_meta, load_weights
from minitx.run_dir import RunDir
from minitx.runtime import Compute
from minitx.tasks import Task, configured, get_task


@dataclass
class Translation:
    """One source sentence and its hypotheses, best first (several with `n_best`)."""

    source: str
    hypotheses: list[Hypothesis]

    @property
    def text(self) -> str:
        """The best translation."""
        return self.hypotheses[0].text if self.hypotheses else ""


@dataclass
class Prediction:
    """A classification: the most probable label, its probability, and every label's."""

    text: str
    label: str
    probability: float
    probabilities: dict[str, float]


@dataclass
class Model:
    """A trained run, or an export of one, loaded once: its config, task, tokenizer, label names
    and the engine that runs it (the PyTorch model, CTranslate2 or ONNX Runtime)."""

    run: RunDir
    config: Config
    task: Task
    codecs: Codecs
    labels: list[str] | None  # label names in class-index order, for tasks that have them
    engine: Engine
    compute: Compute
    checkpoint_step: int
    members: tuple[str, ...] = ()  # an ensemble's runs (see `load`); () for one run

    def decode_config(self, **options: Any) -> DecodeConfig:
        """The run's decode settings with `options` (DecodeConfig's fields: beam_size, n_best,
        length_penalty, sample, temperature, top_k, top_p, seed, alignments, …) applied and
        validated like the config file; options given as None keep the run's value."""
        names = [option.name for option in dataclasses.fields(DecodeConfig)]
        for name in options:
            if name not in names:
                nearest = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean '{nearest[0]}'?)" if nearest else ""
                raise UserError(
                    f"unknown decode option '{name}'{hint}; the decode options are "
                    f"{', '.join(names)}"
                )
        given = {key: value for key, value in options.items() if value is not None}
        if not given:
            return self.config.decode
        raw = config_to_dict(self.config)
        raw["decode"].update(given)
        return config_from_dict(raw, source="decode options").decode

    def translate(
        self,
        texts: Sequence[str],
        decode: DecodeConfig | None = None,
        steering: Steering | Sequence[Steering | None] | None = None,
        **options: Any,
    ) -> list[Translation]:
        """Translate each text with `decode`, settings from `decode_config` (checked once for
        many calls), or with decode `options` applied to the run's settings for this call.
        `steering`: a `Steering` for every text, or one per text (None for none): a target prefix,
        lexical constraints, banned phrases."""
        if isinstance(texts, str):
            raise UserError("translate takes a list of texts; wrap a single text in a list")
        if decode is not None and options:
            raise UserError("translate takes a DecodeConfig or decode options, not both")
        self._require(self.task.generates_text, "translate")
        if decode is None:
            decode = self.decode_config(**options)
        if isinstance(steering, Steering):
            steering = [steering] * len(texts)
        steering = list(steering or [])
        if steering and len(steering) != len(texts):
            raise UserError(
                f"{len(steering)} steerings for {len(texts)} texts: give one per text, or one "
                "Steering for all"
            )
        found = self.engine.translate(list(texts), decode, steering)
        return [Translation(text, hyps) for text, hyps in zip(texts, found, strict=True)]

    def translate_split(
        self, split: str, output: str | Path, decode: DecodeConfig | None = None
    ) -> tuple[Path, Path]:
        """Translate the source side of a split of the run's data (a role or the data's own
        split name) into OUTPUT.<src> and OUTPUT.<tgt>, a parallel corpus `data.path` reads: a
        distilled or back-translated training set. A call that was stopped goes on after the
        pairs it wrote. Returns the two files."""
        from minitx.data.parallel_output import ParallelOutput
        from minitx.progress import bar

        self._require(self.task.generates_text, "translate")
        decode = dataclasses.replace(decode or self.config.decode, n_best=1, alignments=False)
        sources = list(self.task.load_split(self.config, split)["src"])
        out = ParallelOutput(Path(output), self.config.data.src, self.config.data.tgt)
        chunk = 1000  # pairs written (and kept by a stop) at a time
        with bar(total=len(sources), initial=out.done, desc="translate", unit="sent") as shown:
            for start in range(out.done, len(sources), chunk):
                part = sources[start : start + chunk]
                found = self.engine.translate(part, decode)
                out.append(part, [hypotheses[0].text if hypotheses else "" for hypotheses in found])
                shown.update(len(part))
        return out.src_file, out.tgt_file

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify each text (sentence pairs as `text<TAB>pair`)."""
        if isinstance(texts, str):
            raise UserError("predict takes a list of texts; wrap a single text in a list")
        self._require(not self.task.generates_text, "predict")
        predictions = []
        found = self.task.class_probabilities(self, list(texts))
        for text, probabilities in zip(texts, found, strict=True):
            label = max(probabilities, key=probabilities.get)
            predictions.append(Prediction(text, label, probabilities[label], probabilities))
        return predictions

    def evaluate(
        self, split: str = "test", steering: Sequence[Steering | None] = (), **options: Any
    ) -> dict:
        """Score a split of the run's data (a role or the data's own split name), as `minitx
        eval` does, writing RUN_DIR/eval/<split>.* (an ensemble: FIRST_RUN/eval/ensemble/);
        `steering`, one per example of the split, steers each translation; `options` override
        decode settings."""
        # Only the best hypothesis is scored: n-best and alignments do not apply.
        decode = self.decode_config(**{**options, "n_best": 1, "alignments": False})
        if steering and not self.task.generates_text:
            raise UserError(f"steering is for runs that write text; {self.run} is not one")
        self.run.eval_dir.mkdir(parents=True, exist_ok=True)
        report = self.task.evaluate(self, split, decode, list(steering))
        if self.members:
            report["ensemble"] = list(self.members)
        files = self.run.eval_files(split)
        files.report.write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        if "confusion_matrix" in report:
            from minitx.views.plots import plot_confusion_matrix  # matplotlib loads only here

            plot_confusion_matrix(
                report["confusion_matrix"]["matrix"],
                self.labels,
                files.confusion,
                title=f"{self.run.name}: {split}, accuracy {report['accuracy']:.2f}%",
            )
        return report

    def attention(self, text: str) -> dict:
        """Every attention map of one input (see `minitx attention`): tokens, and per kind and
        layer the weights (H, Tq, Tk)."""
        return self.task.attention_maps(self, text)

    def _require(self, fits: bool, command: str) -> None:
        if not fits:
            raise UserError(
                f"{self.run} is a {self.config.task} run; `minitx {command}` is not for it"
            )


def load(
    run_dir: str | Path | Sequence[str | Path],
    checkpoint: str = "best",
    device: str | None = None,
    overrides: Sequence[str] = (),
) -> Model:
    """Load a run written by `minitx train`, or an export written by `minitx export`; several
    translation runs (a list) load as one ensemble. `checkpoint`: best, last, averaged or
    step_N; `device`: cpu, cuda, mps (default: the run's run.device); `overrides`:
    `decode.*`/`run.*` settings as `--set` takes them, e.g. ["decode.beam_size=1"]."""
    if not isinstance(run_dir, str | Path):
        runs = list(run_dir)
        if len(runs) == 1:
            return load(runs[0], checkpoint, device, overrides)
        return _ensemble([load(run, checkpoint, device, overrides) for run in runs])
    run = RunDir(run_dir)
    directory = run.checkpoint(checkpoint)  # refuses a name that is not a checkpoint's
    cfg = run.config()
    overrides = [*overrides, *([f"run.device={device}"] if device else [])]
    if overrides:
        cfg = config_from_dict(apply_overrides(config_to_dict(cfg), overrides), source="--set")
    task = get_task(cfg.task)
    codecs = load_codecs(run)
    labels = load_label_names(run.labels_file) if run.labels_file.is_file() else None
    if run.is_export():
        info = run.export_info()
        engine = _export_engine(task, info, run)(
            ExportedRun(run.root, run.onnx_file, cfg, codecs, info)
        )
        compute = Compute(torch.device("cpu"), "fp32")  # for what runs beside the engine
        return Model(run, cfg, task, codecs, labels, engine, compute, int(info.get("step", 0)))
    runtime.set_threads(cfg.run.threads)
    device_ = runtime.resolve_device(cfg.run.device)
    cfg = runtime.with_resolved_dtype(cfg, device_)
    runtime.warn_if_slow_dtype(cfg.run.dtype, device_)
    found = find_checkpoint(directory)
    if found is None:
        raise UserError(f"{run} has no '{checkpoint}' checkpoint yet; train it first")
    network = task.build_model(cfg, codecs, labels)
    load_weights(found, network, device_)
    network.to(device_).eval()
    compute = Compute(device_, cfg.run.dtype)
    engine = PyTorchEngine(network, codecs, compute)
    step = int(load_meta(found).get("step", 0))
    return Model(run, cfg, task, codecs, labels, engine, compute, step)


def _ensemble(models: list[Model]) -> Model:
    """Runs that decode as one: the first run's config, tokenizers and decode settings; each
    model's distributions combined per step (inference/ensemble.py)."""
    from minitx.inference.ensemble import Ensemble

    first = models[0]
    for model in models:
        if not isinstance(model.engine, PyTorchEngine):
            raise UserError(f"{model.run} is an export; an ensemble is made of run directories")
        if model.task.name != first.task.name or not model.task.generates_text:
            raise UserError(
                f"an ensemble is of translation runs: {first.run} is a {first.task.name} run, "
                f"{model.run} a {model.task.name} run"
            )
        for side in ("src", "tgt"):
            if (
                getattr(model.codecs, side).tokenizer.get_vocab()
                != getattr(first.codecs, side).tokenizer.get_vocab()
            ):
                raise UserError(
                    f"{model.run} and {first.run} have different {side} vocabularies; an "
                    "ensemble's runs share their tokenizer (train the others with "
                    f"tokenizer.path: {first.run.root}/tokenizer.json)"
                )
    network = Ensemble(
        [model.engine.model for model in models], first.config.decode.ensemble_combine
    )
    run = RunDir(first.run.root)
    run.eval_dir = first.run.eval_dir / "ensemble"  # not to overwrite the first run's scores
    engine = PyTorchEngine(network, first.codecs, first.compute)
    members = tuple(str(model.run) for model in models)
    return dataclasses.replace(first, run=run, engine=engine, members=members)


def _export_engine(task: Task, info: dict, run: RunDir) -> Callable[[ExportedRun], Engine]:
    """The engine for an export's format, if it offers what the task needs: an export written by
    an older minitx (an ONNX translation encoder) or edited by hand is one clear error."""
    opens = EXPORT_ENGINES.get(info.get("format"))
    needed = "translate" if task.generates_text else "class_probabilities"
    if opens is None or not hasattr(opens, needed):
        raise UserError(
            f"{run} holds a {info.get('format')} export of a {task.name} model, which minitx "
            "cannot run; export the run again (`minitx export` picks a format that fits)"
        )
    return opens


def train(
    config: str | Path | Config,
    overrides: Sequence[str] = (),
    run_dir: str | Path | None = None,
    fresh: bool = False,
) -> dict:
    """Train (or resume) a run from a YAML file or a Config; return the final validation scores.

    `run_dir` defaults to runs/<config file name> (runs/run for a Config). Inside a torchrun group
    every process calls this, and only rank 0 returns the scores (the others get {})."""
    if isinstance(config, Config):
        # Through the same validation as a file: cross-field checks, resolved defaults.
        raw = apply_overrides(config_to_dict(config), tuple(overrides))
        cfg = config_from_dict(raw, source="config")
        default_dir = Path("runs") / "run"
    else:
        cfg, default_dir = load_config(config, overrides), Path("runs") / Path(config).stem
    return train_group(cfg, RunDir(run_dir or default_dir), fresh) or {}


def train_group(cfg: Config, run: RunDir, fresh: bool, quiet: bool = False) -> dict | None:
    """Train in this process, alone or as one rank of a torchrun group; rank 0 holds the run's
    lock and prepares it. Returns the scores on rank 0, None on the others."""
    from minitx.progress import show_status
    from minitx.training import distributed
    from minitx.training.loop import train as train_run

    cfg = configured(cfg)  # the task's own checks, before anything is written
    ranks = distributed.join(cfg.run.device)
    try:
        if not ranks.is_main:
            show_status(quiet, silent=True)  # rank 0 speaks for the group
        with contextlib.ExitStack() as held:
            ranks.main_only(lambda: (held.enter_context(run.lock()), run.prepare(cfg, fresh)))
            scores = train_run(cfg, run, ranks)
    finally:
        distributed.leave(ranks)
    return scores if ranks.is_main else None


def export_run(
    run_dir: str | Path,
    out: str | Path,
    format: str | None = None,  # noqa: A002 (the CLI's --format)
    quantization: str = "none",
    checkpoint: str = "best",
) -> dict:
    """Export a run as `minitx export` does (format: ctranslate2, onnx or transformers; default:
    the first that fits the run); returns what the export's export.json records."""
    from minitx.export.formats import check_request
    from minitx.export.writer import export_model
    from minitx.tasks.shared import pytorch_model

    run = RunDir(run_dir)
    run_config = run.config()
    chosen = check_request(get_task(run_config.task), run_config, format, quantization)
    model = load(run.root, checkpoint, overrides=("run.device=cpu", "run.dtype=fp32"))
    origin = {"run": str(run_dir), "checkpoint": checkpoint, "step": model.checkpoint_step}
    return export_model(
        pytorch_model(model, "export"),
        dataclasses.replace(model.config, run=run_config.run),  # the run's device, not the export's
        model.codecs,
        model.labels,
        Path(out),
        chosen,
        quantization,
        origin,
    )


def import_model(source: str, run_dir: str | Path) -> Model:
    """Import a Marian (OPUS-MT) model, `hf:PATH` or `hf:HUB_ID`, as a run in `run_dir` (absent or
    empty), as `minitx import` does; returns it loaded."""
    from minitx.interop.marian import import_marian

    import_marian(source, Path(run_dir))
    return load(run_dir)


__all__ = [
    "Hypothesis",
    "Model",
    "Prediction",
    "Translation",
    "export_run",
    "import_model",
    "load",
    "train",
]
