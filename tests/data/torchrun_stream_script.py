"""Launched by test_stream_multiprocess.py under torchrun: every rank iterates its TrainStream in lockstep (one gloo
all_reduce per step), appends what it trained on to a shared ledger, and either stops after `--stop-step` steps
(rank 0 saving the stream state, as a checkpoint would) or resumes from a saved state to the end of the epoch."""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist

from yolotr.config.augment import AugmentConfig
from yolotr.data.spec import load_data_yaml
from yolotr.data.stream import TrainStream
from yolotr.debug.ledger import LedgerWriter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_yaml")
    parser.add_argument("run_dir")
    parser.add_argument("--stop-step", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--global-batch-size", type=int, default=8)
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    spec = load_data_yaml(args.data_yaml)
    stream = TrainStream(spec.train, global_batch_size=args.global_batch_size, rank=rank, world_size=world_size,
                         seed=0, imgsz=32, augment=AugmentConfig(), num_workers=1)
    state_file = os.path.join(args.run_dir, "stream_state.json")
    if args.resume:
        with open(state_file) as f:
            stream.load_state_dict(json.load(f))

    ledger = LedgerWriter(os.path.join(args.run_dir, "ledger.jsonl"))
    iterator = iter(stream)
    steps = 0
    for batch in iterator:
        count = torch.tensor([len(batch.keys)])
        dist.all_reduce(count)  # every rank must reach every step, or this hangs
        ledger.write(batch.epoch, batch.step, rank, batch.keys)
        steps += 1
        if steps == args.stop_step:
            break
    iterator.close()
    ledger.close()
    if args.stop_step is not None and rank == 0:
        with open(state_file, "w") as f:
            json.dump(stream.state_dict(), f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
