"""`minitx export`: a trained model as a self-contained directory another engine runs.

The directory holds the engine's model beside what minitx needs to use it: config.yaml, the
tokenizer (and labels.json) and export.json, which says what it is and where it came from. It is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from minitx.config import Config
from minitx.data.labels import save_label_names
from minitx.data.tokenizer import Codecs
from minitx.errors import UserError
from minitx.export import ctranslate2 as ct2
from minitx.export.engines import require_extra
from minitx.export.onnx import export_onnx
from minitx.model.transformer import Classifier, Seq2Seq
from minitx.run_dir import RunDir

FORMATS = ("ctranslate2", "onnx")


def check_request(task: str, fmt: str, quantization: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if fmt == "ctranslate2" and task != "translation":
        raise UserError("--format ctranslate2 is for translation runs; export classifiers as onnx")
    if quantization not in ct2.QUANTIZATIONS or (fmt == "onnx" and quantization != "none"):
        allowed = ", ".join(ct2.QUANTIZATIONS) if fmt == "ctranslate2" else "none"
        raise UserError(f"--quantization for {fmt} must be one of {allowed}, got '{quantization}'")
    require_extra("ctranslate2" if fmt == "ctranslate2" else "onnxruntime")


def export_model(
    model: Seq2Seq | Classifier,
    cfg: Config,
    codecs: Codecs,
    labels: list[str] | None,
    out: Path,
    fmt: str,
    quantization: str,
    origin: dict,
) -> dict:
    """Write the export of `model` into `out` (absent or empty); `origin` (run, checkpoint, step)
    goes into export.json, which is returned."""
    check_request(cfg.task, fmt, quantization)
    if fmt == "ctranslate2":
        ct2.check_expressible(cfg.model)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty directory; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        info = _write(model, cfg, codecs, labels, RunDir(staging), fmt, quantization, origin)
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    finally:  # a failure (or Ctrl-C) leaves nothing half-written behind
        shutil.rmtree(staging, ignore_errors=True)
    return info


def _write(model, cfg: Config, codecs: Codecs, labels, target: RunDir, fmt, quantization, origin):
    info = {"format": fmt, "task": cfg.task, "quantization": quantization, **origin}
    if fmt == "ctranslate2":
        spec = ct2.build_spec(model, cfg.model, _tokens(codecs.src), _tokens(codecs.tgt))
        ct2.save_spec(spec, target.root, quantization)
        info["max_positions"] = ct2.position_count(cfg.model)
    else:
        codec = codecs.src
        info["onnx_max_difference"] = export_onnx(
            model, target.onnx_file, codec.pad_id, codec.vocab_size
        )
        info["onnx_output"] = "logits" if cfg.task == "classification" else "memory"
    target.save_config(cfg)
    codecs.save(target)
    if labels is not None:
        save_label_names(labels, target.labels_file)
    target.export_file.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _tokens(codec) -> list[str]:
    tokenizer = codec.tokenizer
    return [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())]
