"""The export formats, registered by name: what each writes, which models it can express (and so
which tasks it serves), its quantizations, and the engine that runs its output
(minitx/inference/engines, under the same name). A format that no engine can run is not offered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from minitx.config import Config
from minitx.data.tokenizer import Codecs
from minitx.errors import UserError, require_extra
from minitx.export import ctranslate2 as ct2
from minitx.export import hf
from minitx.export.onnx import export_onnx
from minitx.inference.engines import EXPORT_ENGINES
from minitx.inference.engines.hf import quiet_transformers
from minitx.model.transformer import Classifier, Seq2Seq
from minitx.run_dir import RunDir


@dataclass(frozen=True)
class ExportFormat:
    name: str
    model_type: type[nn.Module]  # the models it expresses: a task's `model_type`
    quantizations: tuple[str, ...]
    runtime: str  # the Python module its engine needs
    extra: str  # the pip extra that installs it
    # (model, cfg, codecs, target, quantization, source run) → what export.json records beside
    # the origin; the target already holds minitx's config and tokenizer, which it may refine
    write: Callable[[nn.Module, Config, Codecs, RunDir, str, RunDir], dict]
    # refuses, before any weights load, a config the format cannot express
    check: Callable[[Config], None] = lambda cfg: None


def _write_ctranslate2(model, cfg: Config, codecs: Codecs, target: RunDir, quantization, source):
    spec = ct2.build_spec(model, cfg.model, _tokens(codecs.src), _tokens(codecs.tgt))
    ct2.save_spec(spec, target.root, quantization)
    return {"max_positions": ct2.position_count(cfg.model)}


def _write_onnx(model, cfg: Config, codecs: Codecs, target: RunDir, quantization, source) -> dict:
    codec = codecs.src
    difference = export_onnx(model, target.onnx_file, codec.pad_id, codec.vocab_size)
    return {"onnx_max_difference": difference}


def _write_transformers(model, cfg: Config, codecs: Codecs, target: RunDir, quantization, source):
    from transformers import GenerationConfig

    exported = hf.hf_model(model, cfg, codecs)
    exported.generation_config = GenerationConfig(**hf.generation_settings(cfg, codecs.tgt))
    with quiet_transformers():
        exported.save_pretrained(target.root)
    hf.write_tokenizer(codecs.tgt, target)
    architecture = exported.config.model_type
    (target.root / "README.md").write_text(hf.model_card(cfg, source, architecture), "utf-8")
    return {"architecture": type(exported).__name__}


def _tokens(codec) -> list[str]:
    tokenizer = codec.tokenizer
    return [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())]


EXPORT_FORMATS = {
    fmt.name: fmt
    for fmt in (
        ExportFormat(
            "ctranslate2",
            Seq2Seq,
            ct2.QUANTIZATIONS,
            "ctranslate2",
            "export",
            _write_ctranslate2,
            lambda cfg: ct2.check_expressible(cfg.model),
        ),
        ExportFormat("onnx", Classifier, ("none",), "onnxruntime", "export", _write_onnx),
        ExportFormat(
            "transformers",
            Seq2Seq,
            ("none",),
            "transformers",
            "hf",
            _write_transformers,
            hf.check_expressible,
        ),
    )
}
assert set(EXPORT_FORMATS) <= set(EXPORT_ENGINES), "every export format needs its engine"


def formats_for(model_type: type[nn.Module]) -> list[str]:
    """The formats that can express a task's model, the default first."""
    return [name for name, fmt in EXPORT_FORMATS.items() if issubclass(model_type, fmt.model_type)]


def check_request(task, cfg: Config, fmt: str | None, quantization: str) -> ExportFormat:
    """The format asked for (default: the first that fits `task`'s model), checked against the
    run's config before any weights load."""
    offered = formats_for(task.model_type)
    fmt = fmt or (offered[0] if offered else None)
    if fmt not in offered:
        known = f"; this {task.name} run can be exported as {', '.join(offered)}" if offered else ""
        raise UserError(
            f"--format {fmt} does not export {task.name} runs{known}"
            if fmt in EXPORT_FORMATS
            else f"--format must be one of {', '.join(offered or EXPORT_FORMATS)}, got '{fmt}'"
        )
    chosen = EXPORT_FORMATS[fmt]
    if quantization not in chosen.quantizations:
        allowed = ", ".join(chosen.quantizations)
        raise UserError(f"--quantization for {fmt} must be one of {allowed}, got '{quantization}'")
    chosen.check(cfg)
    require_extra(chosen.runtime, chosen.extra)
    return chosen
