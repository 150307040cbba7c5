"""Launched by test_together.py under torchrun (gloo, a 2 s process-group timeout): rank 0's work takes 4x the
timeout, rank 1's none, then every rank joins one all-reduce. With `--together` the work runs through
`distributed.together`; without, as a plain call (which the test expects to time out)."""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from yolotr.distributed import init_process_group, together


def main() -> None:
    init_process_group("gloo", timedelta(seconds=2))
    rank = dist.get_rank()

    def work() -> int:
        time.sleep(8.0 if rank == 0 else 0.0)
        return rank * 10

    value = together(work, poll_s=0.5) if "--together" in sys.argv else work()
    total = torch.tensor([value])
    dist.all_reduce(total)
    print(f"rank {rank}: value {value}, sum {int(total.item())}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
