"""What is not the training loop: validation, periodic checkpoints, fault drills and debug tools, as hooks.

The trainer calls every registered hook at fixed points of `Trainer.fit()` (as detectron2's `HookBase` and YOLOv5's
callbacks do), in registration order; `build.default_hooks` registers them from the config. A hook reads and drives the
trainer through `self.trainer`, which is set when it is registered.

    before_train()      after the resume and the first snapshot, before the first step
    before_step()       before each optimizer step
    step_context()      a context around `train_step` (its forward, backward and optimizer step; not the judging)
    on_batch(step, b)   each micro-batch, as it is trained
    after_epoch(e)      epoch e's last step was trained (before it is judged)
    after_step()        after the step was judged, logged and the LR set
    after_checkpoint()  a checkpoint of this step was staged
    after_train()       after the last step (the final validation and checkpoint, then the drills)
    on_stop(code)       the run ends with `code`, on every rank, after its last checkpoint landed
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager, nullcontext
from typing import TYPE_CHECKING

from yolotr.debug.collectives import count_collectives
from yolotr.debug.digests import append_digest
from yolotr.debug.faults import fill_file_system
from yolotr.debug.ledger import LedgerWriter, keep_steps_up_to
from yolotr.debug.sync_check import no_host_sync
from yolotr.distributed import barrier
from yolotr.engine.fast_path import CompileClock
from yolotr.engine.preemption import PREEMPTION
from yolotr.errors import StorageError

if TYPE_CHECKING:
    from yolotr.engine.trainer import Trainer


class HookBase:
    trainer: Trainer

    def before_train(self) -> None: ...

    def before_step(self) -> None: ...

    def step_context(self):
        return nullcontext()

    def on_batch(self, step: int, batch) -> None: ...

    def after_epoch(self, epoch: int) -> None: ...

    def after_step(self) -> None: ...

    def after_checkpoint(self) -> None: ...

    def after_train(self) -> None: ...

    def on_stop(self, code: int) -> None: ...


class Hooks:
    """The registered hooks, called in order."""

    def __init__(self, trainer: Trainer, hooks: list[HookBase]) -> None:
        self.hooks = hooks
        for hook in hooks:
            hook.trainer = trainer

    def __getattr__(self, point: str):
        def call_all(*args) -> None:
            for hook in self.hooks:
                getattr(hook, point)(*args)

        return call_all

    @contextmanager
    def step_context(self):
        with ExitStack() as stack:
            for hook in self.hooks:
                stack.enter_context(hook.step_context())
            yield


class PeriodicCheckpoint(HookBase):
    """A checkpoint every `checkpoint.every` steps, and one after the last step."""

    def after_step(self) -> None:
        if self.trainer.checkpointer.due(self.trainer.step):
            self.trainer.save_checkpoint()

    def after_train(self) -> None:
        self.trainer.save_checkpoint()  # nothing to do when the last step was just saved


class PreemptionDrill(HookBase):
    """`faults.preempt_at_step`: act as if a preemption notice arrived during that step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def before_step(self) -> None:
        if self.trainer.step + 1 == self.step:
            PREEMPTION.requested = True


class CrashDrill(HookBase):
    """`faults.exit_at_step`: exit abruptly after that step (and after its checkpoint, if one was due), like a
    killed process: no cleanup, exit code 1."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_step(self) -> None:
        if self.trainer.step == self.step:
            self.trainer.checkpointer.manager.close()  # a due checkpoint lands first: what the drills resume from
            os._exit(1)


class DiskFillDrill(HookBase):
    """`faults.fill_disk_after_step`: once that step is done (its checkpoint landed), rank 0 fills the file system of
    the run folder with a file of zeros, leaving `faults.fill_disk_leave_bytes` free: a disk that fills up during
    training. After the last step, the fill comes once the final validation and checkpoint are written, so that what
    meets the full disk is the end of the run (weights/last.safetensors, exit.json)."""

    def __init__(self, step: int, leave_bytes: int) -> None:
        self.step = step
        self.leave_bytes = leave_bytes

    def after_step(self) -> None:
        if self.trainer.step == self.step < self.trainer.total_steps:
            self._fill()

    def after_train(self) -> None:
        if self.trainer.step == self.step:
            self._fill()

    def _fill(self) -> None:
        t = self.trainer
        t.checkpointer.manager.close()  # the step's save lands first, as a crash drill's does
        if t.runtime.is_main:
            fill_file_system(t.run_dir / "disk-filler", leave_bytes=self.leave_bytes)
        barrier()  # no rank writes on before the disk is full


class SyncCheck(HookBase):
    """`debug.cuda_sync_check`: a step outside an inspection step must not make the host wait for the device; torch's
    CUDA check (or its CPU stand-in, debug/sync_check.py) raises on any synchronising call inside it."""

    def step_context(self):
        t = self.trainer
        next_step = t.step + 1
        inspect_now = next_step % t.check_every == 0 or next_step == t.total_steps
        # From this process's third step on: DDP rebuilds its gradient buckets in the second forward and reads two
        # small index tensors back to the host (reducer.cpp, once per process).
        if inspect_now or t.steps_this_process < 2:
            return nullcontext()
        return no_host_sync(t.device)


class CompileReport(HookBase):
    """`train.compile` / `train.channels_last`: this process's first step tries the fast path and waits for the
    forward's and backward's compilation, on the host; its wall time, the compiler's own count, what trains
    (`compiled`, `channels_last`) and the parts turned off with their cause (`fallbacks`) are a `compile` event."""

    def __init__(self, backend: str | None) -> None:
        self.backend = backend  # None: channels_last alone

    @contextmanager
    def step_context(self):
        t = self.trainer
        if t.steps_this_process > 0:
            yield
            return
        clock = CompileClock()
        yield
        t.logger.event(event="compile", step=t.step + 1, backend=self.backend, compiled=t.fast.compile,
                       channels_last=t.fast.channels_last, fallbacks=[f.as_dict() for f in t.fast_fallbacks],
                       **clock.record())


class CollectiveCount(HookBase):
    """`debug.count_collectives` (DDP): the collectives of one guarded step (step 3, after DDP rebuilt its buckets in
    step 2) and of a bare DDP step on the same batch, logged as a `collectives` event."""

    COUNTED_STEP = 3

    def __init__(self) -> None:
        self.guarded: dict[str, int] = {}

    def step_context(self):
        if self.trainer.step + 1 != self.COUNTED_STEP:
            return nullcontext()
        return count_collectives(self.guarded)

    def after_step(self) -> None:
        t = self.trainer
        if t.step != self.COUNTED_STEP:
            return
        bare: dict[str, int] = {}
        with count_collectives(bare):
            self._bare_step(t.first_batch)
        t.logger.event(event="collectives", step=t.step, guarded_step=self.guarded, bare_ddp_step=bare)

    def _bare_step(self, batch) -> None:
        """Forward, loss and backward through the same DDP module with no guard at all, gradients then dropped."""
        t = self.trainer
        with t.autocast:
            preds = t.backend.module(t.fast.images(batch.images.to(t.device).float().div_(255)))
        loss, _ = t.compute_loss(preds, batch.targets.to(t.device))
        t.wrapper.tie(loss).backward()
        t.optimizer.zero_grad(set_to_none=True)
        t.wrapper.consensus.grad = None


class RankDigests(HookBase):
    """`debug.rank_digests`: every rank appends sha256 digests of its model, optimizer and EMA to digests.jsonl at a
    resume, after each checkpoint and at the end, so tests and drills compare ranks and runs bitwise."""

    def _append(self, tag: str) -> None:
        t = self.trainer
        append_digest(t.run_dir / "digests.jsonl", step=t.step, rank=t.runtime.rank, tag=tag, model=t.model,
                      optimizer=t.backend.optimizer_fingerprint(), ema=t.ema.module if t.ema is not None else None,
                      loss_scale=float(t.loss_scale.value()) if t.loss_scale is not None else None)

    def before_train(self) -> None:
        if self.trainer.resumed_from is not None:
            self._append("resume")

    def after_checkpoint(self) -> None:
        self._append("checkpoint")

    def on_stop(self, code: int) -> None:
        self._append("end")


class SampleLedger(HookBase):
    """`debug.sample_ledger`: every rank appends the sample keys it trained on to ledger.jsonl."""

    def __init__(self) -> None:
        self.writer: LedgerWriter | None = None

    def before_train(self) -> None:
        t = self.trainer
        path = t.run_dir / "ledger.jsonl"
        # Every start, resumed or not: a start without a checkpoint trains from step 0 again, and the samples an
        # earlier attempt logged before it crashed (even before its first commit) were lost with it.
        if t.runtime.is_main:
            keep_steps_up_to(path, t.step)
        barrier()  # no rank appends before the trim
        self.writer = LedgerWriter(path)

    def on_batch(self, step: int, batch) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(batch.epoch, step, self.trainer.runtime.rank, batch.keys)
        except StorageError as error:  # a full disk: every rank stops at the next step; the lines before are kept
            self.writer.close()
            self.writer = None
            self.trainer.storage_failed(error)

    def on_stop(self, code: int) -> None:
        if self.writer is not None:
            self.writer.close()
