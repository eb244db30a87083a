"""A classifier, or the encoder of a translation model, as an ONNX graph for ONNX Runtime.

The graph takes padded token ids `src` (batch, length; both axes dynamic) and gives the class
logits (classification) or the encoder's output (translation: `memory`, batch × length × d_model).
It is traced in fp32 with torch's TorchScript exporter, then run once in ONNX Runtime against
PyTorch on a batch of another shape: an export that does not match is refused, not written.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minitx.errors import UserError
from minitx.model.transformer import Classifier, Seq2Seq

OPSET = 17
TOLERANCE = 1e-4  # largest |ONNX Runtime - PyTorch| accepted on the check batch


class _Encoder(nn.Module):
    """The encoder of a Seq2Seq with one output (the memory), for tracing."""

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        memory, _ = self.model.encode(src)
        return memory


def export_onnx(model: Classifier | Seq2Seq, path: Path, pad_id: int, vocab_size: int) -> float:
    """Write `model` (fp32, eval mode) to `path`; return the largest difference from PyTorch."""
    graph = copy.deepcopy(model)  # .float() and .eval() change a module in place: not the caller's
    graph = (graph if isinstance(graph, Classifier) else _Encoder(graph)).float().cpu().eval()
    output = "logits" if isinstance(model, Classifier) else "memory"
    example = _batch(2, 7, pad_id, vocab_size, seed=0)
    axes = {"src": {0: "batch", 1: "length"}, output: {0: "batch"}}
    if output == "memory":
        axes[output][1] = "length"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about shape checks that hold for any shape
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            input_names=["src"],
            output_names=[output],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    check = _batch(3, 11, pad_id, vocab_size, seed=1)
    with torch.no_grad():
        expected = graph(check).numpy()
    difference = float(np.abs(run_onnx(path, check.numpy()) - expected).max())
    if difference > TOLERANCE:
        path.unlink()
        raise UserError(
            f"the ONNX export differs from PyTorch by {difference:.2e} (more than {TOLERANCE}); "
            "nothing was written"
        )
    return difference


def run_onnx(path: Path, src: np.ndarray) -> np.ndarray:
    return onnx_session(path).run(None, {"src": src})[0]


def onnx_session(path: Path, threads: int = 0):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per core
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _batch(rows: int, length: int, pad_id: int, vocab_size: int, seed: int) -> torch.Tensor:
    """Token ids with padding in the second row, as a real batch has."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab_size, (rows, length), generator=generator)
    src[1, length // 2 :] = pad_id
    return src
