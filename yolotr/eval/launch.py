"""Process setup for the evaluation commands: the device, and a process group when launched by torchrun.

The trainer has its own (Accelerate-based) setup; `yolotr val` only needs torch.distributed for the gather
and must also run as a plain single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Self

import torch

from yolotr.distributed import barrier, destroy_process_group, init_process_group


@dataclass
class EvalProcess:
    rank: int
    world_size: int
    device: torch.device
    owns_process_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close(finished=exc_type is None)

    def close(self, *, finished: bool = True) -> None:
        """Leaves the process group. After a normal finish every rank first waits for the others: a rank that
        tears its gloo side down while a peer is still printing or writing can abort at exit ("terminate called
        without an active exception", seen once in CI under load). After an error there is no wait, since the
        peers may never arrive."""
        if self.owns_process_group:
            if finished:
                barrier()
            destroy_process_group()


def start_process(device: str | None = None, timeout_s: float = 1800) -> EvalProcess:
    """Pick the device (default: this rank's GPU, else CPU) and join the launcher's process group
    (NCCL on GPUs, gloo on CPU) when `WORLD_SIZE` > 1. Use it as a context manager: `with start_process() as p:`
    leaves the group at the end, after waiting for the other ranks unless the block raised."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device and device != "cuda":
        chosen = torch.device(device)
    elif device == "cuda":
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    owns = False
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        init_process_group(backend, timedelta(seconds=timeout_s))
        owns = True
    return EvalProcess(rank=rank, world_size=world_size, device=chosen, owns_process_group=owns)
