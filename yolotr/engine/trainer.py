"""The training loop: `Trainer.fit()` reads top to bottom; `train_step()` is one optimizer step.

Step counters: `step` counts optimizer steps *attempted* (skipped ones included; `train.max_steps` compares to it);
`applied_steps` counts steps whose update was applied; the LR schedule and the EMA ramp follow it. The step's
distributed mechanics belong to the step backend (engine/backends), what a skip or a rollback means to the guard
(guard/), what is not the loop (validation, periodic checkpoints, drills, debug tools) to hooks (engine/hooks.py).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from yolotr.checkpoint.checkpointer import Checkpointer
from yolotr.checkpoint.host_stage import HostStager
from yolotr.checkpoint.manager import CommitStats
from yolotr.checkpoint.pretrained import build_model
from yolotr.checkpoint.resume import read_quarantine_file, resume_target, write_quarantine_file
from yolotr.checkpoint.run_status import stop_line, write_exit_file
from yolotr.checkpoint.weights_file import save_weights
from yolotr.config import Config, dump_config
from yolotr.config.tree import to_dict
from yolotr.data.dataset_cache import resolve_data
from yolotr.data.errors import DataErrorBudgetExceeded
from yolotr.data.spec import load_data_yaml
from yolotr.data.split_labels import read_split_labels
from yolotr.data.stream import TrainStream
from yolotr.debug.anomaly import AnomalyHooks
from yolotr.debug.faults import FaultInjector
from yolotr.distributed import broadcast_tensors_from_rank0
from yolotr.engine.backends import make_step_backend
from yolotr.engine.eval_hook import EvalHook
from yolotr.engine.hooks import (
    CollectiveCount,
    CrashDrill,
    HookBase,
    Hooks,
    PeriodicCheckpoint,
    PreemptionDrill,
    RankDigests,
    SampleLedger,
    SyncCheck,
)
from yolotr.engine.optim import Schedule, build_optimizer, build_param_groups
from yolotr.engine.preemption import PREEMPTION
from yolotr.engine.runtime import Runtime
from yolotr.engine.train_log import TrainLog
from yolotr.errors import EXIT_DATA, EXIT_DIVERGED, EXIT_OK, EXIT_PREEMPTED, YolotrError
from yolotr.guard.consensus import ConsensusModule
from yolotr.guard.ema import ModelEMA
from yolotr.guard.monitor import GuardMonitor, PendingStep, Verdict
from yolotr.guard.snapshot import restore_snapshot, take_snapshot
from yolotr.guard.step import BufferGuard
from yolotr.model.autoanchor import check_anchors, training_box_sizes
from yolotr.model.loss import ComputeLoss
from yolotr.track.loggers import RunLogger
from yolotr.track.metrics import read_metrics, supersede_records_after
from yolotr.track.progress import Progress
from yolotr.track.summary import print_summary


class StopTraining(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def default_hooks(cfg: Config, runtime: Runtime) -> list[HookBase]:
    """The hooks a config asks for, in the order they run: validation before the periodic checkpoint (a validation
    checkpoints its epoch itself, with the fitness), drills last (a crash comes after the step's checkpoint)."""
    hooks: list[HookBase] = [EvalHook(), PeriodicCheckpoint()]
    if cfg.debug.sample_ledger:
        hooks.append(SampleLedger())
    if cfg.debug.rank_digests:
        hooks.append(RankDigests())
    if cfg.debug.cuda_sync_check:
        hooks.append(SyncCheck())
    if cfg.debug.count_collectives and runtime.kind == "ddp":
        hooks.append(CollectiveCount())
    if cfg.faults.preempt_at_step is not None:
        hooks.append(PreemptionDrill(cfg.faults.preempt_at_step))
    if cfg.faults.exit_at_step is not None:
        hooks.append(CrashDrill(cfg.faults.exit_at_step))
    return hooks


class Trainer:
    def __init__(self, cfg: Config, runtime: Runtime):
        self.cfg = cfg
        self.runtime = runtime
        self.device = runtime.device
        self.run_dir = Path(cfg.run.dir)
        self.data = load_data_yaml(resolve_data(cfg.data, cfg.data_cache))  # a YOLO / COCO source: its cached shards

        torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank (DDP also broadcasts them)
        # The model yaml's architecture, or a weights file's; train.weights transferred layer by layer; frozen layers.
        model, self.transfer = build_model(cfg.model, cfg.train.weights, nc=self.data.nc, freeze=cfg.train.freeze,
                                           transformer=cfg.transformer.as_yaml(), verbose=runtime.is_main)
        self.model = model.to(self.device)
        self.model.names = list(self.data.names)
        self.anchor_fit = self._fit_anchors() if cfg.train.autoanchor else None  # a resume then loads its own
        self.wrapper = ConsensusModule(self.model).to(self.device)
        self.wrapper.payload = self.wrapper.payload.to(self.device)  # a plain attribute: DDP must not broadcast it
        self.stream = TrainStream(
            self.data.train, global_batch_size=cfg.train.batch_size, rank=runtime.rank,
            world_size=runtime.world_size, seed=cfg.run.seed, imgsz=cfg.train.imgsz, augment=cfg.augment,
            num_workers=cfg.train.num_workers, max_error_fraction=cfg.train.max_data_error_fraction,
            pin_memory=self.device.type == "cuda",  # so the uint8 host→device copy is asynchronous
        )
        deepspeed = runtime.kind == "deepspeed"
        # Batches per optimizer step once warm-up has ramped the accumulation up (YOLOv5's nbs / batch size).
        self.accumulate = max(round(cfg.train.nominal_batch_size / cfg.train.batch_size), 1)
        self.schedule = Schedule.from_config(cfg.train, self.stream.steps_per_epoch, accumulate=self.accumulate,
                                             ramp_accumulation=not deepspeed, max_steps=cfg.train.max_steps)
        self.steps_per_epoch = max(self.stream.steps_per_epoch // self.accumulate, 1)  # after warm-up
        self.total_steps = cfg.train.max_steps or self.schedule.total_steps()

        weight_decay = cfg.train.weight_decay * cfg.train.batch_size * self.accumulate / cfg.train.nominal_batch_size
        groups = build_param_groups(self.model, weight_decay, cfg.train.transformer_lr_mult)
        # On a GPU, fused kernels give the guard its sync-free skip (found_inf); on a CPU the plain kernels are
        # faster and the guard reads its verdict directly (guard/step.py), except when debug.cuda_sync_check asks to
        # check the GPU's code path on a CPU. Under DeepSpeed, ZeRO owns the step.
        sync_free_path = self.device.type == "cuda" or cfg.debug.cuda_sync_check
        optimizer = build_optimizer(groups, cfg.train.optimizer, cfg.train.lr0, cfg.train.momentum,
                                    fused=(cfg.guard.enabled and not deepspeed and sync_free_path) or None,
                                    preinit_momentum=not deepspeed)
        self.ema = ModelEMA(self.model, cfg.train.ema_decay, cfg.train.ema_tau) if cfg.train.ema else None
        self.compute_loss = ComputeLoss(self.model, cfg.loss, imgsz=cfg.train.imgsz)
        max_quarantine = math.ceil(cfg.guard.max_quarantine_fraction * self.data.train.num_samples)
        self.monitor = GuardMonitor(cfg.guard, runtime.rank, runtime.world_size, max_quarantine)
        self.logger = RunLogger(self.run_dir, is_main=runtime.is_main, wandb_enabled=cfg.wandb.enabled,
                                wandb_project=cfg.wandb.project, wandb_name=cfg.wandb.name, config=to_dict(cfg))

        self.checkpointer = Checkpointer(
            cfg, self.run_dir, rank=runtime.rank, world_size=runtime.world_size, on_commit=self._checkpoint_committed,
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
        self.backend = make_step_backend(cfg, runtime, self.wrapper, optimizer, accumulate=self.accumulate,
                                         resume_from=self.resumed_from, local_bad=self.local_bad)
        self.optimizer = self.backend.optimizer
        self.checkpointer.states = {"model": self.model, "ema": self.ema, "optimizer": self.backend,
                                    "train_state": self, "guard": self.monitor, "stream": self.stream,
                                    "wandb_run_id": self.logger}
        # BatchNorm statistics, restored on a skipped step. Taken after the backend's set-up: preparing the model for
        # DDP hands the module new buffer tensors, and a guard holding the old ones would restore nothing.
        self.buffers = BufferGuard(self.model)
        self._ema_buffers = BufferGuard(self.ema.module) if self.ema is not None else None
        self.anomaly = AnomalyHooks(self.model) if cfg.debug.anomaly_hooks else None
        # Reading verdicts costs a GPU a sync, a CPU nothing; debug.cuda_sync_check makes a CPU run behave like a GPU.
        self.check_every = cfg.guard.check_every or (cfg.train.log_every if sync_free_path else 1)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")
        self.hooks = Hooks(self, default_hooks(cfg, runtime))
        self.train_log: TrainLog | None = None  # opened with the run (start)

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
        self.snapshot = None
        self._snapshot_stager = HostStager()
        self.clean_since_snapshot = True
        self.first_batch = None

    def _fit_anchors(self) -> dict:
        """YOLOv5's AutoAnchor: every rank computes the same anchors from the same labels (no collective)."""
        boxes = [(label.boxes, label.width, label.height) for label in read_split_labels(self.data.train)]
        wh = training_box_sizes(boxes, self.cfg.train.imgsz, seed=self.cfg.run.seed)
        before, after = check_anchors(self.model.detect, wh, self.cfg.loss.anchor_t)
        return {"boxes": len(wh), "before": str(before), "after": None if after is None else str(after),
                "replaced": after is not None and after.bpr > before.bpr}

    # ------------------------------------------------------------------ the trainer's own state
    def state_dict(self) -> dict:
        """The counters (trainer.json's "counters"). The EMA's update count rides with them: its tensors are saved
        like the model's, its count is a counter (the checkpoint format of 0.1.0)."""
        return {"step": self.step, "applied_steps": self.applied_steps, "epoch": self.epoch,
                "backoff_until": self.backoff_until, "skipped_windows": self.skipped_windows,
                "rollbacks": self.rollbacks, "best_fitness": self.best_fitness,
                "ema_updates": self.ema.updates if self.ema is not None else 0, "val_pending": self.val_pending}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.applied_steps = int(state["applied_steps"])
        self.epoch = int(state["epoch"])
        self.backoff_until = int(state["backoff_until"])
        self.skipped_windows = [list(w) for w in state["skipped_windows"]]
        self.rollbacks = int(state["rollbacks"])
        self.best_fitness = state["best_fitness"]
        self.val_pending = state.get("val_pending")  # absent from checkpoints before 0.1.0's last sessions
        if self.ema is not None:
            self.ema.updates = int(state["ema_updates"])

    # ------------------------------------------------------------------ the loop
    def fit(self) -> int:
        self.start()
        PREEMPTION.install(self.cfg.checkpoint.preempt_signals)  # already done by `yolotr train`; again for API users
        batches = self.batches()
        try:
            self.hooks.before_train()
            self.schedule.apply(self.optimizer, self.applied_steps, self._backoff())
            self.train_log.restart_clock()
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
                self.schedule.apply(self.optimizer, self.applied_steps, self._backoff())
                self.hooks.after_step()  # validation, the periodic checkpoint, drills
            self.hooks.after_train()  # the final validation and checkpoint
            return self.finish(EXIT_OK, "completed")
        except DataErrorBudgetExceeded as exc:  # too many corrupt samples in this rank's share
            return self.finish(EXIT_DATA, str(exc))
        except StopTraining as stop:
            if stop.code == EXIT_PREEMPTED:
                self.save_checkpoint()
            return self.finish(stop.code, stop.reason)
        except YolotrError as error:  # a checkpoint that could not be written (every rank raises it alike)
            return self.finish(error.exit_code, str(error))
        finally:
            batches.close()  # stops the DataLoader workers now: they ignore the signals that stop the job

    def batches(self):
        """Local batches, epoch after epoch; the stream counts its position as each batch is handed out."""
        while True:
            for batch in self.stream:
                self.epoch = batch.epoch
                yield batch

    @property
    def stop_signal(self) -> bool:
        """A preemption notice arrived (preemption.py): the ranks agree on it at the next step."""
        return PREEMPTION.requested

    def _judgement_due(self) -> bool:
        """Verdicts are read every `check_every` steps, and before anything looks at the state: a checkpoint or a
        validation only ever sees judged steps."""
        return (self.step % self.check_every == 0 or self.step == self.total_steps
                or self.checkpointer.due(self.step) or self.val_pending is not None)

    def _backoff(self) -> float:
        return self.cfg.guard.lr_backoff if self.step < self.backoff_until else 1.0

    # ------------------------------------------------------------------ one optimizer step
    def train_step(self, batches) -> PendingStep:
        step = self.step + 1
        self.faults.arm_grad(step)
        force_skip = self.faults.forced_skip(step)
        buffers_before = self.buffers.save()
        self.local_bad.zero_()
        keys, images = [], 0
        micro_batches = self.schedule.accumulate_at(self.applied_steps)  # ramps up during warm-up, as YOLOv5's
        for micro in range(micro_batches):
            batch = next(batches)
            keys += batch.keys
            images += len(batch.keys)
            with self.backend.accumulating(last=micro == micro_batches - 1):
                loss, items, bad = self.forward_loss(step, batch)
                self.backend.backward(loss, items, bad, micro_batches=micro_batches, stop=self.stop_signal,
                                      force_skip=force_skip)
        # The gradient sums the losses of every rank's images of every micro-batch: the clip's units (guard/step.py).
        grad_norm, skipped, consensus = self.backend.optimizer_step(
            images=self.cfg.train.batch_size * micro_batches, force_skip=force_skip, buffers=self.buffers,
            buffers_before=buffers_before)
        if self.ema is not None:
            self.ema.update(self.model, skipped)
        bad_module = self.anomaly.take() if self.anomaly is not None else None
        return PendingStep(step, grad_norm, skipped, consensus, self.local_bad.clone(), keys, images, bad_module)

    def forward_loss(self, step: int, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One micro-batch: to the device (uint8 → [0,1] there), bf16-autocast forward, fp32 loss.
        Returns (loss, items [box, obj, cls], this rank's loss is non-finite)."""
        if self.first_batch is None:
            self.first_batch = batch  # drawn as train_batch0.jpg
        self.hooks.on_batch(step, batch)
        images = batch.images.to(self.device, non_blocking=True).float().div_(255)
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

    def bare_step(self, batch) -> None:
        """Forward, loss and backward through the same DDP module with no guard at all, gradients then dropped
        (debug.count_collectives compares a guarded step with this)."""
        with self.autocast:
            preds = self.backend.module(batch.images.to(self.device).float().div_(255))
        loss, _ = self.compute_loss(preds, batch.targets.to(self.device))
        self.wrapper.tie(loss).backward()
        self.optimizer.zero_grad(set_to_none=True)
        self.wrapper.consensus.grad = None

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
                self.clean_since_snapshot = False
        self.train_log.add(verdict.outcomes)
        for event in verdict.events:
            self.logger.event(**event)
        if verdict.new_quarantine:
            self.stream.add_quarantine(verdict.new_quarantine)
            if self.runtime.is_main:
                write_quarantine_file(self.run_dir, self.monitor.quarantine)  # a resume reads it back
        if verdict.rollback_reason and self.cfg.guard.enabled:
            self.rollback(verdict.rollback_reason, verdict.rollback_step)
        elif self.cfg.guard.enabled and self.step % self.cfg.guard.snapshot_every == 0:
            if self.clean_since_snapshot or self.snapshot is None:
                self.take_snapshot()
            self.clean_since_snapshot = True
        if verdict.stop_requested:
            raise StopTraining(EXIT_PREEMPTED, "preemption signal received; checkpoint written, requeue to continue")

    def take_snapshot(self) -> None:
        """A host copy of the state: what a rollback restores."""
        self.snapshot = take_snapshot(self.step, self.applied_steps, self.model, self.optimizer, self.ema,
                                      self._snapshot_stager)

    def rollback(self, reason: str, bad_step: int) -> None:
        """Restores the last good snapshot, skips the data window since then (the stream only moves forward),
        and backs the LR off for a cool-down. Every rank reaches this with the same inputs."""
        if self.snapshot is None:
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
        self.logger.event(event="rollback", step=self.step, reason=reason, bad_step=bad_step,
                          restored_step=self.snapshot.step, skipped_window=window, lr_backoff=self.cfg.guard.lr_backoff,
                          cooldown_until=self.backoff_until, rollbacks=self.rollbacks)

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
        if self.runtime.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_weights(path, model_state=self.model.state_dict(),
                         ema_state=self.ema.module.state_dict() if self.ema is not None else None,
                         model_yaml=self.model.yaml, names=list(self.data.names), imgsz=self.cfg.train.imgsz,
                         extra={"step": self.step, "config": to_dict(self.cfg),
                                "category_ids": self.data.category_ids})

    # ------------------------------------------------------------------ start and end
    def start(self) -> None:
        """Resumes (when there is a checkpoint to resume), opens the run's records, takes the first snapshot."""
        resumed = self._resume() if self.resumed_from is not None else None
        progress = None
        if self.runtime.is_main:
            (self.run_dir / "config.yaml").write_text(dump_config(self.cfg))
            if resumed is not None:  # the records the crashed attempt wrote after its checkpoint are superseded
                supersede_records_after(self.run_dir / "metrics.jsonl", self.step)
            self.logger.open(resumed_at=self.step if resumed is not None else None)
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
        self.train_log = TrainLog(self.logger, rank=self.runtime.rank, world_size=self.runtime.world_size,
                                  max_norm=self.cfg.guard.max_norm, progress=progress)
        self.take_snapshot()  # the state the run starts from is good by definition: the first rollback target

    def _resume(self) -> dict:
        meta = self.checkpointer.restore(self.resumed_from)
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
        print(f"[yolotr] warning: {message}", file=sys.stderr)
        self._damaged.append(message)

    def log_train(self) -> None:
        self.train_log.write(step=self.step, epoch=self.epoch, optimizer=self.optimizer, stream=self.stream,
                             skipped_steps=self.monitor.skipped_steps, rollbacks=self.rollbacks,
                             quarantined=len(self.monitor.quarantine))

    def finish(self, code: int, reason: str) -> int:
        """Ends the run on every rank: the last records written, the last checkpoint landed, exit.json."""
        self.log_train()  # the last window, partial: the records, the summary and the stop event agree
        self.checkpointer.close()  # never exit with a save in flight
        self.sync_buffers()
        self.hooks.on_stop(code)
        if self.runtime.is_main:
            try:
                # Launchers (torchrun, accelerate) turn any worker failure into exit 1: scripts read the code here.
                write_exit_file(self.run_dir, code, reason, self.step)
                self.logger.event(event="stop", step=self.step, exit_code=code, reason=reason)
                self.export_weights(self.run_dir / "weights" / "last.safetensors")
                self.train_log.close()
                print(print_summary(read_metrics(self.run_dir / "metrics.jsonl")))
            except OSError as error:  # the run folder itself failed (full, read-only): the console still says why
                print(f"[yolotr] could not finish writing {self.run_dir}: {error}", file=sys.stderr)
            finally:
                self.logger.close()
                print(stop_line(code, reason, self.step), file=sys.stderr, flush=True)
        return code
