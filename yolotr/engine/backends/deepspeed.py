"""The step backend of DeepSpeed ZeRO-1/2, and its checkpoints.

Numerics match the DDP backend: fp32 master weights and fp32 gradients in the ZeRO partitions, the forward under
`torch.autocast(bfloat16)`, the loss in fp32. DeepSpeed's own `bf16` section would cast the module, BatchNorm
statistics included, to bf16. Its `torch_autocast` section is the one yolotr writes (engine/runtime.py): the engine's
forward turns an enclosing CUDA autocast off without it, and with no module listed as lower-precision safe it reduces
every gradient in fp32.

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
from contextlib import nullcontext
from pathlib import Path

import torch

from yolotr.checkpoint.checkpointer import read_meta
from yolotr.checkpoint.manager import CheckpointError
from yolotr.config import Config
from yolotr.debug.digests import optimizer_digest, zero_partition_sum
from yolotr.distributed import all_reduce_mean, barrier
from yolotr.engine.backends.base import StepResult
from yolotr.engine.runtime import Runtime
from yolotr.errors import UsageError
from yolotr.guard.consensus import ConsensusModule, ConsensusPayload, install_local_gradient_check
from yolotr.guard.step import BufferGuard, deepspeed_clip_threshold


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
            raise CheckpointError(f"ds_to_universal failed for {checkpoint}:\n{result.stderr[-4000:]}")
        os.rename(partial, out)
    barrier()
    return out


class DeepSpeedBackend:
    kind = "deepspeed"

    def __init__(self, cfg: Config, runtime: Runtime, wrapper: ConsensusModule, optimizer, *, accumulate: int,
                 resume_from: Path | None, local_bad: torch.Tensor) -> None:
        if cfg.debug.cuda_sync_check:
            raise UsageError("debug.cuda_sync_check: DeepSpeed reads its overflow flag on the host every step; "
                             "the sync-free step is the DDP / single-process path's")
        if cfg.train.precision == "fp16":
            raise UsageError("train.precision: fp16's loss scale is the DDP / single-process path's (DeepSpeed runs "
                             "fp32 master weights with yolotr's autocast): use bf16 or fp32 under DeepSpeed")
        self.runtime = runtime
        self.accumulate = accumulate
        self.local_bad = local_bad
        model = wrapper.detector
        # Provenance: a tensor hook per parameter sees the local gradient before DeepSpeed reduces it.
        install_local_gradient_check(model, local_bad)
        plugin = runtime.accelerator.state.deepspeed_plugin
        plugin.deepspeed_config["gradient_accumulation_steps"] = accumulate
        # DeepSpeed clips the gradient it holds, summed over the images of a step: max_norm in those units.
        self.images_per_step = cfg.train.batch_size * accumulate
        plugin.deepspeed_config["gradient_clipping"] = deepspeed_clip_threshold(cfg.guard.max_norm,
                                                                                self.images_per_step)
        self.universal = self._universal_source(cfg, runtime, resume_from, plugin)
        self.engine, _ = runtime.accelerator.prepare(model, optimizer)
        self.module = self.engine  # what the forward runs through
        self.optimizer = self.engine.optimizer  # ZeRO's: its param_groups carry the schedule's LRs
        self._payload = torch.zeros(ConsensusPayload.SIZE, device=runtime.device)
        self._stop = False
        self.loss_scale = None  # fp16 is refused above

    @staticmethod
    def _universal_source(cfg: Config, runtime: Runtime, resume_from: Path | None, plugin) -> Path | None:
        """A checkpoint written at another data-parallel size is converted to DeepSpeed's universal format first."""
        if resume_from is None:
            return None
        meta = read_meta(resume_from)
        if meta.get("backend") != "deepspeed":
            raise UsageError(f"{resume_from}: written by the {meta.get('backend')} backend, not DeepSpeed: resume it "
                             "without DeepSpeed, or start a new run folder")
        if meta["world_size"] == runtime.world_size:
            return None
        if cfg.train.optimizer != "adamw":
            raise UsageError(
                f"{resume_from}: resuming DeepSpeed ZeRO on {runtime.world_size} ranks instead of "
                f"{meta['world_size']} needs a universal checkpoint, and DeepSpeed's converter (ds_to_universal) only "
                f"knows Adam moments: use train.optimizer=adamw with DeepSpeed, or resume on {meta['world_size']} ranks"
            )
        universal = prepare_universal(resume_from, Path(cfg.run.dir), meta["counters"]["step"], rank=runtime.rank)
        plugin.deepspeed_config["checkpoint"] = {"load_universal": True}
        return universal

    # ---- one optimizer step ----------------------------------------------------------------------------------------
    def accumulating(self, last: bool):
        return nullcontext()  # DeepSpeed reduces at its own accumulation boundary

    def backward(self, loss: torch.Tensor, items: torch.Tensor, bad: torch.Tensor, *, micro_batches: int, stop: bool,
                 force_skip: bool) -> None:
        # DeepSpeed divides by its accumulation steps; yolotr keeps YOLOv5's un-divided sum.
        loss = loss * self.accumulate
        if force_skip:
            loss = loss * float("nan")  # DeepSpeed has no "skip anyway": a NaN makes it skip
        self._payload[ConsensusPayload.LOSS] += items.sum() / self.accumulate
        self._payload[ConsensusPayload.BOX : ConsensusPayload.CLS + 1] += items / self.accumulate
        self._stop = stop
        self.engine.backward(loss)
        self.engine.step()  # applies only at the accumulation boundary

    def optimizer_step(self, *, images: int, force_skip: bool, buffers: BufferGuard,
                       buffers_before: list[torch.Tensor]) -> StepResult:
        payload = self._payload
        payload[ConsensusPayload.STOP].fill_(float(self._stop))
        payload[ConsensusPayload.LOCAL_BAD] = self.local_bad.float()
        all_reduce_mean(payload)
        consensus = payload.clone()
        payload.zero_()  # the next step's micro-batches add to it again
        skipped = torch.tensor(not self.engine.was_step_applied(), device=self.runtime.device)
        norm = self.engine.get_global_grad_norm()  # of the summed gradient, before clipping: per image, as DDP logs
        grad_norm = torch.tensor(float("nan") if norm is None else float(norm) / images, device=self.runtime.device)
        buffers.restore(buffers_before, where=skipped)
        return StepResult(grad_norm, skipped, consensus, None)  # no fp16 overflow: DeepSpeed refuses fp16

    # ---- checkpoints -----------------------------------------------------------------------------------------------
    def checkpoint_optimizer_state(self) -> None:
        """None: every rank writes its own ZeRO partition (`write_checkpoint_files`)."""
        return None

    def write_checkpoint_files(self, tmp: Path) -> None:
        """Every rank writes its ZeRO partition (collective); runs at the step boundary, before the async part."""
        self.engine.save_checkpoint(str(tmp / "ds"), tag="state", save_latest=False)

    def optimizer_load_template(self) -> None:
        return None

    def load_checkpoint(self, path: Path, loaded: dict) -> None:
        """The model and the ZeRO partitions, resharded through the universal format when the world size changed."""
        source = self.universal if self.universal is not None else Path(path) / "ds"
        load_path, _ = self.engine.load_checkpoint(str(source), tag="state", load_optimizer_states=True,
                                                   load_lr_scheduler_states=False, load_module_strict=True)
        if load_path is None:
            raise CheckpointError(f"DeepSpeed found no checkpoint in {source}")

    def optimizer_fingerprint(self) -> tuple[str, float]:
        """This rank's ZeRO partition's sha256, and the sum over all partitions (world-size independent)."""
        return optimizer_digest(self.optimizer.optimizer), zero_partition_sum(self.optimizer)
