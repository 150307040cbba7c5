"""torch.distributed as yolotr uses it: joining the launcher's process group, and the few collectives everything
else needs. The bottom layer: every call is a plain pass-through without a process group (one process, or a
process group of one), so single-process code paths make the same calls.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_process_group(backend: str, timeout: timedelta) -> None:
    """Joins the launcher's process group (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`/`PORT` from torchrun, accelerate or
    Slurm).

    Under torchrun's elastic agent, every restart attempt reuses the agent's TCP store, where the previous attempt's
    gloo addresses are still written: a new rank may read a dead peer's address and hang or fail to connect (seen
    with torch 2.14 and `--max-restarts`). A key prefix per attempt keeps attempts apart."""
    rank_, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend, rank=rank_, world_size=world, timeout=timeout)
        return
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False, timeout=timeout
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.PrefixStore(f"yolotr/attempt-{attempt}", store)
    dist.init_process_group(backend, store=store, rank=rank_, world_size=world, timeout=timeout)


def destroy_process_group() -> None:
    """An orderly shutdown: a live gloo group at interpreter exit can abort the process."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_ranks(flag: bool) -> bool:
    """True on every rank when `flag` is true on every rank (one tiny all-reduce)."""
    if not is_distributed():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    agreed = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
    return bool(agreed.item())


def together(work: Callable[[], T], *, poll_s: float = 2.0) -> T:
    """`work()` on every rank, however long it takes on some of them, without a collective that outwaits the
    process-group timeout (a large dataset converted on first use by the rank holding the cache's lock, shards
    downloaded: yolov5#7481). `work` runs in a thread; meanwhile every rank joins one tiny all-reduce every
    `poll_s` seconds until all are done, so the ranks done first wait in short collectives, never in one long one.
    An exception of `work` is raised on its rank once every rank is done."""
    if not is_distributed():
        return work()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name="yolotr-together", daemon=True)
    thread.start()
    while True:
        thread.join(timeout=poll_s)
        if all_ranks(not thread.is_alive()):
            break
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def all_gather_object(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def gather_to_rank0(value: T) -> list[T] | None:
    """Every rank's `value` as a list on rank 0 (in rank order), None on the other ranks."""
    if not is_distributed():
        return [value]
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def broadcast_from_rank0(value: T | None) -> T:
    """Rank 0's `value` on every rank (the others pass None)."""
    if not is_distributed():
        return value  # type: ignore[return-value]
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_tensors_from_rank0(tensors: list[torch.Tensor]) -> None:
    """Overwrites `tensors` in place with rank 0's values."""
    if is_distributed():
        for tensor in tensors:
            dist.broadcast(tensor, 0)


def all_reduce_mean(tensor: torch.Tensor) -> None:
    """In place: the mean over ranks (SUM then divide: gloo has no AVG)."""
    if is_distributed():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()


def collective_failure(error: BaseException) -> str | None:
    """"timeout" when `error` is a collective that timed out (gloo, NCCL), "lost" when a peer's connection went away
    during one, else None: what the top of `yolotr train` turns into one line naming the rank(s) it waited for."""
    text = str(error)
    # A timeout met inside DDP's gradient all-reduce comes back from backward as the comm hook's error, which names
    # neither gloo nor NCCL ("Application timeout caused pair closure ... ddp_comm_hooks/default_hooks.py").
    if not isinstance(error, RuntimeError) or not re.search(r"gloo|nccl|ProcessGroup|c10d|ddp_comm_hooks|pair closure",
                                                            text, re.IGNORECASE):
        return None
    if re.search(r"timed out|timeout", text, re.IGNORECASE):
        return "timeout"
    if re.search(r"connection (closed|reset)|broken pipe|peer", text, re.IGNORECASE):
        return "lost"
    return None
