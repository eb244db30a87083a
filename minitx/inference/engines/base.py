"""What every inference engine offers, and what an export directory gives the engine that runs it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from minitx.config import Config, DecodeConfig
from minitx.data.tokenizer import Codecs
from minitx.errors import UserError
from minitx.inference.decode import Hypothesis


class Engine(Protocol):
    """Runs a trained model: the PyTorch run itself, or an export another runtime executes.

    An engine offers what its format can compute: `translate` for models that write text,
    `class_probabilities` for classifiers. The exporter of a format declares the tasks it
    supports, so a task never meets an engine that lacks its operation (see minitx/export)."""

    name: str  # what GET /info reports: pytorch, ctranslate2, onnx

    def translate(self, texts: list[str], decode: DecodeConfig) -> list[list[Hypothesis]]:
        """Each text's hypotheses, best first."""
        ...

    def class_probabilities(self, src: torch.Tensor) -> torch.Tensor:
        """(B, C) class probabilities of padded token ids (B, T)."""
        ...


@dataclass(frozen=True)
class ExportedRun:
    """An export directory as its engine needs it: the files, config, tokenizer and export.json."""

    directory: Path
    model_file: Path  # the ONNX graph (CTranslate2 reads the directory)
    config: Config
    codecs: Codecs
    info: dict


def require_extra(module: str) -> None:
    """Import `module` or say which extra to install (one line, exit 2)."""
    try:
        __import__(module)
    except ImportError:
        raise UserError(
            f"this needs {module}: pip install 'minitx[export]' (CTranslate2, ONNX, ONNX Runtime)"
        ) from None
