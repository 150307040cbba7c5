"""Everything the trainer writes to or reads from its run folder: resolved config, metrics.jsonl, W&B, the sample
ledger, digests, quarantine list, checkpoints (save / resume), validation results and plots.

Rank 0 writes the shared files; every rank writes its own ledger and digest lines (files opened in append mode,
one line per write, so lines of different ranks never interleave mid-line).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from yolotr.checkpoint import train_state
from yolotr.checkpoint.host_stage import HostStager
from yolotr.checkpoint.writer_process import ThreadWriter, WriterProcess
from yolotr.checkpoint.manager import CheckpointManager, verify, write_json_durably
from yolotr.engine.config_tree import to_dict
from yolotr.engine.digests import append_digest
from yolotr.engine.guard import BufferGuard, clip_factor


class RunIO:
    def __init__(self, trainer):
        self.t = trainer
        self.cfg = trainer.cfg
        self.dir = Path(trainer.cfg.run.dir)
        self.rank = trainer.backend.rank
        self.is_main = trainer.backend.is_main
        self.metrics = None
        self.wandb = None
        self.wandb_run_id: str | None = None
        self.started = time.perf_counter()
        self.images_total = 0
        self.progress = None
        self.ckpt = CheckpointManager(
            self.dir,
            rank=self.rank,
            world_size=trainer.backend.world_size,
            keep_last=self.cfg.checkpoint.keep_last,
            pause_before_commit_s=self.cfg.faults.pause_checkpoint_write_s,
            on_commit=self._checkpoint_committed,
        )
        # The checkpoint's host copy, reused save after save, in shared memory for the writer process.
        self._stager = HostStager(shared=self.cfg.checkpoint.writer == "process")
        self._checkpoint_state = None
        self._writer = WriterProcess() if self.cfg.checkpoint.writer == "process" else ThreadWriter()
        self._ledger = None
        self._val_stream = None
        self._last_saved_step = -1
        self._data_errors_seen = 0
        self._gt = None
        self._ema_buffers: BufferGuard | None = None  # the EMA's BatchNorm statistics, broadcast with the model's

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        from yolotr.track.metrics import MetricsWriter

        t = self.t
        resumed = self._resume()
        if self.cfg.debug.sample_ledger:
            self._open_ledger(resumed_step=t.step if resumed else None)
        if resumed is not None and self.cfg.debug.rank_digests:
            self.digest("resume")
        if self.is_main:
            (self.dir / "config.yaml").write_text(_config_yaml(self.cfg))
            self.metrics = MetricsWriter(self.dir / "metrics.jsonl")
            self._start_wandb()
            if resumed is not None:
                self.event(**resumed)
            self.metrics.write(
                "event",
                event="start",
                step=t.step,
                world_size=t.backend.world_size,
                backend=t.backend.kind,
                device=str(t.device),
                steps_per_epoch=t.steps_per_epoch,
                total_steps=t.total_steps,
                accumulate=t.accumulate,
                stream=t.stream.counters(),
            )
            if self.cfg.train.progress_bar and sys.stderr.isatty():
                from tqdm import tqdm

                self.progress = tqdm(total=t.total_steps, initial=t.step, unit="step", dynamic_ncols=True)
        # The state the run starts from is good by definition: the first rollback target.
        from yolotr.engine.snapshot import take_snapshot

        t.snapshot = take_snapshot(t.step, t.applied_steps, t.model, t.optimizer, t.ema, t.snapshot_stager)

    def resume_target(self) -> Path | None:
        """The checkpoint this start resumes from: `auto` = newest valid one (damaged ones are passed over with a
        warning), None for a fresh start. Decided before the model is wrapped (DeepSpeed needs to know)."""
        choice = self.cfg.checkpoint.resume
        if choice == "none":
            return None
        if choice == "auto":
            return self.ckpt.newest_valid(warn=self._warn_damaged)
        path = Path(choice)
        problem = verify(path)
        if problem:
            raise SystemExit(f"--resume {path}: {problem}")
        return path

    def _resume(self) -> dict | None:
        path = self.t.resume_from
        if path is None:
            return None
        meta = train_state.restore(self.t, path)
        self._merge_quarantine_file()
        self.wandb_run_id = meta.get("wandb_run_id")
        set_aside = self.ckpt.set_aside_newer_than(self.t.step) if self.is_main else []
        return {
            "event": "resume",
            "step": self.t.step,
            "checkpoint": str(path),
            "set_aside": [str(p) for p in set_aside],
            "old_world_size": meta["world_size"],
            "new_world_size": self.t.backend.world_size,
            "old_backend": meta.get("backend"),
            "code_version": meta.get("code_version"),
        }

    def _merge_quarantine_file(self) -> None:
        """Keys quarantined after the checkpoint was written are in the run folder's quarantine.json only: a resume
        keeps skipping them too (every rank reads the same file)."""
        path = self.dir / "quarantine.json"
        if not path.is_file():
            return
        try:
            keys = json.loads(path.read_text())
        except ValueError as exc:
            raise SystemExit(f"{path}: not valid json ({exc}); fix or delete it to resume") from exc
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise SystemExit(f"{path}: expected a json list of sample keys")
        fresh = sorted(set(keys) - self.t.monitor.quarantine)
        if fresh:
            self.t.monitor.quarantine.update(fresh)
            self.t.stream.add_quarantine(fresh)

    def _warn_damaged(self, message: str) -> None:
        print(f"[yolotr] warning: {message}", file=sys.stderr)
        self._pending_warnings = getattr(self, "_pending_warnings", []) + [message]

    def _start_wandb(self) -> None:
        from yolotr.track.wandb_logger import WandbLogger

        for message in getattr(self, "_pending_warnings", []):
            self.metrics.write("event", event="checkpoint_fallback", step=self.t.step, message=message)
        self.wandb = WandbLogger(
            self.dir,
            config=to_dict(self.cfg),
            run_id=self.wandb_run_id,
            enabled=self.cfg.wandb.enabled,
            project=self.cfg.wandb.project,
            name=self.cfg.wandb.name or self.dir.name,
        )
        self.wandb_run_id = self.wandb.run_id

    # ------------------------------------------------------------------ records
    def event(self, **fields) -> None:
        if self.is_main and self.metrics is not None:
            record = self.metrics.write("event", **fields)
            self.wandb.log_record(record)
            if fields.get("event") in ("rollback", "stop", "quarantine", "autoanchor"):
                print(f"[yolotr] {json.dumps(fields)}", file=sys.stderr)

    def _open_ledger(self, resumed_step: int | None) -> None:
        """The ledger lists the samples whose update the run *kept*: on resume, lines of steps after the checkpoint
        (trained by the crashed run, then lost with it) are dropped before any rank appends again."""
        path = self.dir / "ledger.jsonl"
        if self.is_main and resumed_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines(keepends=True) if _ledger_step(line) <= resumed_step]
            tmp = path.with_suffix(".partial")
            tmp.write_text("".join(kept))
            tmp.replace(path)
        from yolotr.checkpoint.manager import _barrier

        _barrier()
        self._ledger = open(path, "a")

    def ledger(self, step: int, batch) -> None:
        if self._ledger is not None:
            lines = "".join(
                json.dumps({"epoch": batch.epoch, "step": step, "rank": self.rank, "key": k}) + "\n" for k in batch.keys
            )
            self._ledger.write(lines)
            self._ledger.flush()

    def report_data_errors(self) -> None:
        """Corrupt samples the stream skipped since the last report: key and reason, on stderr from the rank that
        met them, and as events from rank 0."""
        total = self.t.stream.counters()["errors_total"]
        fresh, self._data_errors_seen = total - self._data_errors_seen, total
        for key, reason in self.t.stream.error_log[-fresh:] if fresh > 0 else []:
            print(f"[yolotr rank {self.rank}] skipped corrupt sample {key}: {reason}", file=sys.stderr)
            self.event(event="data_error", step=self.t.step, key=key, reason=reason)

    def log_train(self, elapsed: float) -> bool:
        """One `train` record over the steps judged since the last one, which took `elapsed` seconds. Returns False
        when no step has been judged yet (guard.check_every > train.log_every): the window then stays open."""
        t = self.t
        self.report_data_errors()
        outcomes, t.log_window = t.log_window, []
        if not outcomes:
            return False
        images = sum(o.images for o in outcomes) * t.backend.world_size
        self.images_total += images
        if not self.is_main:
            return True
        finite = [o for o in outcomes if not o.skipped]
        # A window of skipped steps has no loss: null in the json (a bare NaN is not json).
        mean = lambda attr: sum(getattr(o, attr) for o in finite) / len(finite) if finite else None  # noqa: E731
        # How hard the clip worked over the window's applied steps: the fraction it scaled down, and the mean factor
        # it scaled by (1.0: never). grad_norm and max_norm are both per-image-mean units (guard.py).
        factors = [clip_factor(o.grad_norm, self.cfg.guard.max_norm) for o in finite]
        record = self.metrics.write(
            "train",
            step=t.step,
            epoch=t.epoch,
            loss=mean("loss"),
            box=mean("box"),
            obj=mean("obj"),
            cls=mean("cls"),
            grad_norm=outcomes[-1].grad_norm if math.isfinite(outcomes[-1].grad_norm) else None,  # skip events say which
            clip_rate=sum(f < 1.0 for f in factors) / len(factors) if factors else None,
            clip_factor=sum(factors) / len(factors) if factors else None,
            images=images,
            lr=[g["lr"] for g in t.optimizer.param_groups],
            lr_groups=[g.get("name", str(i)) for i, g in enumerate(t.optimizer.param_groups)],
            skipped_steps=t.monitor.skipped_steps,
            rollbacks=t.rollbacks,
            quarantined=len(t.monitor.quarantine),
            data_errors=sum(t.stream.counters().get("errors", {}).values()),
            images_per_s=images / max(elapsed, 1e-9),
        )
        self.wandb.log_record(record)
        if self.progress is not None:
            self.progress.n = t.step
            loss = "skipped" if record["loss"] is None else f"{record['loss']:.3f}"
            self.progress.set_postfix(
                epoch=t.epoch, loss=loss, ips=f"{record['images_per_s']:.0f}", skips=t.monitor.skipped_steps
            )
            self.progress.refresh()
        if t.step == self.cfg.train.log_every and self.is_main:
            self._plot_first_batch()
        return True

    def write_quarantine(self, keys: set[str]) -> None:
        if self.is_main:
            write_json_durably(self.dir / "quarantine.json", sorted(keys))  # a resume reads it back

    # ------------------------------------------------------------------ checkpoints
    def digest(self, tag: str) -> None:
        t = self.t
        append_digest(self.dir / "digests.jsonl", step=t.step, rank=self.rank, model=t.model, optimizer=t.optimizer,
                      engine=t.engine, tag=tag, ema=t.ema.module if t.ema is not None else None)

    def sync_buffers(self) -> None:
        """DDP broadcasts BatchNorm statistics at the start of each forward, so after the last forward every rank
        holds its own batch's, and so does every rank's EMA, which averages them. Saving, validating and digesting
        after a broadcast of rank 0's keeps all ranks' state identical (YOLOv5 keeps its EMA on rank 0 only)."""
        import torch.distributed as dist

        if not self.t.backend.distributed:
            return
        if self._ema_buffers is None and self.t.ema is not None:
            self._ema_buffers = BufferGuard(self.t.ema.module)
        for guard in (self.t.buffers, self._ema_buffers):
            if guard is None:
                continue
            flats = guard.save()  # one tensor per dtype: 2 broadcasts instead of 167
            for flat in flats:
                dist.broadcast(flat, 0)
            guard.restore(flats)

    def save_checkpoint(self, fitness: float | None = None) -> None:
        t = self.t
        if t.step == self._last_saved_step and fitness is None:
            return  # e.g. the final save right after a periodic one
        self._last_saved_step = t.step
        started = time.perf_counter()
        self.ckpt.wait()  # the previous save may still read the stager's buffers
        self.sync_buffers()
        if self._checkpoint_state is None:  # after DeepSpeed's set-up, which re-points the parameters
            self._checkpoint_state = train_state.CheckpointState(t)
        state, meta = self._checkpoint_state()
        _, plain = self._stager.stage(state)
        write_sync = None
        if t.engine is not None:
            from yolotr.engine.deepspeed_path import save_engine

            write_sync = lambda tmp: save_engine(t.engine, tmp)  # noqa: E731 - every rank its ZeRO partition
        self.ckpt.save(
            t.step,
            write_sync=write_sync,
            write_rank_files=lambda tmp: self._writer.write(self._stager, plain, meta, self.rank, tmp),
            asynchronous=self.cfg.checkpoint.async_save,
            fitness=fitness,
            started=started,
        )
        if self.cfg.debug.rank_digests:
            self.digest("checkpoint")

    def _checkpoint_committed(self, stats) -> None:
        """stall_s: what the save cost the training loop (staging and launch, then the commit; everything when
        synchronous); write_s: the background writer's time."""
        self.event(event="checkpoint", step=stats.step, path=str(stats.path), asynchronous=stats.asynchronous,
                   stall_s=round(stats.stall_s, 6), write_s=round(stats.write_s, 6))

    # ------------------------------------------------------------------ validation
    def validate(self, epoch: int, final: bool = False) -> None:
        from yolotr.data.coco_gt import coco_ground_truth
        from yolotr.data.stream import ValStream
        from yolotr.eval import fitness
        from yolotr.eval.validator import validate

        t = self.t
        self.sync_buffers()  # every rank validates its shard with the same BatchNorm statistics
        if self._gt is None:
            self._gt = coco_ground_truth(t.data.val, list(t.data.names))
        stream = ValStream(
            t.data.val,
            rank=t.backend.rank,
            world_size=t.backend.world_size,
            batch_size=self.cfg.val.batch_size,
            imgsz=self.cfg.train.imgsz,
        )
        model = t.ema.module if t.ema is not None else t.model
        result = validate(
            model,
            stream,
            self._gt,
            list(t.data.names),
            device=t.device,
            conf_thres=self.cfg.val.conf_thres,
            iou_thres=self.cfg.val.iou_thres,
            max_det=self.cfg.val.max_det,
        )
        score = fitness(result)
        improved = t.best_fitness is None or score > t.best_fitness
        if improved:
            t.best_fitness = score
        if self.is_main:
            record = self.metrics.write(
                "val",
                step=t.step,
                epoch=epoch,
                final=final,
                fitness=score,
                **{k: v for k, v in result.summary().items() if k not in ("kind", "time")},
            )
            self.wandb.log_record(record)
            (self.dir / "val_last.json").write_text(json.dumps(result.to_dict()))
            self._plot_val(stream, model, result)
        if not final:
            self.save_checkpoint(fitness=score)
        if improved:
            self.export_weights(self.dir / "weights" / "best.safetensors")

    def export_weights(self, path: Path) -> None:
        if not self.is_main:
            return
        from yolotr.checkpoint.weights_file import save_weights

        t = self.t
        path.parent.mkdir(parents=True, exist_ok=True)
        save_weights(
            path,
            model_state=t.model.state_dict(),
            ema_state=t.ema.module.state_dict() if t.ema is not None else None,
            model_yaml=t.model.yaml,
            names=list(t.data.names),
            imgsz=self.cfg.train.imgsz,
            extra={"step": t.step, "config": to_dict(self.cfg), "category_ids": t.data.category_ids},
        )

    # ------------------------------------------------------------------ plots
    def _plot_first_batch(self) -> None:
        from yolotr.eval.plots.labels import plot_labels
        from yolotr.eval.plots.mosaics import plot_train_batch

        batch = self.t.first_batch
        if batch is None:
            return
        plot_train_batch(batch.images, batch.targets, list(self.t.data.names), self.dir / "train_batch0.jpg")
        plot_labels(batch.targets, list(self.t.data.names), self.dir / "labels.jpg")

    def _plot_val(self, stream, model, result) -> None:
        from yolotr.eval.plots.mosaics import plot_val_predictions
        from yolotr.eval.plots.pr_curves import plot_pr_curves
        from yolotr.eval.plots.results import plot_results
        from yolotr.eval.validator import predict_batch

        names = list(self.t.data.names)
        plot_pr_curves(result, names, self.dir / "PR_curve.png")
        plot_results(self.dir / "metrics.jsonl", self.dir / "results.png")
        batch = next(iter(stream), None)
        if batch is None:
            return
        preds = predict_batch(model, batch.images, device=self.t.device, conf_thres=0.25, iou_thres=0.45, max_det=300, multi_label=False)
        plot_val_predictions(batch.images, preds, batch.targets, names, self.dir / "val_pred.jpg")
        self.wandb.log_images(batch.images, preds, batch.targets, names, step=self.t.step)

    # ------------------------------------------------------------------ end
    def finish(self, code: int, reason: str) -> int:
        t = self.t
        self.ckpt.close()  # never exit with a save in flight
        self._writer.close()
        self.sync_buffers()
        if self.cfg.debug.rank_digests:
            self.digest("end")
        if self._ledger is not None:
            self._ledger.close()
        if self.is_main:
            self.export_weights(self.dir / "weights" / "last.safetensors")
            self.metrics.write("event", event="stop", step=t.step, exit_code=code, reason=reason)
            # Launchers (torchrun, accelerate) turn any worker failure into exit 1: scripts read the real code here.
            (self.dir / "exit.json").write_text(json.dumps({"exit_code": code, "reason": reason, "step": t.step}))
            if self.progress is not None:
                self.progress.close()
            from yolotr.eval.plots.results import plot_results
            from yolotr.track.metrics import read_metrics
            from yolotr.track.summary import print_summary

            plot_results(self.dir / "metrics.jsonl", self.dir / "results.png")
            print(print_summary(read_metrics(self.dir / "metrics.jsonl")))
            self.wandb.finish()
            self.metrics.close()
        return code


def _ledger_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError):
        return 1 << 62  # a line cut by the crash: not kept


def _config_yaml(cfg) -> str:
    from yolotr.engine.config import dump_config

    return dump_config(cfg)


__all__ = ["RunIO", "torch"]
