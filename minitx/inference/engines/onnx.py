"""The ONNX Runtime engine: a classifier export, padded token ids → class probabilities."""

from __future__ import annotations

from pathlib import Path

import torch

from minitx.errors import require_extra
from minitx.inference.engines.base import ExportedRun


class OnnxEngine:
    """Offers `class_probabilities` only: the onnx exporter is declared for classifiers."""

    name = "onnx"

    def __init__(self, export: ExportedRun):
        require_extra("onnxruntime")
        self.session = onnx_session(export.model_file, export.config.run.threads or 0)

    def class_probabilities(self, src: torch.Tensor) -> torch.Tensor:
        logits = self.session.run(None, {"src": src.cpu().numpy()})[0]
        return torch.from_numpy(logits).float().softmax(-1)


def onnx_session(path: Path, threads: int = 0):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per core
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
