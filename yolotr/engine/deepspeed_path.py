"""The DeepSpeed (ZeRO-1/2) variant of the guarded step, and its checkpoints.

Numerics match the DDP path: fp32 master weights and fp32 gradients in the ZeRO partitions, the forward under
`torch.autocast(bfloat16)` applied by yolotr, the loss in fp32. (DeepSpeed's own `bf16` section would cast the module,
BatchNorm statistics included, to bf16; its `torch_autocast` section would reduce some gradients in bf16.)

The verdict: DeepSpeed computes the global gradient norm across all ZeRO partitions with one all-reduce, and when that
norm is non-finite it skips the step (parameters, optimizer state and step counter untouched). The norm being the
result of an all-reduce, `was_step_applied()` is the same on every rank. What else must be agreed (stop flag, mean
loss) takes one small all-reduce per step here: DeepSpeed's gradient reduction cannot carry it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from yolotr.engine.guard import ConsensusPayload, deepspeed_clip_threshold


def universal_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "universal" / f"step-{step:08d}"


def prepare_universal(checkpoint: Path, run_dir: Path, step: int, *, rank: int) -> Path:
    """Converts a ZeRO checkpoint written at another data-parallel size into DeepSpeed's universal format (once,
    on rank 0; the others wait), so that it loads on this job's number of ranks. The user never runs a tool."""
    out = universal_dir(run_dir, step)
    if rank == 0 and not out.is_dir():
        # Converted beside, renamed when complete: a conversion killed halfway is redone, never loaded.
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        cmd = [
            sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal",
            "--input_folder", str(Path(checkpoint) / "ds" / "state"),
            "--output_folder", str(partial / "state"),
            "--inject_missing_state",
            "--num_extract_workers", "1",
            "--num_merge_workers", "1",
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if result.returncode != 0:
            raise RuntimeError(f"ds_to_universal failed for {checkpoint}:\n{result.stderr[-4000:]}")
        os.rename(partial, out)
    if dist.is_initialized():
        dist.barrier()
    return out


def prepare_engine(trainer) -> None:
    """Wraps the trainer's model and optimizer in a DeepSpeed engine, converting a checkpoint written at another
    data-parallel size to DeepSpeed's universal format first."""
    from yolotr.checkpoint.train_state import read_meta

    plugin = trainer.backend.accelerator.state.deepspeed_plugin
    plugin.deepspeed_config["gradient_accumulation_steps"] = trainer.accumulate
    images_per_step = trainer.cfg.train.batch_size * trainer.accumulate
    plugin.deepspeed_config["gradient_clipping"] = deepspeed_clip_threshold(trainer.cfg.guard.max_norm, images_per_step)
    if trainer.resume_from is not None:
        meta = read_meta(trainer.resume_from)
        if meta.get("backend") != "deepspeed":
            raise SystemExit(f"{trainer.resume_from}: written by the {meta.get('backend')} backend, not DeepSpeed")
        if meta["world_size"] != trainer.backend.world_size:
            # Another data-parallel size: ZeRO partitions must be regrouped, via DeepSpeed's universal format.
            if trainer.cfg.train.optimizer != "adamw":
                raise SystemExit(
                    f"{trainer.resume_from}: resuming DeepSpeed ZeRO on {trainer.backend.world_size} ranks instead of "
                    f"{meta['world_size']} needs a universal checkpoint, and DeepSpeed's converter "
                    "(ds_to_universal) only knows Adam moments: use train.optimizer=adamw with DeepSpeed, or "
                    f"resume on {meta['world_size']} ranks"
                )
            step = meta["counters"]["step"]
            trainer.universal = prepare_universal(trainer.resume_from, trainer.run_dir, step, rank=trainer.backend.rank)
            plugin.deepspeed_config["checkpoint"] = {"load_universal": True}
    trainer.engine, _ = trainer.backend.accelerator.prepare(trainer.model, trainer.optimizer)
    trainer.optimizer = trainer.engine.optimizer  # ZeRO's: its param_groups carry the schedule's LRs
    trainer.ddp = trainer.engine


def deepspeed_step(trainer, step: int, batches, buffers_before):
    """One optimizer step under DeepSpeed: micro-steps, DeepSpeed's own clip-or-skip, EMA, buffers.
    Returns (grad_norm, skipped, consensus, keys, images) with device tensors like the DDP path."""
    engine = trainer.engine
    payload = torch.zeros(ConsensusPayload.SIZE, device=trainer.device)
    keys, images_seen = [], 0
    for micro in range(trainer.accumulate):
        batch = next(batches)
        keys += batch.keys
        images_seen += len(batch.keys)
        loss, items, _ = trainer.forward_loss(step, batch)
        # DeepSpeed divides by its accumulation steps; yolotr keeps YOLOv5's un-divided sum.
        loss = loss * trainer.accumulate
        if trainer.faults.forced_skip(step):
            loss = trainer.faults.poison_loss(loss)  # DeepSpeed has no "skip anyway": a NaN makes it skip
        payload[ConsensusPayload.LOSS] += items.sum() / trainer.accumulate
        payload[ConsensusPayload.BOX : ConsensusPayload.CLS + 1] += items / trainer.accumulate
        engine.backward(loss)
        engine.step()  # applies only at the accumulation boundary
    payload[ConsensusPayload.STOP].fill_(float(trainer.stop_signal))
    payload[ConsensusPayload.LOCAL_BAD] = trainer.local_bad.float()
    if trainer.backend.distributed:
        dist.all_reduce(payload)  # SUM then divide: gloo has no AVG
        payload /= trainer.backend.world_size
    skipped = torch.tensor(not engine.was_step_applied(), device=trainer.device)
    norm = engine.get_global_grad_norm()  # of the summed gradient, before clipping: per image, as the DDP path logs
    images_per_step = trainer.cfg.train.batch_size * trainer.accumulate
    grad_norm = torch.tensor(float("nan") if norm is None else float(norm) / images_per_step, device=trainer.device)
    trainer.buffers.restore(buffers_before, where=skipped)
    return grad_norm, skipped, payload, keys, images_seen


def save_engine(engine, tmp: Path) -> None:
    """Every rank writes its ZeRO partition (collective); runs at the step boundary, before the async part."""
    engine.save_checkpoint(str(tmp / "ds"), tag="state", save_latest=False)


def load_engine(engine, checkpoint: Path, universal: Path | None) -> None:
    source = universal if universal is not None else Path(checkpoint) / "ds"
    load_path, _ = engine.load_checkpoint(
        str(source), tag="state", load_optimizer_states=True, load_lr_scheduler_states=False, load_module_strict=True
    )
    if load_path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint in {source}")


def optimizer_partition_sum(engine) -> float:
    """Sum of every optimizer-state tensor over all ZeRO partitions: a world-size independent fingerprint."""
    total = torch.zeros((), dtype=torch.float64)
    for state in engine.optimizer.optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.dtype.is_floating_point and value.numel() > 1:
                total += value.detach().double().sum().cpu()
    if dist.is_initialized():
        dist.all_reduce(total)
    return float(total)
