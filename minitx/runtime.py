"""Seed, device, threads and autocast dtype: resolved once at the start of a command."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import random
import signal
import sys

import torch

from minitx.config import Config
from minitx.errors import UserError

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def keep_freed_memory() -> None:
    """Let glibc keep freed tensor memory for reuse instead of handing it back to the OS.

    By default every large tensor is a fresh mmap that is unmapped when freed, so each training
    step page-faults its activations in again. On the 2-core CPU, keeping the memory made Multi30k
    training 1.2x (fp32) and 1.4x (bf16) faster, at the cost of a larger resident size
    (`python scripts/bench_train.py` against `--default-malloc`).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python and torch (CPU and CUDA); optionally allow only deterministic algorithms."""
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic (CUDA docs, "Reproducibility").
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("run.device is cuda but no CUDA GPU is visible; use run.device=auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("run.device is mps but MPS is not available; use run.device=auto or cpu")
    return torch.device(name)


def use_fast_matmuls(device: torch.device) -> None:
    """On CUDA, let fp32 matmuls use TF32 tensor cores (10-bit mantissa inputs, fp32 sums), as
    PyTorch's own mixed-precision recipes do; bf16/fp16 autocast matmuls are unaffected."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def with_resolved_dtype(cfg: Config, device: torch.device) -> Config:
    """`cfg` with run.dtype `auto` settled for `device` (see resolve_dtype)."""
    dtype = resolve_dtype(cfg.run.dtype, device)
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dtype=dtype))


def resolve_dtype(name: str, device: torch.device) -> str:
    """`auto` becomes bf16 where the hardware computes it natively, else fp32; others stay."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16() else "fp32"
    return "fp32"


def warn_if_slow_dtype(dtype: str, device: torch.device) -> None:
    """bf16 on a CPU that emulates it runs matmuls ~60x slower than fp32 (0.8 against 47 GFLOP/s
    for 512x512 on one Zen 3 core): a run would look hung. Say so once, with the fix."""
    if dtype == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        log.warning(
            "run.dtype is bf16, and this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 "
            "matmuls are emulated and far slower than fp32. Use --set run.dtype=fp32 (or auto)"
        )


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: without them bf16 matmuls are emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:  # not Linux
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclasses.dataclass(frozen=True)
class Compute:
    """Where tensors live and the precision their matmuls run in, resolved once per command."""

    device: torch.device
    dtype: str = "fp32"  # fp32, bf16 or fp16 (never auto: see resolve_dtype)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for matmuls (weights stay fp32), or nothing for fp32."""
        if self.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=DTYPES[self.dtype])


class StopRequest(contextlib.AbstractContextManager):
    """Turns the first SIGINT (Ctrl-C) or SIGTERM into a request to stop after the current step.

    A second Ctrl-C interrupts at once, as usual. `signal_number` is None until a signal arrives.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict = {}

    def _handle(self, signal_number, frame) -> None:
        if self.signal_number is not None and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_number = signal_number

    def __enter__(self) -> StopRequest:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# Set by a parent (minitx sweep) to its pid: the command then ends when that parent does.
END_WITH_PARENT = "MINITX_END_WITH_PARENT"


def end_with_parent() -> None:
    """When END_WITH_PARENT names this process's parent, have Linux send SIGTERM when the parent
    dies, even by SIGKILL; if it has died already, stop now. Done at start-up rather than in a
    `preexec_fn`, which is unsafe in a parent with threads (`minitx sweep --jobs N`)."""
    parent = os.environ.pop(END_WITH_PARENT, None)
    if parent is None or sys.platform != "linux":
        return
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # it died before the prctl
        raise SystemExit(128 + signal.SIGTERM)


_PR_SET_PDEATHSIG = 1
