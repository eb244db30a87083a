"""Inference engines behind one protocol (base.Engine): the PyTorch run, and the runtimes that
run exports, registered by the format name that export.json records."""

from __future__ import annotations

from collections.abc import Callable

from minitx.inference.engines.base import Engine, ExportedRun
from minitx.inference.engines.ctranslate2 import CTranslate2Engine
from minitx.inference.engines.hf import TransformersEngine
from minitx.inference.engines.onnx import OnnxEngine
from minitx.inference.engines.pytorch import PyTorchEngine

# export.json's "format" → the engine that runs that export.
EXPORT_ENGINES: dict[str, Callable[[ExportedRun], Engine]] = {
    "ctranslate2": CTranslate2Engine,
    "onnx": OnnxEngine,
    "transformers": TransformersEngine,
}

__all__ = ["EXPORT_ENGINES", "Engine", "ExportedRun", "PyTorchEngine"]
