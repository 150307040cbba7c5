"""Runs the study's cells: each one a real `yolotr train` in its own process (torchrun for multi-rank cells).

Cells are independent runs, so they are launched as subprocesses rather than called in-process: every cell gets a
fresh interpreter (no state leaks from one configuration into the next), the multi-rank cells need a launcher
anyway, and a cell that hangs or crashes is killed or reported without taking the study down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from yolotr.study.matrix import Cell, Profile, StudyDefinition

POLL_S = 0.5
"""How often the runner looks at its running cells (a cell takes tens of seconds at the least)."""


@dataclass(frozen=True)
class CellLaunch:
    cell: Cell
    run_dir: Path
    train_args: list[str]
    """`-m yolotr train --config BASE key=value ...`: what follows the interpreter or the launcher."""
    world_size: int
    timeout_s: int

    def command(self, master_port: int | None = None) -> list[str]:
        """The full command line; multi-rank cells go through torchrun (its module form: no PATH lookup)."""
        if self.world_size == 1:
            return [sys.executable, *self.train_args]
        port = [f"--master-port={master_port}"] if master_port else []
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={self.world_size}", *port,
                *self.train_args]


@dataclass(frozen=True)
class CellProcess:
    """How the cell's process ended, seen from outside (the run folder says what happened inside)."""

    returncode: int | None
    wall_s: float
    timed_out: bool
    log: Path


def prepare_data(out_dir: Path, profile: Profile, seed: int) -> Path:
    """Draws the profile's synthetic set into DIR/data (replacing an older one) and returns DIR/data/data.yaml."""
    from yolotr.data.synth import write_synthetic_dataset

    data_dir = out_dir / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    return write_synthetic_dataset(data_dir, train=profile.train_images, val=profile.val_images,
                                   imgsz=profile.imgsz, seed=seed)


def plan_cells(study: StudyDefinition, cells: list[Cell], profile: Profile, data_yaml: Path, out_dir: Path,
               procs: int) -> list[CellLaunch]:
    """One launch per cell; multi-rank cells run with `procs` ranks."""
    launches = []
    for cell in cells:
        world_size = procs if cell.procs > 1 else 1
        run_dir = out_dir / "runs" / cell.id
        overrides = {**study.overrides(cell, profile, world_size), "data": str(data_yaml), "run.dir": str(run_dir)}
        args = ["-m", "yolotr", "train", "--config", str(study.base),
                *(f"{key}={_yaml_value(value)}" for key, value in overrides.items())]
        launches.append(CellLaunch(cell, run_dir, args, world_size, profile.timeout_s))
    return launches


def run_cells(launches: list[CellLaunch], jobs: int, on_done=None) -> dict[str, CellProcess]:
    """Runs single-rank cells `jobs` at a time, then multi-rank cells as many at a time as the CPUs allow.

    Each process gets an equal share of the CPU threads, so cells that run side by side do not oversubscribe the
    machine (an oversubscribed CPU slows every process several times over). The cells run in sessions of their own
    (a timeout kills a launcher and its ranks together), so Ctrl-C reaches only this loop: it ends them on its way
    out, and so does SIGTERM.
    """
    results: dict[str, CellProcess] = {}
    cpus = os.cpu_count() or 1
    running: list[RunningCell] = []
    # SIGTERM (a scheduler, `kill`) ends the study the way Ctrl-C does, through the `finally` below.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for world_size in sorted({launch.world_size for launch in launches}):
            pending = [launch for launch in launches if launch.world_size == world_size]
            concurrent = max(1, jobs // world_size)
            threads = max(1, cpus // (concurrent * world_size))
            while pending or running:
                while pending and len(running) < concurrent:
                    running.append(RunningCell.start(pending.pop(0), threads))
                time.sleep(POLL_S)
                for cell in list(running):
                    process = cell.poll()
                    if process is not None:
                        running.remove(cell)
                        results[cell.launch.cell.id] = process
                        if on_done is not None:
                            on_done(cell.launch, process)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for cell in running:  # only non-empty when leaving on an exception (Ctrl-C, SIGTERM)
            cell.kill()
    return results


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


@dataclass
class RunningCell:
    """A started cell: its process (the launcher under torchrun), its log file and its deadline."""

    launch: CellLaunch
    proc: subprocess.Popen
    log: Path
    log_file: IO[str]
    started: float

    @classmethod
    def start(cls, launch: CellLaunch, threads: int) -> RunningCell:
        """Starts a cell from a clean run folder; its stdout and stderr go to DIR/runs/<id>.log."""
        if launch.run_dir.exists():
            shutil.rmtree(launch.run_dir)  # metrics.jsonl appends: an old run's records must not mix in
        launch.run_dir.parent.mkdir(parents=True, exist_ok=True)
        log = launch.run_dir.with_suffix(".log")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
        # The port is taken just before the launch, so concurrent cells never share one.
        command = launch.command(master_port=_free_port() if launch.world_size > 1 else None)
        log_file = open(log, "w")
        log_file.write(" ".join(command) + "\n\n")
        log_file.flush()
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        return cls(launch, proc, log, log_file, time.perf_counter())

    def poll(self) -> CellProcess | None:
        """None while the cell runs; how it ended once it has (killed, with its ranks, past its timeout)."""
        elapsed = time.perf_counter() - self.started
        timed_out = self.proc.poll() is None and elapsed > self.launch.timeout_s
        if timed_out:
            self.kill()
        elif self.proc.returncode is None:
            return None
        self.log_file.close()
        return CellProcess(self.proc.returncode, elapsed, timed_out, self.log)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # the group may have ended on its own meanwhile
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.log_file.close()


def _yaml_value(value: Any) -> str:
    """An override value as the trainer reads it (YAML); JSON is YAML, and keeps floats and booleans exact."""
    return value if isinstance(value, str) else json.dumps(value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


__all__ = ["CellLaunch", "CellProcess", "RunningCell", "plan_cells", "prepare_data", "run_cells"]
