"""Several training processes on torch.distributed: which rank this is, and what ranks agree on.

torchrun (`torch.distributed.run`) starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK and
the rendezvous; `join()` connects to it. The gradients themselves are all-reduced by
DistributedDataParallel in the training loop; this module holds the rest: one rank doing a job
before the others may start it, flags that every rank must see the same (stop now?), sums for logs.

Host-side agreements go through a gloo group whatever the backend, so that asking "does any rank
want to stop?" each step does not make a GPU wait for the host.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from minitx import runtime
from minitx.errors import ReportedElsewhere, UserError

T = TypeVar("T")

# How long a rank waits in a collective for the others. Rank 0 validates and writes checkpoints
# while the others wait at their next collective, so this bounds a validation pass, not a step.
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    control: object | None = None  # the gloo group for host-side flags (None: one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.control)

    def main_only(self, job: Callable[[], T]) -> T | None:
        """Run `job` on rank 0 alone (the others get None once it is done).

        When rank 0 fails with a user error, every rank stops with it, instead of the others
        running into a half-written directory or waiting forever.
        """
        if not self.distributed:
            return job()
        result, message = None, None
        if self.is_main:
            try:
                result = job()
            except UserError as exc:
                message = str(exc)
        shared = [message]
        dist.broadcast_object_list(shared, src=0, group=self.control)
        if shared[0] is not None:
            if self.is_main:
                raise UserError(shared[0])
            raise ReportedElsewhere(shared[0])
        return result

    def main_first(self, job: Callable[[], T]) -> T:
        """Run `job` on rank 0, then on the other ranks (which can read what rank 0 wrote)."""
        result = self.main_only(job)
        return result if self.is_main else job()

    def maximum(self, values: list[float]) -> list[float]:
        """Each value's maximum over the ranks (one host-side all-reduce)."""
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.control)
        return tensor.tolist()

    def any(self, flags: list[bool]) -> list[bool]:
        """Each flag true on every rank when it is true on any."""
        return [value > 0 for value in self.maximum([float(flag) for flag in flags])]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of a tensor on this rank's device (a copy; the input is unchanged)."""
        if not self.distributed:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total)
        return total


def launched() -> bool:
    """True inside a process started by torchrun for a group of more than one."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device_name: str) -> Ranks:
    """The ranks of this run: one process, or the torchrun group this process belongs to.

    Backend: NCCL on CUDA (device from LOCAL_RANK), gloo on CPU.
    """
    device = runtime.resolve_device(device_name)
    if not launched():
        return Ranks(device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"rank {rank} wants GPU {local_rank}, and this machine has "
                f"{torch.cuda.device_count()}; start at most one process per GPU"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise UserError(
            f"multi-process training runs on CUDA (NCCL) or CPU (gloo), not {device.type}; "
            "use run.device=cpu or one process"
        )
    dist.init_process_group(backend, timeout=TIMEOUT)
    control = dist.new_group(backend="gloo", timeout=TIMEOUT) if backend != "gloo" else None
    return Ranks(rank, world_size, local_rank, device, control or dist.group.WORLD)


def leave(ranks: Ranks) -> None:
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, module_args: list[str]) -> int:
    """`torchrun --standalone --nproc_per_node NPROC -m minitx MODULE_ARGS`, with torchrun's own
    launcher in this process; returns the exit code of the first process that failed, or 0."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun's default is 1 thread per process (with a warning); split this machine's cores.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (cores or 1) // nproc)))
    try:
        run(parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "minitx", *module_args]))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode if failure.exitcode > 0 else 128 - failure.exitcode  # -N: signal N
        if code not in (2, 130, 143):  # user errors and interruptions were reported by the rank
            print(
                f"error: rank {rank} failed (exit code {code}); its error is above", file=sys.stderr
            )
        return code
    return 0
