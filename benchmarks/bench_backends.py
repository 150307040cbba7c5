"""DeepSpeed ZeRO against DDP (issue 18, item 3): the steady-state training images/s of the whole trainer, the same
config, data, ranks and steps, measured side by side in one run (real `yolotr train` processes under torchrun).

Steady state: the `train` records of metrics.jsonl after the first `--warmup-steps` (start-up, compile, allocator,
cuDNN autotuning), images over the wall time between those records. Rounds alternate the order of the backends so
that neither always runs on a warmer machine; the figure is the median over rounds. A run in which DeepSpeed
reported turning the trainer's autocast off (its forward then runs in fp32) is flagged.

    python benchmarks/bench_backends.py --nproc 2 --imgsz 96 --batch 16 --steps 60 --warmup-steps 20   # 2 CPU ranks
    python benchmarks/bench_backends.py --nproc 1 --model configs/models/yolotr-s.yaml --imgsz 320 --batch 64 \
        --workers 6 --steps 160 --warmup-steps 60 --data DATA.yaml                                   # one GPU
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
from dataclasses import dataclass
from pathlib import Path

from yolotr.track.metrics import read_metrics
from yolotr.track.summary import steady_images_per_s

REPO = Path(__file__).resolve().parents[1]
AUTOCAST_OFF = "disabled within the DeepSpeed engine"  # DeepSpeed's warning when it turns an outer autocast off
SHIPPED = {"zero1": "configs/deepspeed/zero1.json", "zero2": "configs/deepspeed/zero2.json"}


def backend_overrides(backend: str) -> list[str]:
    """ddp (the plain path: DDP over several ranks, one process without), zero1 / zero2 (the shipped DeepSpeed
    configs), or the path of any DeepSpeed json."""
    if backend == "ddp":
        return ["distributed.backend=ddp"]
    config = SHIPPED.get(backend, backend)
    if not Path(REPO / config).is_file() and not Path(config).is_file():
        sys.exit(f"--backends: {backend} is neither ddp, zero1, zero2 nor a DeepSpeed json file")
    return ["distributed.backend=deepspeed", f"distributed.deepspeed_config={config}"]


@dataclass
class Measured:
    backend: str
    steady_images_per_s: float
    steady_steps: int
    whole_run_s: float
    autocast_off: bool


def run_backend(backend: str, args, data: str, run_dir: Path) -> Measured:
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 2) // args.nproc))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "WANDB_MODE": "disabled"}
    env.pop("ACCELERATE_USE_CPU", None)  # yolotr's runtime sets what each backend needs on a CPU
    overrides = [
        f"data={data}", f"run.dir={run_dir}", f"model={args.model}", f"train.imgsz={args.imgsz}",
        f"train.batch_size={args.batch}", f"train.nominal_batch_size={args.batch}", f"train.max_steps={args.steps}",
        f"train.num_workers={args.workers}", f"train.log_every={args.log_every}", "val.every_epochs=0",
        f"checkpoint.every={10 * args.steps}", "checkpoint.resume=none", "train.progress_bar=false",
        "log.tensorboard=false", "wandb.enabled=false", "train.optimizer=sgd", "train.lr0=0.01",
        *backend_overrides(backend), *args.overrides,
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={args.nproc}", "--standalone",
           "-m", "yolotr", "train", "--config", "configs/train/demo.yaml", *overrides]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{backend}: yolotr train failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    records = read_metrics(run_dir / "metrics.jsonl")
    try:
        images_per_s, steps = steady_images_per_s(records, after_step=args.warmup_steps)
    except ValueError as error:
        sys.exit(f"{backend}: {error}: raise --steps or lower --log-every")
    train = [r for r in records if r["kind"] == "train"]
    return Measured(backend, images_per_s, steps, train[-1]["time"] - train[0]["time"],
                    AUTOCAST_OFF in result.stderr + result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["ddp", "zero2"],
                        help="ddp, zero1, zero2 or a DeepSpeed json; the first is the reference of the ratios")
    parser.add_argument("--nproc", type=int, default=2, help="ranks (torchrun --nproc-per-node)")
    parser.add_argument("--model", default="configs/models/yolotr-n.yaml")
    parser.add_argument("--imgsz", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16, help="global batch")
    parser.add_argument("--workers", type=int, default=1, help="data workers per rank")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup-steps", type=int, default=20, help="steps left out of the steady state")
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", help="a data.yaml (default: a synthetic set is made)")
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("overrides", nargs="*", help="more `key=value` overrides for every run (train.compile=false)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="yolotr-backends-"))
    try:
        data = args.data
        if data is None:
            subprocess.run([sys.executable, "-m", "yolotr", "data", "synth", "--out", str(work / "data"), "--train",
                            str(max(256, args.batch * 8)), "--val", "16", "--imgsz", str(args.imgsz), "--seed", "0"],
                           check=True, cwd=REPO, capture_output=True)
            data = str(work / "data" / "data.yaml")
        rounds: list[list[Measured]] = []
        for i in range(args.rounds):
            order = args.backends if i % 2 == 0 else args.backends[::-1]
            measured = {b: run_backend(b, args, data, work / f"run-{i}-{b}") for b in order}
            rounds.append([measured[b] for b in args.backends])
            print(f"round {i + 1}: " + ", ".join(f"{m.backend} {m.steady_images_per_s:.1f} img/s over "
                                                 f"{m.steady_steps} steps" for m in rounds[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.nproc} rank(s), {args.model}, batch {args.batch} at {args.imgsz} px, {args.steps} steps, steady "
          f"state after step {args.warmup_steps}, median of {args.rounds} round(s)")
    print(f"| backend | steady img/s | per round | ratio to {args.backends[0]} | whole run s | autocast |")
    print("|---|---:|---|---:|---:|---|")
    reference = statistics.median(r[0].steady_images_per_s for r in rounds)
    results = []
    for j, backend in enumerate(args.backends):
        per_round = [r[j].steady_images_per_s for r in rounds]
        median = statistics.median(per_round)
        off = any(r[j].autocast_off for r in rounds)
        results.append({"backend": backend, "steady_images_per_s": median, "per_round": per_round,
                        "ratio": median / reference, "whole_run_s": statistics.median(r[j].whole_run_s for r in rounds),
                        "autocast_turned_off": off})
        print(f"| {backend} | {median:.1f} | {', '.join(f'{x:.1f}' for x in per_round)} | {median / reference:.3f} | "
              f"{results[-1]['whole_run_s']:.1f} | {'OFF inside DeepSpeed' if off else 'as train.precision'} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    if any(r["autocast_turned_off"] for r in results):
        sys.exit("DeepSpeed turned the trainer's autocast off: its forward ran in fp32")


if __name__ == "__main__":
    main()
