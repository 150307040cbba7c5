"""Which run folder a `yolotr train` writes to, and whether it resumes: decided once, by rank 0, for every rank.

`checkpoint.resume`:

- `none` (the default): a new run, in `run.dir`, or, when that folder already holds a run, in the next free
  `run.dir2`, `run.dir3`, ... (YOLOv5's increment). So running a command again never continues, or mixes into, an
  earlier run by surprise. The exception is a restart of the *same job*: torchrun's elastic agent restarting its
  workers (TORCHELASTIC_RESTART_COUNT > 0) or Slurm requeueing the job (SLURM_RESTART_COUNT > 0) continues the
  folder that job last ran in, found by the job id every start records in the folder's `job.json`.
- `auto`: continue the newest run of `run.dir` (of run.dir, run.dir2, ...: the highest number holding a run) from
  its newest valid checkpoint, or start fresh in it when it has none.
- a path: a run folder, or one checkpoint of it (`RUN/checkpoints/step-N`): continue that run, in its folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist

from yolotr.checkpoint.run_lock import RunLock
from yolotr.checkpoint.storage import storage_error
from yolotr.errors import UsageError

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
# What only a started run leaves in its folder (an empty folder, or one a launcher made, is free).
_RUN_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoints", JOB_FILE)


@dataclass(frozen=True)
class RunFolder:
    path: Path
    resume: str
    """What the trainer then does there: "none" (start fresh), "auto" (newest valid checkpoint, fresh if none) or
    the path of the checkpoint to resume."""
    why: str
    lock: RunLock | None = None
    """Rank 0's hold on the folder (`settle_run_folder`), released when the job ends."""


def holds_run(path: Path) -> bool:
    return any((path / name).exists() for name in _RUN_MARKERS)


def numbered_runs(run_dir: Path) -> list[tuple[int, Path]]:
    """run.dir (number 1) and its increments run.dir2, run.dir3, ... that hold a run, by number."""
    found = [(1, run_dir)] if holds_run(run_dir) else []
    increment = re.compile(re.escape(run_dir.name) + r"([2-9]|[1-9]\d+)$")
    if run_dir.parent.is_dir():
        for path in run_dir.parent.iterdir():
            match = increment.fullmatch(path.name)
            if match and path.is_dir() and holds_run(path):
                found.append((int(match.group(1)), path))
    return sorted(found)


def this_job(env: Mapping[str, str] = os.environ) -> tuple[str | None, bool]:
    """(an id of the job this process belongs to, whether this process is a restart of that job)."""
    if env.get("SLURM_JOB_ID"):
        job = f"slurm:{env['SLURM_JOB_ID']}"
    elif env.get("TORCHELASTIC_RUN_ID"):
        job = f"torchelastic:{env['TORCHELASTIC_RUN_ID']}"
    else:
        job = None
    restarts = [env.get("SLURM_RESTART_COUNT") or "0", env.get("TORCHELASTIC_RESTART_COUNT") or "0"]
    return job, any(count.isdigit() and int(count) > 0 for count in restarts)


def _job_record(path: Path) -> dict:
    try:
        record = json.loads((path / JOB_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def choose_run_folder(run_dir: str | os.PathLike, resume: str,
                      env: Mapping[str, str] = os.environ) -> RunFolder:
    """The folder and the resume choice for `run.dir` and `checkpoint.resume` (see the module docstring)."""
    run_dir = Path(run_dir)
    if resume not in ("none", "auto"):
        target = Path(resume)
        if not target.exists():
            raise UsageError(f"--resume {resume}: no such run folder or checkpoint (--resume takes auto, none, a run "
                             "folder or one of its checkpoints/step-N)")
        if target.parent.name == "checkpoints":
            return RunFolder(target.parent.parent, resume, f"resuming {target}")
        if (target / "checkpoints").is_dir():
            return RunFolder(target, "auto", f"resuming run {target}")
        if not (target / "manifest.json").is_file():
            raise UsageError(f"--resume {resume}: neither a run folder (it has no checkpoints/) nor a checkpoint (it "
                             "has no manifest.json)")
        return RunFolder(run_dir, resume, f"resuming {target}")
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"run.dir {run_dir}: is a file, not a folder; name another run.dir")
    runs = numbered_runs(run_dir)
    if resume == "auto":
        newest = runs[-1][1] if runs else run_dir
        return RunFolder(newest, "auto", f"continuing the newest run of {run_dir}: {newest}")
    job, restart = this_job(env)
    if restart and job is not None:
        mine = [(_job_record(path).get("started", 0), path) for _, path in runs if _job_record(path).get("job") == job]
        if mine:
            folder = max(mine)[1]
            return RunFolder(folder, "auto", f"a restart of job {job}: continuing its run {folder}")
    if not holds_run(run_dir):
        return RunFolder(run_dir, "none", "a new run")
    fresh = run_dir.with_name(f"{run_dir.name}{max(number for number, _ in runs) + 1}")
    return RunFolder(fresh, "none", f"a new run: {run_dir} holds an earlier one (--resume continues that)")


def settle_run_folder(cfg, env: Mapping[str, str] = os.environ) -> RunFolder:
    """Rank 0 chooses the run folder, creates it and records this job in it; every rank receives the choice (a
    broadcast when distributed, so that ranks starting a moment apart never disagree). Sets `cfg.run.dir` and
    `cfg.checkpoint.resume` to it."""
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank = dist.get_rank() if distributed else 0
    choice: list = [None]
    lock = None
    if rank == 0:
        job, restart = this_job(env)
        folder = RunFolder(Path(cfg.run.dir), cfg.checkpoint.resume, "as configured")
        try:
            folder = choose_run_folder(cfg.run.dir, cfg.checkpoint.resume, env)
            folder.path.mkdir(parents=True, exist_ok=True)
            lock = RunLock(folder.path, job=job, restart=restart, lease_s=cfg.run.lock_lease_s)
            note = lock.acquire()  # before anything is written there
            if note:
                log.info(note)
            record = {"job": job, "started": time.time(), "host": os.uname().nodename, "pid": os.getpid()}
            (folder.path / JOB_FILE).write_text(json.dumps(record) + "\n")
        except OSError as error:  # read-only, full, gone: every rank stops with the same reason
            choice = [("error", storage_error(error, folder.path))]
        except UsageError as error:  # a run folder in use by another job, a --resume that names no run
            choice = [("error", error)]
        else:
            if folder.path != Path(cfg.run.dir) or folder.resume != cfg.checkpoint.resume:
                log.info(f"run folder {folder.path}: {folder.why}")
            choice = [("ok", folder)]
    if distributed:
        dist.broadcast_object_list(choice, src=0)
    kind, value = choice[0]
    if kind == "error":
        raise value
    cfg.run.dir, cfg.checkpoint.resume = str(value.path), value.resume
    return dataclasses.replace(value, lock=lock)
