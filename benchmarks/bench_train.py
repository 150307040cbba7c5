"""Trainer figures, measured side by side in one run on the synthetic set (real `yolotr train` processes):

1. images/s with 1 vs 2 processes (torchrun, gloo on CPU; same global batch);
2. training stall of checkpoints: no checkpoint vs async vs synchronous saves every few steps;
3. time from process start to the first step: fresh start vs resume early vs late in an epoch.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_train.py [--steps 40] [--imgsz 128]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(config: Path, overrides: list[str], procs: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, 2 // procs)), "WANDB_MODE": "disabled"}
    if procs == 1:
        cmd = [sys.executable, "-m", "yolotr", "train"]
    else:
        cmd = [str(BIN / "torchrun"), f"--nproc-per-node={procs}", "--master-port=29731", "-m", "yolotr", "train"]
    start = time.time()
    subprocess.run([*cmd, "--config", str(config), *overrides], cwd=REPO, env=env, check=True, capture_output=True)
    return start


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--imgsz", type=int, default=128)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="yolotr-bench-"))
    subprocess.run([sys.executable, "-m", "yolotr", "data", "synth", "--out", str(work / "data"), "--train", "640",
                    "--val", "16"], check=True, cwd=REPO, capture_output=True)
    config = work / "train.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(REPO / "configs/models/yolotr-n.yaml"), "data": str(work / "data/data.yaml"),
        "train": {"max_steps": args.steps, "batch_size": 16, "nominal_batch_size": 16, "imgsz": args.imgsz,
                  "num_workers": 0, "log_every": 1, "progress_bar": False, "warmup_epochs": 0.0},
        "val": {"every_epochs": 0}, "wandb": {"enabled": False}, "checkpoint": {"every": 10_000},
    }))

    def loop_time(run_dir: Path, skip: int = 3) -> tuple[float, float]:
        train = records(run_dir, "train")
        span = train[-1]["time"] - train[skip - 1]["time"]
        return span / (len(train) - skip), 16 * (len(train) - skip) / span

    print("## images/s, 1 vs 2 processes (global batch 16)\n\n| processes | s/step | images/s |\n|---|---:|---:|")
    ips = {}
    for procs in (1, 2):
        run_dir = work / f"scale{procs}"
        run(config, [f"run.dir={run_dir}"], procs)
        s_step, ips[procs] = loop_time(run_dir)
        print(f"| {procs} | {s_step:.3f} | {ips[procs]:.1f} |")
    print(f"\n2 vs 1 process: {ips[2] / ips[1]:.2f}x\n")

    print("## checkpoint stall (2 processes, a save every 5 steps)\n\n| checkpoints | s/step | stall vs none |\n|---|---:|---:|")
    base = None
    for name, overrides in [("none", []), ("async", ["checkpoint.every=5", "checkpoint.async_save=true"]),
                            ("sync", ["checkpoint.every=5", "checkpoint.async_save=false"])]:
        run_dir = work / f"ckpt-{name}"
        run(config, [f"run.dir={run_dir}", *overrides], 2)
        s_step, _ = loop_time(run_dir)
        base = base or s_step
        print(f"| {name} | {s_step:.3f} | {100 * (s_step / base - 1):+.1f}% |")

    print("\n## time from process start to the first step (1 process)\n\n| start | seconds | vs fresh |\n|---|---:|---:|")
    resume_dir = work / "resume"
    run(config, [f"run.dir={resume_dir}", "checkpoint.every=1", "train.max_steps=39", "checkpoint.keep_last=100"], 1)
    fresh_dir = work / "fresh"
    start = run(config, [f"run.dir={fresh_dir}", "train.max_steps=2"], 1)
    fresh = records(fresh_dir, "train")[0]["time"] - start
    print(f"| fresh | {fresh:.2f} | 1.00 |")
    for label, step in [("resume early in the epoch (step 2 of 40)", 2), ("resume late in the epoch (step 38 of 40)", 38)]:
        run_dir = work / f"resume-{step}"
        shutil.copytree(resume_dir, run_dir)
        start = run(config, [f"run.dir={run_dir}", f"checkpoint.resume={run_dir}/checkpoints/step-{step:08d}",
                             f"train.max_steps={step + 1}"], 1)
        first = records(run_dir, "train")[-1]["time"] - start
        print(f"| {label} | {first:.2f} | {first / fresh:.2f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
