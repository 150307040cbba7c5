"""Fine-tuning vs training from scratch, side by side in one run on the synthetic set (real `yolotr train` processes).

1. pretrain yolotr-n on synthetic set A (all 8 shapes, seed 101) with the demo recipe;
2. on synthetic set B (4 shapes, another seed: other images, other class count), train the same recipe from scratch
   and from A's weights (`train.weights`: every layer but the 8-class head transfers), for several run seeds each;
3. print mAP@0.5 per epoch (mean and min–max over seeds), the epoch at which each fine-tuned run first reaches the
   scratch runs' mean final mAP@0.5, and draw the curves (docs/finetune.png, the numbers in docs/finetune.json).

    OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python benchmarks/bench_finetune.py [--seeds 0 1 2] [--epochs 12]
    python benchmarks/bench_finetune.py --workers 6                                        # one GPU
    python benchmarks/bench_finetune.py --replot docs/finetune.json   # table and image from a run's numbers
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def synth(out: Path, *, classes: int, seed: int, train: int, val: int, imgsz: int) -> Path:
    subprocess.run([sys.executable, "-m", "yolotr", "data", "synth", "--out", str(out), "--classes", str(classes),
                    "--seed", str(seed), "--train", str(train), "--val", str(val), "--imgsz", str(imgsz)],
                   check=True, cwd=REPO, capture_output=True)
    return out / "data.yaml"


def train(run_dir: Path, data: Path, epochs: int, seed: int, args, weights: Path | None = None) -> list[float]:
    """One `yolotr train` with the demo recipe; returns mAP@0.5 after each epoch."""
    overrides = [f"data={data}", f"run.dir={run_dir}", f"run.seed={seed}", f"train.epochs={epochs}",
                 f"train.imgsz={args.imgsz}", f"train.num_workers={args.workers}", "train.progress_bar=false",
                 "val.every_epochs=1", "checkpoint.every=100000", "wandb.enabled=false"]
    if weights is not None:
        overrides.append(f"train.weights={weights}")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "WANDB_MODE": "disabled"}
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "yolotr", "train", "--config", "demo", *overrides], cwd=REPO,
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"yolotr train failed ({' '.join(overrides)}):\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [r["map50"] for r in records if r["kind"] == "val" and not r["final"]]
    print(f"  {run_dir.name}: {time.time() - started:.0f} s, final mAP@0.5 {curve[-1]:.3f}", flush=True)
    return curve


def first_epoch_reaching(curve: list[float], target: float) -> int | None:
    return next((epoch for epoch, value in enumerate(curve, start=1) if value >= target), None)


def plot(curves: dict[str, list[list[float]]], target: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=110)
    for (label, runs), color in zip(curves.items(), ("tab:gray", "tab:blue")):
        epochs = range(1, len(runs[0]) + 1)
        per_epoch = list(zip(*runs))
        ax.plot(epochs, [statistics.mean(v) for v in per_epoch], color=color, label=label, marker="o", ms=3)
        ax.fill_between(epochs, [min(v) for v in per_epoch], [max(v) for v in per_epoch], color=color, alpha=0.2)
    ax.axhline(target, color="tab:gray", ls="--", lw=0.8, label="scratch: mean final mAP@0.5")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mAP@0.5 (val)")
    ax.set_title("yolotr-n on a 4-class synthetic set: from scratch vs fine-tuned", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)


def summarize(curves: dict[str, list[list[float]]], seeds: list[int], out: Path) -> None:
    """Prints the per-epoch table and the epochs-to-target, and draws the curves into `out`."""
    epochs = len(curves["from scratch"][0])
    target = statistics.mean(run[-1] for run in curves["from scratch"])
    print(f"\n## mAP@0.5 on set B per epoch: mean (min–max) over run seeds {seeds}\n")
    print("| epoch | from scratch | fine-tuned from A |\n|---:|---|---|")
    for epoch in range(epochs):
        cells = [f"{statistics.mean(v):.3f} ({min(v):.3f}–{max(v):.3f})"
                 for v in ([run[epoch] for run in runs] for runs in curves.values())]
        print(f"| {epoch + 1} | {cells[0]} | {cells[1]} |")
    reached = [first_epoch_reaching(run, target) for run in curves["fine-tuned from A"]]
    print(f"\nscratch runs' mean final mAP@0.5 (epoch {epochs}): {target:.3f}")
    print(f"fine-tuned runs first reach it at epoch: {reached} (of {epochs})")
    plot(curves, target, out)
    print(f"curves: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds of each arm")
    parser.add_argument("--epochs", type=int, default=12, help="epochs on set B (both arms)")
    parser.add_argument("--pretrain-epochs", type=int, default=12, help="epochs on set A")
    parser.add_argument("--train", type=int, default=800, help="training images of each set")
    parser.add_argument("--val", type=int, default=200, help="validation images of each set")
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "finetune.png")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and runs (default: a temp folder)")
    parser.add_argument("--replot", type=Path, default=None, help="only summarize and draw a run's numbers (json)")
    args = parser.parse_args()
    if args.replot is not None:
        numbers = json.loads(args.replot.read_text())
        summarize(numbers["map50"], numbers["seeds"], args.out)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="yolotr-finetune-"))
    sizes = dict(train=args.train, val=args.val, imgsz=args.imgsz)
    data_a = synth(work / "synth-a", classes=8, seed=101, **sizes)
    data_b = synth(work / "synth-b", classes=4, seed=202, **sizes)
    print(f"pretraining on A (8 classes, seed 101) for {args.pretrain_epochs} epochs", flush=True)
    train(work / "pretrain-a", data_a, args.pretrain_epochs, 0, args)
    weights = work / "pretrain-a" / "weights" / "last.safetensors"

    curves: dict[str, list[list[float]]] = {"from scratch": [], "fine-tuned from A": []}
    numbers = args.out.with_suffix(".json")
    for seed in args.seeds:
        print(f"set B (4 classes, seed 202), run seed {seed}", flush=True)
        curves["from scratch"].append(train(work / f"scratch-{seed}", data_b, args.epochs, seed, args))
        curves["fine-tuned from A"].append(train(work / f"finetune-{seed}", data_b, args.epochs, seed, args, weights))
        done = args.seeds[: len(curves["from scratch"])]  # the runs so far: a cut-short run keeps what it measured
        numbers.write_text(json.dumps({"seeds": done, "command": " ".join(sys.argv), "map50": curves}) + "\n")

    summarize(curves, args.seeds, args.out)
    print(f"runs and data in {work}")


if __name__ == "__main__":
    main()
