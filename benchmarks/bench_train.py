"""Trainer figures, measured side by side in one run on the synthetic set (real `yolotr train` processes):

1. images/s with 1 vs 2 processes (torchrun; gloo on CPU; same global batch);
2. checkpoint stall: what an async save and a synchronous save cost the training loop, read from the `checkpoint`
   events each commit writes (`stall_s`: staging + launch + commit for async, everything for sync), and the step
   time with saves every few steps against none;
3. time from process start to the first step: fresh start vs resume early vs late in an epoch (1 process).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_train.py [--steps 40] [--imgsz 128]
    python benchmarks/bench_train.py --procs 1 --batch 64 --imgsz 320 --workers 6 --steps 60 --stall-steps 200 \
        --ckpt-every 40                                                                         # one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from yolotr.data.spec import load_data_yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(config: Path, overrides: list[str], procs: int) -> float:
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 2) // procs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "WANDB_MODE": "disabled"}
    if procs == 1:
        cmd = [sys.executable, "-m", "yolotr", "train"]
    else:
        cmd = [str(BIN / "torchrun"), f"--nproc-per-node={procs}", "--master-port=29731", "-m", "yolotr", "train"]
    start = time.time()
    result = subprocess.run([*cmd, "--config", str(config), *overrides], cwd=REPO, env=env, capture_output=True,
                            text=True)
    if result.returncode != 0:
        sys.exit(f"yolotr train failed ({' '.join(overrides)}):\n{result.stderr[-3000:]}")
    return start


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def loop_time(run_dir: Path, batch: int, skip: int = 3) -> tuple[float, float]:
    """(s/step, images/s) over the logged steps after the first `skip` (start-up, allocator, autotuning)."""
    train = records(run_dir, "train")
    span = train[-1]["time"] - train[skip - 1]["time"]
    return span / (len(train) - skip), batch * (len(train) - skip) / span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="global batch")
    parser.add_argument("--workers", type=int, default=0, help="data workers per process")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--ckpt-every", type=int, default=25, help="steps between saves in the stall comparison")
    parser.add_argument("--stall-steps", type=int, default=100, help="steps of each run in the stall comparison")
    parser.add_argument("--stall-procs", type=int, default=1,
                        help="processes in the stall comparison (more ranks add their skew to every save)")
    parser.add_argument("--data", help="an existing data.yaml (default: a synthetic set of 40 batches is made)")
    parser.add_argument("--sections", nargs="+", choices=["scale", "stall", "resume"],
                        default=["scale", "stall", "resume"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="yolotr-bench-"))
    data = args.data
    if data is None:
        subprocess.run([sys.executable, "-m", "yolotr", "data", "synth", "--out", str(work / "data"), "--train",
                        str(40 * args.batch), "--val", "16", "--imgsz", str(args.imgsz)],
                       check=True, cwd=REPO, capture_output=True)
        data = str(work / "data/data.yaml")
    steps_per_epoch = load_data_yaml(data).train.num_samples // args.batch
    config = work / "train.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(REPO / "configs/models/yolotr-n.yaml"), "data": data,
        "train": {"max_steps": args.steps, "batch_size": args.batch, "nominal_batch_size": args.batch,
                  "imgsz": args.imgsz, "num_workers": args.workers, "log_every": 1, "progress_bar": False,
                  "warmup_epochs": 0.0},
        "val": {"every_epochs": 0}, "wandb": {"enabled": False}, "checkpoint": {"every": 10_000},
    }))

    if "scale" in args.sections:
        scaling(args, config, work)
    if "stall" in args.sections:
        checkpoint_stall(args, config, work)
    if "resume" in args.sections:
        time_to_first_step(config, work, steps_per_epoch)
    shutil.rmtree(work, ignore_errors=True)


def scaling(args, config: Path, work: Path) -> None:
    print(f"## images/s (global batch {args.batch}, {args.imgsz} px)\n\n| processes | s/step | images/s |\n|---|---:|---:|")
    ips = {}
    for procs in args.procs:
        run_dir = work / f"scale{procs}"
        run(config, [f"run.dir={run_dir}"], procs)
        s_step, ips[procs] = loop_time(run_dir, args.batch)
        print(f"| {procs} | {s_step:.4f} | {ips[procs]:.1f} |")
    if len(ips) > 1:
        lo, hi = min(ips), max(ips)
        print(f"\n{hi} vs {lo} process(es): {ips[hi] / ips[lo]:.2f}x")


def checkpoint_stall(args, config: Path, work: Path) -> None:
    procs = args.stall_procs
    print(f"\n## checkpoint stall ({procs} process(es), a save every {args.ckpt_every} steps)\n")
    print("| checkpoints | s/step | vs none | median stall per save (s) | median background write (s) |")
    print("|---|---:|---:|---:|---:|")
    base, stall = None, {}
    for name, overrides in [("none", []),
                            ("async", [f"checkpoint.every={args.ckpt_every}", "checkpoint.async_save=true"]),
                            ("sync", [f"checkpoint.every={args.ckpt_every}", "checkpoint.async_save=false"])]:
        run_dir = work / f"ckpt-{name}"
        run(config, [f"run.dir={run_dir}", f"train.max_steps={args.stall_steps}", *overrides], procs)
        s_step, _ = loop_time(run_dir, args.batch)
        base = base or s_step
        saves = [r for r in records(run_dir, "event")
                 if r.get("event") == "checkpoint" and r["step"] < args.stall_steps]  # not the final save
        if saves:
            stall[name] = statistics.median(r["stall_s"] for r in saves)
            write = statistics.median(r["write_s"] for r in saves)
            print(f"| {name} | {s_step:.4f} | {100 * (s_step / base - 1):+.1f}% | {stall[name]:.4f} | {write:.4f} |")
        else:
            print(f"| {name} | {s_step:.4f} | | | |")
    print(f"\nasync stall / sync stall: {100 * stall['async'] / stall['sync']:.1f}% (target ≤ 5%)")


def time_to_first_step(config: Path, work: Path, steps_per_epoch: int) -> None:
    print("\n## time from process start to the first step (1 process)\n\n| start | seconds | vs fresh |\n|---|---:|---:|")
    last = steps_per_epoch - 1
    resume_dir = work / "resume"
    run(config, [f"run.dir={resume_dir}", "checkpoint.every=1", f"train.max_steps={last}", "checkpoint.keep_last=100"],
        1)
    fresh_dir = work / "fresh"
    start = run(config, [f"run.dir={fresh_dir}", "train.max_steps=2"], 1)
    fresh = records(fresh_dir, "train")[0]["time"] - start
    print(f"| fresh | {fresh:.2f} | 1.00 |")
    for label, step in [(f"resume early in the epoch (step 2 of {steps_per_epoch})", 2),
                        (f"resume late in the epoch (step {last - 1} of {steps_per_epoch})", last - 1)]:
        run_dir = work / f"resume-{step}"
        shutil.copytree(resume_dir, run_dir)
        start = run(config, [f"run.dir={run_dir}", f"checkpoint.resume={run_dir}/checkpoints/step-{step:08d}",
                             f"train.max_steps={step + 1}"], 1)
        first = records(run_dir, "train")[-1]["time"] - start
        print(f"| {label} | {first:.2f} | {first / fresh:.2f} |")


if __name__ == "__main__":
    main()
