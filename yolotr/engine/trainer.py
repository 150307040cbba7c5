"""The training loop: `Trainer.fit()` reads top to bottom; `train_step()` is one optimizer step.

Step counters: `step` counts optimizer steps *attempted* (skipped ones included; `train.max_steps` compares to it);
`applied_steps` counts steps whose update was applied; the LR schedule and the EMA ramp follow it. The step's
distributed mechanics belong to the step backend (engine/backends), what a skip or a rollback means to the guard
(guard/), what is not the loop (validation, periodic checkpoints, drills, debug tools) to hooks (engine/hooks.py).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch

from yolotr import console
from yolotr.checkpoint.checkpointer import Checkpointer
from yolotr.checkpoint.manager import CommitStats
from yolotr.checkpoint.pretrained import build_model
from yolotr.checkpoint.resume import read_quarantine_file, resume_target, write_quarantine_file
from yolotr.checkpoint.run_lock import RunFolderTakenOver
from yolotr.checkpoint.run_status import log_stop, write_exit_file, write_status_file
from yolotr.checkpoint.weights_file import save_weights
from yolotr.config import Config, dump_config
from yolotr.config.tree import to_dict
from yolotr.data.dataset_cache import resolve_data
from yolotr.data.errors import DataErrorBudgetExceeded, DataUnavailable
from yolotr.data.remote.location import RemoteOptions
from yolotr.data.spec import load_data_yaml
from yolotr.debug.anomaly import AnomalyHooks
from yolotr.debug.faults import FaultInjector
from yolotr.distributed import all_gather_object, all_ranks, broadcast_tensors_from_rank0, together
from yolotr.engine.backends import make_step_backend
from yolotr.engine.build import default_hooks, fit_anchors, optimizer_for, run_logger, train_stream
from yolotr.engine.callbacks import Callbacks
from yolotr.engine.fast_path import FastPath, fit_backend, no_trace_step, try_fast_path
from yolotr.engine.hooks import Hooks
from yolotr.engine.optim import Schedule
from yolotr.engine.preemption import PREEMPTION
from yolotr.engine.recovery import Recovery
from yolotr.engine.run_end import RunEnd
from yolotr.engine.runtime import Runtime
from yolotr.engine.train_log import TrainLog
from yolotr.errors import (EXIT_DATA, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, EXIT_PREEMPTED, StorageError,
                           YolotrError)
from yolotr.guard.consensus import ConsensusModule
from yolotr.guard.ema import ModelEMA
from yolotr.guard.monitor import GuardMonitor, PendingStep, Verdict
from yolotr.guard.step import BufferGuard
from yolotr.model.loss import ComputeLoss
from yolotr.model.yolo import DetectionModel
from yolotr.track.metrics import read_metrics
from yolotr.track.progress import Progress
from yolotr.track.summary import print_summary

log = logging.getLogger(__name__)


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # train.precision; fp32 runs without autocast


class StopTraining(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Trainer:
    def __init__(self, cfg: Config, runtime: Runtime, callbacks: Callbacks | None = None,
                 fence: Callable[[], None] | None = None):
        """`fence`: rank 0's check that this job still holds the run folder (checkpoint/run_lock.py), before each
        checkpoint commit."""
        self.cfg = cfg
        self.runtime = runtime
        self.device = runtime.device
        self.run_dir = Path(cfg.run.dir)
        # A YOLO / COCO source: the run's own cached shards, recorded in the run folder (kept while it exists).
        # Converting a large source on first use takes long on the rank holding the cache's lock: the ranks wait
        # for it in short collectives that keep the process group alive (distributed.together).
        self.data = together(lambda: load_data_yaml(
            resolve_data(cfg.data, cfg.data_cache, self.run_dir, record=runtime.is_main),
            remote=RemoteOptions.from_config(cfg.remote)))

        torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank (DDP also broadcasts them)
        # The model yaml's architecture, or a weights file's; train.weights transferred layer by layer; frozen layers.
        model, self.transfer = build_model(cfg.model, cfg.train.weights, nc=self.data.nc, freeze=cfg.train.freeze,
                                           transformer=cfg.transformer.as_yaml(), verbose=runtime.is_main)
        # Channels-last on a GPU (engine/fast_path.py); compiled once the EMA has copied the plain module (below).
        # The parts of the fast path the step backend cannot take, then those the first step's trial turned off.
        self.fast, self.fast_fallbacks = fit_backend(FastPath.from_config(cfg.train, self.device), runtime.kind)
        self.model = cast(DetectionModel, self.fast.prepare_model(model.to(self.device)))  # the same module, moved
        self.model.names = list(self.data.names)
        # AutoAnchor (a resume then loads the checkpoint's anchors).
        self.anchor_fit = fit_anchors(self.model, self.data, cfg) if cfg.train.autoanchor else None
        self.wrapper = ConsensusModule(self.model).to(self.device)
        self.wrapper.payload = self.wrapper.payload.to(self.device)  # a plain attribute: DDP must not broadcast it
        self.stream = train_stream(cfg, self.data, runtime)
        deepspeed = runtime.kind == "deepspeed"
        # Batches per optimizer step once warm-up has ramped the accumulation up (YOLOv5's nbs / batch size).
        self.accumulate = max(round(cfg.train.nominal_batch_size / cfg.train.batch_size), 1)
        self.schedule = Schedule.from_config(cfg.train, self.stream.steps_per_epoch, accumulate=self.accumulate,
                                             ramp_accumulation=not deepspeed, max_steps=cfg.train.max_steps)
        self.steps_per_epoch = max(self.stream.steps_per_epoch // self.accumulate, 1)  # after warm-up
        self.total_steps = cfg.train.max_steps or self.schedule.total_steps()

        # A GPU's step, or a CPU's that debug.cuda_sync_check makes behave like one: no host sync until inspection.
        sync_free_path = self.device.type == "cuda" or cfg.debug.cuda_sync_check
        optimizer = optimizer_for(cfg, self.model, accumulate=self.accumulate, deepspeed=deepspeed,
                                  sync_free_path=sync_free_path)
        self.ema = ModelEMA(self.model, cfg.train.ema_decay, cfg.train.ema_tau) if cfg.train.ema else None
        self.compute_loss = ComputeLoss(self.model, cfg.loss, imgsz=cfg.train.imgsz)
        assert self.data.train is not None  # resolve_data loads the train split for training
        max_quarantine = math.ceil(cfg.guard.max_quarantine_fraction * self.data.train.num_samples)
        self.monitor = GuardMonitor(cfg.guard, runtime.rank, runtime.world_size, max_quarantine)
        self.logger = run_logger(cfg, self.run_dir, runtime)

        self.checkpointer = Checkpointer(
            cfg, self.run_dir, rank=runtime.rank, world_size=runtime.world_size, on_commit=self._checkpoint_committed,
            fence=fence,
            describe={"model_yaml": self.model.yaml, "names": list(self.data.names), "imgsz": cfg.train.imgsz,
                      "backend": runtime.kind},
        )
        self._damaged: list[str] = []  # checkpoints passed over, logged once the metrics file is open
        if runtime.is_main:  # this job holds the run folder (train_cli took its lock)
            self.checkpointer.manager.remove_unfinished_saves()
        self.resumed_from = resume_target(cfg.checkpoint.resume, self.checkpointer.manager, warn=self._warn_damaged)
        self.local_bad = torch.zeros((), dtype=torch.bool, device=self.device)  # this rank's own loss/grad was bad
        # Before the step backend: DeepSpeed's provenance hook must see the gradient after the injected NaN (tensor
        # hooks run in the order they were registered).
        self.faults = FaultInjector(cfg.faults, runtime.rank, self.model)
        # In place, before DDP wraps it (engine/fast_path.py): the EMA above copied the eager module.
        self.fast.compile_model(self.model)
        self.backend = make_step_backend(cfg, runtime, self.wrapper, optimizer, accumulate=self.accumulate,
                                         resume_from=self.resumed_from, local_bad=self.local_bad)
        self.optimizer = self.backend.optimizer
        # fp16's loss scale (guard/loss_scale.py) is saved with the counters; DeepSpeed refuses fp16.
        self.loss_scale = self.backend.loss_scale if cfg.train.precision == "fp16" else None
        self.checkpointer.states = {"model": self.model, "ema": self.ema, "step_backend": self.backend,
                                    "train_state": self, "guard": self.monitor, "stream": self.stream,
                                    "wandb_run_id": self.logger}
        # BatchNorm statistics, restored on a skipped step. Taken after the backend's set-up: preparing the model for
        # DDP hands the module new buffer tensors, and a guard holding the old ones would restore nothing.
        self.buffers = BufferGuard(self.model)
        self._ema_buffers = BufferGuard(self.ema.module) if self.ema is not None else None
        self.anomaly = AnomalyHooks(self.model) if cfg.debug.anomaly_hooks else None
        # Reading verdicts costs a GPU a sync, a CPU nothing.
        self.check_every = cfg.guard.check_every or (cfg.train.log_every if sync_free_path else 1)
        self.autocast = torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES.get(cfg.train.precision, torch.float32),
                                       enabled=cfg.train.precision in AUTOCAST_DTYPES)
        hooks = default_hooks(cfg, runtime, self.fast)
        self.hooks = Hooks(self, callbacks.around(hooks) if callbacks is not None else hooks)  # the API's callbacks
        # Its progress bar is made with the run (start), on rank 0.
        self.train_log = TrainLog(self.logger, world_size=runtime.world_size, max_norm=cfg.guard.max_norm, progress=None)

        self.step = 0
        self.steps_this_process = 0  # unlike `step`, not restored on resume
        self.applied_steps = 0
        self.epoch = 0
        self.val_pending: int | None = None  # an epoch whose validation is due
        self.best_fitness: float | None = None
        self.pending: list[PendingStep] = []
        self.recovery = Recovery(cfg.guard)  # the last good snapshot, rollbacks, the LR cool-down after one
        self.first_batch = None
        self.storage_failure: StorageError | None = None  # this rank could not write a file of the run (see below)

    # ------------------------------------------------------------------ the trainer's own state
    def state_dict(self) -> dict:
        """The counters (trainer.json's "counters"). The EMA's update count rides with them: its tensors are saved
        like the model's, its count is a counter (the checkpoint format of 0.1.0)."""
        return {"step": self.step, "applied_steps": self.applied_steps, "epoch": self.epoch,
                **self.recovery.state_dict(), "best_fitness": self.best_fitness,
                "ema_updates": self.ema.updates if self.ema is not None else 0, "val_pending": self.val_pending,
                **({"loss_scale": self.loss_scale.state_dict()} if self.loss_scale is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.applied_steps = int(state["applied_steps"])
        self.epoch = int(state["epoch"])
        self.recovery.load_state_dict(state)
        self.best_fitness = state["best_fitness"]
        self.val_pending = state.get("val_pending")  # absent from checkpoints before 0.1.0's last sessions
        if self.ema is not None:
            self.ema.updates = int(state["ema_updates"])
        if self.loss_scale is not None:  # absent from a bf16 or fp32 run's checkpoint: the scale starts afresh
            self.loss_scale.load_state_dict(state.get("loss_scale", {}))

    # ------------------------------------------------------------------ the loop
    def fit(self) -> int:
        self.start()
        PREEMPTION.install(self.cfg.checkpoint.preempt_signals)  # already done by `yolotr train`; again for API users
        PREEMPTION.stop_now = self.stop_now
        batches = self.batches()
        try:
            self.hooks.before_train()
            self.schedule.apply(self.optimizer, self.applied_steps, self.recovery.lr_factor(self.step))
            self.train_log.restart_clock(self.stream)
            while self.step < self.total_steps:
                epoch_before = self.stream.epoch
                self.hooks.before_step()
                with self.hooks.step_context():
                    self.pending.append(self.train_step(batches))
                self.step += 1
                self.steps_this_process += 1
                self.applied_steps += 1  # optimistic; a skip found when the step is judged takes it back
                if self.stream.epoch != epoch_before:
                    self.hooks.after_epoch(epoch_before)
                if self._judgement_due():
                    self.judge()  # may stop the run: preempted, or diverged after the rollback budget
                if self.step % self.cfg.train.log_every == 0 or self.step == self.total_steps:
                    self.log_train()  # with the LR this step used
                self.schedule.apply(self.optimizer, self.applied_steps, self.recovery.lr_factor(self.step))
                self.hooks.after_step()  # validation, the periodic checkpoint, drills
            self.hooks.after_train()  # the final validation and checkpoint
            return self.finish(EXIT_OK, "completed")
        except DataErrorBudgetExceeded as exc:  # too many corrupt samples in this rank's share
            return self.finish(EXIT_DATA, str(exc))
        except DataUnavailable as exc:  # remote shards unreachable for the whole retry budget: retryable
            # Alone and between steps, the position is checkpointed; other ranks may be inside a collective, and a
            # step half accumulated cannot be saved: the last periodic checkpoint is then the resume point.
            error = DataUnavailable.from_worker(exc)
            if self.runtime.world_size == 1 and exc.between_steps:
                try:
                    self.judge()
                    self.save_checkpoint()
                except YolotrError as failed:  # e.g. the disk is full as well: that is how it ends
                    return self.finish(failed.exit_code, str(failed))
            return self.finish(error.exit_code, str(error))
        except StopTraining as stop:
            if stop.code in (EXIT_PREEMPTED, EXIT_INTERRUPTED):
                try:
                    self.save_checkpoint()
                except YolotrError as error:  # e.g. the disk is full: that is why it ends (every rank raises it)
                    return self.finish(error.exit_code, str(error))
            return self.finish(stop.code, stop.reason)
        except RunFolderTakenOver as error:  # another job holds the run folder now: write nothing more there
            log_stop(error.exit_code, str(error), self.step)
            return error.exit_code
        except YolotrError as error:  # a checkpoint that could not be written (every rank raises it alike)
            return self.finish(error.exit_code, str(error))
        finally:
            batches.close()  # stops the DataLoader workers now: they ignore the signals that stop the job
            PREEMPTION.stop_now = None  # a second Ctrl-C from here on just exits: exit.json is written

    def batches(self):
        """Local batches, epoch after epoch; the stream counts its position as each batch is handed out."""
        while True:
            for batch in self.stream:
                self.epoch = batch.epoch
                yield batch

    @property
    def stop_signal(self) -> bool:
        """A preemption notice arrived (preemption.py), or this rank could not write a file of the run: the ranks
        agree on it at the next step."""
        return PREEMPTION.requested or self._own_storage_failure() is not None

    def _judgement_due(self) -> bool:
        """Verdicts are read every `check_every` steps, and before anything looks at the state: a checkpoint or a
        validation only ever sees judged steps."""
        return (self.step % self.check_every == 0 or self.step == self.total_steps
                or self.checkpointer.due(self.step) or self.val_pending is not None)

    # ------------------------------------------------------------------ one optimizer step
    def train_step(self, batches) -> PendingStep:
        step = self.step + 1
        if self.steps_this_process == 0 and (self.fast.compile or self.fast.channels_last):
            batches = self.try_fast_path(batches)
        self.faults.arm_grad(step)
        force_skip = self.faults.forced_skip(step)
        buffers_before = self.buffers.save()
        self.local_bad.zero_()
        keys, images = [], 0
        micro_batches = self.schedule.accumulate_at(self.applied_steps)  # ramps up during warm-up, as YOLOv5's
        for micro in range(micro_batches):
            try:
                batch = next(batches)
            except DataUnavailable as error:
                error.between_steps = micro == 0  # no batch of this step consumed: the position is exact
                raise
            keys += batch.keys
            images += len(batch.keys)
            with self.backend.accumulating(last=micro == micro_batches - 1):
                loss, items, bad = self.forward_loss(step, batch)
                self.backend.backward(loss, items, bad, micro_batches=micro_batches, stop=self.stop_signal,
                                      force_skip=force_skip)
        # The gradient sums the losses of every rank's images of every micro-batch: the clip's units (guard/step.py).
        result = self.backend.optimizer_step(
            images=self.cfg.train.batch_size * micro_batches, force_skip=force_skip, buffers=self.buffers,
            buffers_before=buffers_before)
        if self.ema is not None:
            self.ema.update(self.model, result.skipped)
        bad_module = self.anomaly.take() if self.anomaly is not None else None
        return PendingStep(step, result.grad_norm, result.skipped, result.consensus, self.local_bad.clone(), keys,
                           images, bad_module, result.overflow)

    def try_fast_path(self, batches):
        """The first batch's forward and backward once with the fast path, leaving no trace, before the first step
        arms any fault (engine/fast_path.py): where the compiler or the layout fails on any rank, every rank trains
        without it, exactly as a run that never had it. Returns the batches with the first one put back in front."""
        batch = next(batches)
        attempt = no_trace_step(self.model, self.buffers, self.autocast, self.compute_loss,
                                batch.images.to(self.device).float().div_(255), batch.targets.to(self.device))
        self.fast, tried = try_fast_path(self.fast, self.model, attempt)
        self.fast_fallbacks += tried
        if self.ema is not None and any(f.part == "channels_last" for f in tried):
            self.ema.module.to(memory_format=torch.contiguous_format)  # validates in the layout that trains
        return itertools.chain([batch], batches)

    def forward_loss(self, step: int, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One micro-batch: to the device (uint8 → [0,1] there), autocast forward (train.precision), fp32 loss.
        Returns (loss, items [box, obj, cls], this rank's loss is non-finite)."""
        if self.first_batch is None:
            self.first_batch = batch  # drawn as train_batch0.jpg
        self.hooks.on_batch(step, batch)
        images = self.fast.images(batch.images.to(self.device, non_blocking=True).float().div_(255))
        targets = batch.targets.to(self.device, non_blocking=True)
        with self.autocast:
            preds = self.backend.module(images)
        # ComputeLoss casts to fp32; ×world_size undoes the data-parallel gradient averaging, as YOLOv5 does, so its
        # hyperparameters transfer.
        loss, items = self.compute_loss(preds, targets)
        loss = loss * self.runtime.world_size
        if self.faults.nan_loss(step):
            loss = self.faults.poison_loss(loss)
        bad = ~torch.isfinite(loss)
        torch.logical_or(self.local_bad, bad, out=self.local_bad)
        return loss, items, bad

    # ------------------------------------------------------------------ acting on verdicts
    def judge(self) -> None:
        """Reads the pending steps' verdicts (one device→host copy) and acts on them."""
        verdict, self.pending = self.monitor.inspect(self.pending), []
        self.handle(verdict)
        self.checkpointer.poll()

    def handle(self, verdict: Verdict) -> None:
        for outcome in verdict.outcomes:
            if outcome.skipped:
                self.applied_steps -= 1
                if self.ema is not None:
                    self.ema.updates -= 1
                self.recovery.mark_skipped()
        self.train_log.add(verdict.outcomes)
        for event in verdict.events:
            self.logger.event(**event)
        if verdict.new_quarantine:
            self.stream.add_quarantine(verdict.new_quarantine)
            if self.runtime.is_main:
                write_quarantine_file(self.run_dir, self.monitor.quarantine)  # a resume reads it back
        if verdict.rollback_reason and self.cfg.guard.enabled and verdict.rollback_step is not None:
            self.rollback(verdict.rollback_reason, verdict.rollback_step)
        elif self.cfg.guard.enabled:
            self.recovery.after_judged(self.step, self.applied_steps, self.model, self.optimizer, self.ema)
        if verdict.stop_requested:
            storage = self._agreed_storage_failure()
            if storage is not None:  # every rank stops with it (exit 74); the checkpoints before it are intact
                raise StorageError(storage)
            # Every rank stops here (the request rode in the consensus); a Ctrl-C on any rank makes it the user's stop.
            if not all_ranks(not (PREEMPTION.interrupted or PREEMPTION.launcher_saw_ctrl_c())):
                raise StopTraining(EXIT_INTERRUPTED, "stopped by Ctrl-C; checkpoint written")
            raise StopTraining(EXIT_PREEMPTED, "preemption signal received; checkpoint written, requeue to continue")

    def rollback(self, reason: str, bad_step: int) -> None:
        """Back to the last good snapshot, its data window skipped and the LR cooled down (engine/recovery.py), or
        the end of the run when there is none or the rollback budget is spent. Every rank reaches this with the same
        inputs."""
        if self.recovery.snapshot is None:
            raise StopTraining(EXIT_DIVERGED, f"{reason} before any good state was recorded")
        stop = self.monitor.record_rollback(self.step)
        if stop:
            raise StopTraining(EXIT_DIVERGED, f"{reason}; {stop}")
        done = self.recovery.roll_back(self.step, self.model, self.optimizer, self.ema)
        self.applied_steps = done.restored_applied_steps
        self.logger.event(event="rollback", step=self.step, reason=reason, bad_step=bad_step,
                          restored_step=done.restored_step, skipped_window=done.skipped_window,
                          lr_backoff=self.cfg.guard.lr_backoff, cooldown_until=self.recovery.backoff_until,
                          rollbacks=self.recovery.rollbacks)

    # ------------------------------------------------------------------ state that leaves the process
    def sync_buffers(self) -> None:
        """DDP broadcasts BatchNorm statistics at the start of each forward, so after the last forward every rank
        holds its own batch's, and so does every rank's EMA, which averages them. Saving, validating and digesting
        after a broadcast of rank 0's keeps all ranks' state identical (YOLOv5 keeps its EMA on rank 0 only)."""
        if not self.runtime.distributed:
            return
        for guard in (self.buffers, self._ema_buffers):
            if guard is not None:
                flats = guard.save()  # one tensor per dtype: 2 broadcasts instead of 167
                broadcast_tensors_from_rank0(flats)
                guard.restore(flats)

    def save_checkpoint(self, fitness: float | None = None) -> None:
        if self.checkpointer.already_saved(self.step, fitness):
            return
        self.sync_buffers()
        self.checkpointer.save(self.step, fitness)
        self.hooks.after_checkpoint()

    def _checkpoint_committed(self, stats: CommitStats) -> None:
        """stall_s: what the save cost the training loop (staging and launch, then the commit; everything when
        synchronous); write_s: the background writer's time."""
        self.logger.event(event="checkpoint", step=stats.step, path=str(stats.path), asynchronous=stats.asynchronous,
                          stall_s=round(stats.stall_s, 6), write_s=round(stats.write_s, 6))

    def export_weights(self, path: Path) -> None:
        """Rank 0 writes `path` (weights/best or last.safetensors); a full or read-only disk raises StorageError
        naming it."""
        if self.runtime.is_main:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_weights(path, model_state=self.model.state_dict(),
                             ema_state=self.ema.module.state_dict() if self.ema is not None else None,
                             model_yaml=self.model.yaml, names=list(self.data.names), imgsz=self.cfg.train.imgsz,
                             extra={"step": self.step, "config": to_dict(self.cfg),
                                    "category_ids": self.data.category_ids})
            except OSError as error:
                raise StorageError.writing(path, error) or error from None

    # ------------------------------------------------------------------ the storage failing
    def storage_failed(self, error: StorageError) -> None:
        """A file of the run could not be written on this rank (the ledger, a plot, best.safetensors): the first such
        error is kept, and every rank stops with it at the next step (`stop_signal`), so that no rank waits for one
        that stopped alone."""
        if self.storage_failure is None:
            self.storage_failure = error
            log.error(f"{error}; the run stops at the next step")

    def _own_storage_failure(self) -> StorageError | None:
        return self.storage_failure or self.logger.failure

    def _agreed_storage_failure(self, also: StorageError | None = None) -> str | None:
        """Every rank, together: the storage failure of the lowest rank that met one, None when none did."""
        mine = self._own_storage_failure() or also
        return next((found for found in all_gather_object(str(mine) if mine else None) if found), None)

    # ------------------------------------------------------------------ start and end
    def start(self) -> None:
        """Resumes (when there is a checkpoint to resume), opens the run's records, takes the first snapshot."""
        resumed = self._resume() if self.resumed_from is not None else None
        progress = None
        if self.runtime.is_main:
            (self.run_dir / "config.yaml").write_text(dump_config(self.cfg))
            # Every record sink drops what an earlier attempt wrote after the step this start begins at.
            self.logger.open(step=self.step, resumed=resumed is not None)
            for message in self._damaged:
                self.logger.event(event="checkpoint_fallback", step=self.step, message=message)
            if resumed is not None:
                self.logger.event(**resumed)
            if self.anchor_fit is not None:
                self.logger.event(event="autoanchor", step=self.step, **self.anchor_fit)
            self.logger.event(event="start", step=self.step, world_size=self.runtime.world_size,
                              backend=self.runtime.kind, device=str(self.device), steps_per_epoch=self.steps_per_epoch,
                              total_steps=self.total_steps, accumulate=self.accumulate, stream=self.stream.counters())
            progress = Progress(self.total_steps, self.step, enabled=self.cfg.train.progress_bar)
        self.train_log.progress = progress
        # The state the run starts from is good by definition: the first rollback target.
        self.recovery.take_snapshot(self.step, self.applied_steps, self.model, self.optimizer, self.ema)

    def _resume(self) -> dict:
        assert self.resumed_from is not None  # start() resumes only when there is a target
        meta = self.checkpointer.restore(self.resumed_from)
        # The state at this step is the checkpoint just read: the end of the run does not save it a second time, as
        # a run without the stop would not (a resume at the last step otherwise re-saved it after the final
        # validation, with a best fitness the uninterrupted run's last checkpoint does not hold: the drill found it).
        self.checkpointer.last_saved_step = self.step
        # The guard's quarantine, and keys quarantined after the checkpoint was written (the run folder's file).
        self.monitor.quarantine.update(read_quarantine_file(self.run_dir))
        if self.monitor.quarantine:
            self.stream.add_quarantine(sorted(self.monitor.quarantine))
        set_aside = self.checkpointer.manager.set_aside_newer_than(self.step) if self.runtime.is_main else []
        return {"event": "resume", "step": self.step, "checkpoint": str(self.resumed_from),
                "set_aside": [str(p) for p in set_aside], "old_world_size": meta["world_size"],
                "new_world_size": self.runtime.world_size, "old_backend": meta.get("backend"),
                "code_version": meta.get("code_version")}

    def _warn_damaged(self, message: str) -> None:
        log.warning(message)
        self._damaged.append(message)

    def log_train(self) -> None:
        self.train_log.write(step=self.step, epoch=self.epoch, optimizer=self.optimizer, stream=self.stream,
                             skipped_steps=self.monitor.skipped_steps, rollbacks=self.recovery.rollbacks,
                             quarantined=len(self.monitor.quarantine))

    def stop_now(self) -> None:
        """A second Ctrl-C (preemption.py), run from its signal handler just before the process exits 130: nothing
        here waits for the other ranks (they may be anywhere). The commit being landed completes if it can in a few
        seconds; a save still being written stays a `.tmp` folder, which no reader takes and the next start removes."""
        self.checkpointer.abandon()
        reason = "stopped at once by a second Ctrl-C; the checkpoints committed before are intact"
        if self.runtime.is_main:
            with contextlib.suppress(OSError):
                write_exit_file(self.run_dir, EXIT_INTERRUPTED, reason, self.step)
        with contextlib.suppress(OSError):
            write_status_file(exit_code=EXIT_INTERRUPTED)
        if self.runtime.is_main:
            log_stop(EXIT_INTERRUPTED, reason, self.step, self.run_dir)

    def finish(self, code: int, reason: str) -> int:
        """Ends the run on every rank: the last records written, the last checkpoint landed, exit.json. The code is
        the error the run stopped for; what fails while stopping (the disk filling, a plot, W&B) is logged in one line
        each and never replaces it (engine/run_end.py)."""
        end = RunEnd(code, reason, self.run_dir)
        end.attempt("write the last train record", self.log_train)  # the records, the summary and the stop agree
        # Never exit with a save in flight.
        end.attempt("land the last checkpoint", self.checkpointer.close, essential=True)
        self.sync_buffers()
        for hook in self.hooks.hooks:
            end.attempt(f"stop {type(hook).__name__}", hook.on_stop, end.code)
        if end.code == EXIT_OK:  # every rank ends here together: a failure one rank met is every rank's
            storage = self._agreed_storage_failure(end.storage)
            if storage is not None:
                end.storage_failed(StorageError(storage))
        if self.runtime.is_main:
            weights = self.run_dir / "weights" / "last.safetensors"
            end.attempt(f"write {weights}", self.export_weights, weights)
            end.attempt("write the stop record", lambda: self.logger.event(event="stop", step=self.step,
                                                                           exit_code=end.code, reason=end.reason))
            # Launchers (torchrun, accelerate) turn any worker failure into exit 1: scripts read the code here.
            end.attempt(f"write {self.run_dir / 'exit.json'}", write_exit_file, self.run_dir, end.code, end.reason,
                        self.step)
            end.attempt("close the progress bar", self.train_log.close)
            if self.logger.failure is None:  # a metrics.jsonl that lost records would give a wrong summary
                end.attempt("print the summary",
                            lambda: console.result(print_summary(read_metrics(self.run_dir / "metrics.jsonl"))))
            self.logger.close()  # W&B's finish included; each sink's failure logged, never raised
            log_stop(end.code, end.reason, self.step, self.run_dir)
        return end.code
