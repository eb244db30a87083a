"""A classifier as an ONNX graph for ONNX Runtime (minitx/inference/engines/onnx.py runs it).

The graph takes padded token ids `src` (batch, length; both axes dynamic) and gives the class
logits.
It is traced in fp32 with torch's TorchScript exporter, then run once in ONNX Runtime against
PyTorch on a batch of another shape: an export that does not match is refused, not written.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch

from minitx.errors import UserError
from minitx.inference.engines.onnx import onnx_session
from minitx.model.transformer import Classifier

OPSET = 17
TOLERANCE = 1e-4  # largest |ONNX Runtime - PyTorch| accepted on the check batch


def export_onnx(model: Classifier, path: Path, pad_id: int, vocab_size: int) -> float:
    """Write `model` (fp32, eval mode) to `path`; return the largest difference from PyTorch."""
    # .float() and .eval() change a module in place: a copy's, not the caller's.
    graph = copy.deepcopy(model).float().cpu().eval()
    example = _batch(2, 7, pad_id, vocab_size, seed=0)
    axes = {"src": {0: "batch", 1: "length"}, "logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about shape checks that hold for any shape
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            input_names=["src"],
            output_names=["logits"],
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


def _batch(rows: int, length: int, pad_id: int, vocab_size: int, seed: int) -> torch.Tensor:
    """Token ids with padding in the second row, as a real batch has."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab_size, (rows, length), generator=generator)
    src[1, length // 2 :] = pad_id
    return src
