"""The training loop: `Trainer.fit()` reads top to bottom; `train_step()` is one guarded optimizer step.

Step counters: `step` counts optimizer steps *attempted* (skipped ones included; `train.max_steps` compares to it);
`applied_steps` counts steps whose update was applied; the LR schedule and the EMA ramp follow it.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

from yolotr.checkpoint.host_stage import HostStager
from yolotr.data.spec import load_data_yaml
from yolotr.data.split_labels import read_split_labels
from yolotr.data.stream import DataErrorBudgetExceeded, TrainStream
from yolotr.engine.backend import Backend, prepare_ddp
from yolotr.engine.config import Config
from yolotr.engine.ema import ModelEMA
from yolotr.engine.faults import FaultInjector
from yolotr.engine.guard import (
    BufferGuard,
    ConsensusModule,
    ConsensusPayload,
    guarded_step,
    install_local_check_hook,
    install_local_gradient_check,
    mean_loss_grad_norm,
)
from yolotr.engine.monitor import GuardMonitor, PendingStep, Verdict
from yolotr.engine.optim import Schedule, build_optimizer, build_param_groups
from yolotr.engine.preemption import PREEMPTION
from yolotr.engine.snapshot import restore_snapshot, take_snapshot
from yolotr.model.autoanchor import check_anchors, training_box_sizes
from yolotr.model.loss import ComputeLoss
from yolotr.model.yolo import DetectionModel

EXIT_OK = 0
EXIT_DIVERGED = 3  # the rollback budget is exhausted
EXIT_DATA = 4  # more corrupt samples than train.max_data_error_fraction allows
EXIT_PREEMPTED = 75  # checkpoint written after a preemption signal; requeue me (EX_TEMPFAIL)


class StopTraining(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Trainer:
    def __init__(self, cfg: Config, backend: Backend):
        from yolotr.engine.run_io import RunIO  # run folder, metrics, W&B, checkpoints

        self.cfg = cfg
        self.backend = backend
        self.device = backend.device
        self.run_dir = Path(cfg.run.dir)
        self.data = load_data_yaml(cfg.data)

        torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank (DDP also broadcasts them)
        self.model = DetectionModel(cfg.model, nc=self.data.nc, transformer=cfg.transformer or None).to(self.device)
        self.model.names = list(self.data.names)
        self.anchor_fit = self._fit_anchors() if cfg.train.autoanchor else None
        self.wrapper = ConsensusModule(self.model).to(self.device)
        self.wrapper.payload = self.wrapper.payload.to(self.device)  # a plain attribute: DDP must not broadcast it
        self.stream = TrainStream(
            self.data.train,
            global_batch_size=cfg.train.batch_size,
            rank=backend.rank,
            world_size=backend.world_size,
            seed=cfg.run.seed,
            imgsz=cfg.train.imgsz,
            augment=cfg.augment,
            num_workers=cfg.train.num_workers,
            max_error_fraction=cfg.train.max_data_error_fraction,
            pin_memory=backend.device.type == "cuda",  # so the uint8 host→device copy is asynchronous
        )
        deepspeed = backend.kind == "deepspeed"
        # Batches per optimizer step once warm-up has ramped the accumulation up (YOLOv5's nbs / batch size).
        self.accumulate = max(round(cfg.train.nominal_batch_size / cfg.train.batch_size), 1)
        self.schedule = Schedule.from_config(cfg.train, self.stream.steps_per_epoch, accumulate=self.accumulate,
                                             ramp_accumulation=not deepspeed, max_steps=cfg.train.max_steps)
        self.steps_per_epoch = max(self.stream.steps_per_epoch // self.accumulate, 1)  # after warm-up
        self.total_steps = cfg.train.max_steps or self.schedule.total_steps()

        weight_decay = cfg.train.weight_decay * cfg.train.batch_size * self.accumulate / cfg.train.nominal_batch_size
        groups = build_param_groups(self.model, weight_decay, cfg.train.transformer_lr_mult)
        self.params = [p for g in groups for p in g["params"]]
        # On a GPU, fused kernels give the guard its sync-free skip (found_inf); on a CPU the plain kernels are
        # faster and the guard reads its verdict directly (guard.py), except when debug.cuda_sync_check asks to check
        # the GPU's code path on a CPU. Under DeepSpeed, ZeRO owns the step.
        if deepspeed and cfg.debug.cuda_sync_check:
            raise SystemExit("debug.cuda_sync_check: DeepSpeed reads its overflow flag on the host every step; "
                             "the sync-free step is the DDP / single-process path's")
        sync_free_path = self.device.type == "cuda" or cfg.debug.cuda_sync_check
        self.optimizer = build_optimizer(
            groups,
            cfg.train.optimizer,
            cfg.train.lr0,
            cfg.train.momentum,
            fused=(cfg.guard.enabled and not deepspeed and sync_free_path) or None,
            preinit_momentum=not deepspeed,
        )
        self.ema = ModelEMA(self.model, cfg.train.ema_decay, cfg.train.ema_tau) if cfg.train.ema else None
        self.compute_loss = ComputeLoss(self.model, cfg.loss, imgsz=cfg.train.imgsz)

        self.io = RunIO(self)
        self.resume_from = self.io.resume_target()
        self.universal = None
        self.engine = None
        # The Detect head's 1x1-conv weight gradients come out channels-last from the conv backward; DDP copies them
        # into its bucket either way (one small copy per step), so its layout warning is noise on every rank.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        if deepspeed:
            from yolotr.engine.deepspeed_path import prepare_engine

            prepare_engine(self)
        else:
            self.ddp = prepare_ddp(backend, self.wrapper)
        # BatchNorm statistics, restored on a skipped step. Taken after the wrapping above: preparing the model for
        # DDP hands the module new buffer tensors, and a guard holding the old ones would restore nothing.
        self.buffers = BufferGuard(self.model)
        self.local_bad = torch.zeros((), dtype=torch.bool, device=self.device)
        self._force_skip = torch.zeros((), dtype=torch.bool, device=self.device)
        self.faults = FaultInjector(cfg.faults, backend.rank)
        self.faults.install(self.model)
        self.faults.install_forward(self.model)
        # Provenance: which rank's own gradient was non-finite (a device flag, read only at inspection).
        if backend.kind == "ddp":
            install_local_check_hook(self.ddp, self.local_bad)
        elif deepspeed:
            install_local_gradient_check(self.model, self.local_bad)
        self.anomaly = None
        if cfg.debug.anomaly_hooks:
            from yolotr.engine.anomaly import AnomalyHooks

            self.anomaly = AnomalyHooks(self.model)
        max_quarantine = math.ceil(cfg.guard.max_quarantine_fraction * self.data.train.num_samples)
        self.monitor = GuardMonitor(cfg.guard, backend.rank, backend.world_size, max_quarantine)
        # Reading verdicts costs a GPU a sync, a CPU nothing; debug.cuda_sync_check makes a CPU run behave like a GPU.
        self.check_every = cfg.guard.check_every or (cfg.train.log_every if sync_free_path else 1)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")

        self.step = 0
        self.steps_this_process = 0  # unlike `step`, not restored on resume
        self.applied_steps = 0
        self.epoch = 0
        self.backoff_until = -1
        self.val_pending: int | None = None  # an epoch whose validation is due
        self.skipped_windows: list[list[int]] = []
        self.rollbacks = 0
        self.best_fitness: float | None = None
        self.pending: list[PendingStep] = []
        self.log_window: list = []
        self.snapshot = None
        self.snapshot_stager = HostStager()
        self.clean_since_snapshot = True
        self.first_batch = None

    # ------------------------------------------------------------------ setup helpers
    def _fit_anchors(self) -> dict:
        """YOLOv5's AutoAnchor: every rank computes the same anchors from the same labels (no collective)."""
        boxes = [(label.boxes, label.width, label.height) for label in read_split_labels(self.data.train)]
        wh = training_box_sizes(boxes, self.cfg.train.imgsz, seed=self.cfg.run.seed)
        before, after = check_anchors(self.model.detect, wh, self.cfg.loss.anchor_t)
        return {"boxes": len(wh), "before": str(before), "after": None if after is None else str(after),
                "replaced": after is not None and after.bpr > before.bpr}

    @property
    def stop_signal(self) -> bool:
        """A preemption notice arrived (preemption.py): the ranks agree on it at the next step."""
        return PREEMPTION.requested

    def batches(self):
        """Local batches, epoch after epoch; the stream counts its position as each batch is handed out."""
        while True:
            for batch in self.stream:
                self.epoch = batch.epoch
                yield batch

    # ------------------------------------------------------------------ the loop
    def fit(self) -> int:
        self.io.start()
        if self.anchor_fit is not None:
            self.io.event(event="autoanchor", step=self.step, **self.anchor_fit)
        PREEMPTION.install(self.cfg.checkpoint.preempt_signals)  # already done by `yolotr train`; again for API users
        batches = self.batches()
        self.schedule.apply(self.optimizer, self.applied_steps, self._backoff())
        t_last = time.perf_counter()
        try:
            if self.val_pending is not None:  # the run was preempted at the end of an epoch, before validating it
                self._validate_pending()
            while self.step < self.total_steps:
                epoch_before = self.stream.epoch
                if self.cfg.debug.count_collectives and self.backend.kind == "ddp" and self.step == 2:  # after DDP rebuilt its buckets (iteration 2)
                    from yolotr.engine.collectives_probe import count_guarded_step

                    count_guarded_step(self, batches)  # trains one step itself (not logged)
                    self.schedule.apply(self.optimizer, self.applied_steps, self._backoff())
                    continue
                if self.cfg.faults.preempt_at_step == self.step + 1:
                    PREEMPTION.requested = True
                inspect_now = (self.step + 1) % self.check_every == 0 or self.step + 1 == self.total_steps
                # The sync check starts with this process's third step: DDP rebuilds its gradient buckets in the
                # second forward and reads two small index tensors back to the host (reducer.cpp, once per process).
                with self._sync_debug(enabled=not inspect_now and self.steps_this_process >= 2):
                    self.pending.append(self.train_step(batches))
                self.steps_this_process += 1
                self.step += 1
                self.applied_steps += 1  # optimistic; corrected at inspection for skipped steps
                save_due = self.step % self.cfg.checkpoint.every == 0
                if self.stream.epoch != epoch_before and self._val_due(epoch_before):
                    self.val_pending = epoch_before  # checkpointed: a preemption now validates after the resume
                # A checkpoint or a validation only ever sees steps the guard has judged.
                if (self.step % self.check_every == 0 or self.step == self.total_steps or save_due
                        or self.val_pending is not None):
                    self.handle(self.monitor.inspect(self.pending))
                    self.pending = []
                    self.io.ckpt.poll()
                if self.step % self.cfg.train.log_every == 0 or self.step == self.total_steps:
                    if self.io.log_train(time.perf_counter() - t_last):  # logs the LR this step used
                        t_last = time.perf_counter()
                self.schedule.apply(self.optimizer, self.applied_steps, self._backoff())
                if self.val_pending is not None:
                    self._validate_pending()  # saves a checkpoint carrying the fitness
                if save_due:
                    self.io.save_checkpoint()  # nothing to do if validation just saved this step
                if self.cfg.faults.exit_at_step == self.step:
                    self.io.ckpt.close()
                    os._exit(1)  # a crash drill: no cleanup, like a killed process
            self.io.validate(self.epoch, final=True)
            self.io.save_checkpoint()
            return self.io.finish(EXIT_OK, "completed")
        except DataErrorBudgetExceeded as exc:
            # Too many corrupt samples in this rank's share: stop with the report; the launcher stops the others.
            return self.io.finish(EXIT_DATA, f"data error budget exceeded: {exc}")
        except StopTraining as stop:
            if stop.code == EXIT_PREEMPTED:
                self.io.save_checkpoint()
            return self.io.finish(stop.code, stop.reason)
        finally:
            batches.close()  # stops the DataLoader workers now: they ignore the signals that stop the job

    def _sync_debug(self, enabled: bool):
        """`debug.cuda_sync_check`: a step outside an inspection step must not synchronise with the host; torch's
        CUDA check (or its CPU stand-in, sync_check.py) raises on any synchronising call inside it."""
        if not (enabled and self.cfg.debug.cuda_sync_check):
            return nullcontext()
        from yolotr.engine.sync_check import no_host_sync

        return no_host_sync(self.device)

    def _validate_pending(self) -> None:
        self.io.validate(self.val_pending)
        self.val_pending = None

    def _val_due(self, finished_epoch: int) -> bool:
        every = self.cfg.val.every_epochs
        return every > 0 and (finished_epoch + 1) % every == 0

    def _backoff(self) -> float:
        return self.cfg.guard.lr_backoff if self.step < self.backoff_until else 1.0

    # ------------------------------------------------------------------ one optimizer step
    def forward_loss(self, step: int, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One micro-batch: to the device (uint8 → [0,1] there), bf16-autocast forward, fp32 loss.
        Returns (loss, items [box, obj, cls], this rank's loss is non-finite)."""
        if self.first_batch is None:
            self.first_batch = batch  # drawn as train_batch0.jpg
        self.io.ledger(step, batch)
        images = batch.images.to(self.device, non_blocking=True).float().div_(255)
        targets = batch.targets.to(self.device, non_blocking=True)
        with self.autocast:
            preds = self.ddp(images)
        # ComputeLoss casts to fp32; ×world_size undoes the data-parallel gradient averaging, as YOLOv5 does, so its
        # hyperparameters transfer.
        loss, items = self.compute_loss(preds, targets)
        loss = loss * self.backend.world_size
        if self.faults.nan_loss(step):
            loss = self.faults.poison_loss(loss)
        bad = ~torch.isfinite(loss)
        torch.logical_or(self.local_bad, bad, out=self.local_bad)
        return loss, items, bad

    def train_step(self, batches) -> PendingStep:
        step = self.step + 1
        self.faults.arm_grad(step)
        buffers_before = self.buffers.save()
        self.local_bad.zero_()
        if self.engine is not None:
            from yolotr.engine.deepspeed_path import deepspeed_step

            grad_norm, skipped, consensus, keys, images = deepspeed_step(self, step, batches, buffers_before)
            if self.ema is not None:
                self.ema.update(self.model, skipped)
            return PendingStep(step, grad_norm, skipped, consensus, self.local_bad.clone(), keys, images, self._bad_module())
        payload = torch.zeros(ConsensusPayload.SIZE, device=self.device)
        keys, images_seen = [], 0
        micro_steps = self.schedule.accumulate_at(self.applied_steps)  # ramps up during warm-up
        for micro in range(micro_steps):
            batch = next(batches)
            keys += batch.keys
            images_seen += len(batch.keys)
            last = micro == micro_steps - 1
            # Gradients are all-reduced only on the last micro-step of an accumulation.
            sync = nullcontext() if last or not self.backend.distributed else self.ddp.no_sync()
            with sync:
                loss, items, bad = self.forward_loss(step, batch)
                payload[ConsensusPayload.LOSS] = items.sum()
                payload[ConsensusPayload.BOX : ConsensusPayload.CLS + 1] = items
                payload[ConsensusPayload.STOP].fill_(float(self.stop_signal))  # a kernel argument: no copy
                payload[ConsensusPayload.LOCAL_BAD] = bad.float()
                self.wrapper.payload = payload / micro_steps
                self.backend.accelerator.backward(self.wrapper.tie(loss))
        consensus = self.wrapper.consensus.grad.detach().clone()
        grad_norm, skipped = self._optimizer_step(step, buffers_before, self.cfg.train.batch_size * micro_steps)
        if not self.backend.distributed:  # no comm hook saw the local gradient: it is the global one
            torch.logical_or(self.local_bad, ~torch.isfinite(grad_norm), out=self.local_bad)
        if self.ema is not None:
            self.ema.update(self.model, skipped)
        self.optimizer.zero_grad(set_to_none=True)
        self.wrapper.consensus.grad = None
        return PendingStep(
            step, grad_norm, skipped, consensus, self.local_bad.clone(), keys, images_seen, self._bad_module()
        )

    def _bad_module(self) -> str | None:
        return self.anomaly.take() if self.anomaly is not None else None

    def _optimizer_step(self, step: int, buffers_before: list[torch.Tensor],
                        images: int) -> tuple[torch.Tensor, torch.Tensor]:
        force = self._force_skip.fill_(self.faults.forced_skip(step))  # a fill kernel: no host→device copy
        # A rank whose loss was non-finite but whose gradient is finite (e.g. a batch emptied by corrupt or
        # quarantined samples) still makes every rank skip: the flag came through the consensus all-reduce.
        force |= self.wrapper.consensus.grad[ConsensusPayload.LOCAL_BAD] > 0
        if self.cfg.guard.enabled:
            return guarded_step(
                self.params,
                self.optimizer,
                max_norm=self.cfg.guard.max_norm,
                images=images,
                force_skip=force,
                buffers=self.buffers,
                buffers_before=buffers_before,
            )
        # Unguarded (the stability study's baseline): clip if asked, and step whatever the gradients hold.
        grad_norm = mean_loss_grad_norm(self.params, images)
        if self.cfg.guard.max_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.cfg.guard.max_norm, grad_norm, foreach=True)
        self.optimizer.step()
        return grad_norm, torch.zeros((), dtype=torch.bool, device=self.device)

    # ------------------------------------------------------------------ acting on verdicts
    def handle(self, verdict: Verdict) -> None:
        for outcome in verdict.outcomes:
            if outcome.skipped:
                self.applied_steps -= 1
                if self.ema is not None:
                    self.ema.updates -= 1
                self.clean_since_snapshot = False
        self.log_window += verdict.outcomes
        for event in verdict.events:
            self.io.event(**event)
        if verdict.new_quarantine:
            self.stream.add_quarantine(verdict.new_quarantine)
            self.io.write_quarantine(self.monitor.quarantine)
        if verdict.rollback_reason and self.cfg.guard.enabled:
            self.rollback(verdict.rollback_reason, verdict.rollback_step)
        elif self.cfg.guard.enabled and self.step % self.cfg.guard.snapshot_every == 0:
            if self.clean_since_snapshot or self.snapshot is None:
                self.snapshot = take_snapshot(
                    self.step, self.applied_steps, self.model, self.optimizer, self.ema, self.snapshot_stager
                )
            self.clean_since_snapshot = True
        if verdict.stop_requested:
            raise StopTraining(EXIT_PREEMPTED, "preemption signal received; checkpoint written, requeue to continue")

    def rollback(self, reason: str, bad_step: int) -> None:
        """Restores the last good snapshot, skips the data window since then (the stream only moves forward),
        and backs the LR off for a cool-down. Every rank reaches this with the same inputs."""
        if self.snapshot is None:
            # Nothing good to return to yet: the initial state is the snapshot (taken at the first step).
            raise StopTraining(EXIT_DIVERGED, f"{reason} before any good state was recorded")
        stop = self.monitor.record_rollback(self.step)
        if stop:
            raise StopTraining(EXIT_DIVERGED, f"{reason}; {stop}")
        restore_snapshot(self.snapshot, self.model, self.optimizer, self.ema)
        window = [self.snapshot.step + 1, self.step]
        self.applied_steps = self.snapshot.applied_steps
        self.skipped_windows.append(window)
        self.backoff_until = self.step + self.cfg.guard.cooldown_steps
        self.rollbacks += 1
        self.clean_since_snapshot = True
        self.io.event(
            event="rollback",
            step=self.step,
            reason=reason,
            bad_step=bad_step,
            restored_step=self.snapshot.step,
            skipped_window=window,
            lr_backoff=self.cfg.guard.lr_backoff,
            cooldown_until=self.backoff_until,
            rollbacks=self.rollbacks,
        )
