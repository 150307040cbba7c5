"""The trainer's images/s at two commits, side by side in one run: is the new one slower? (issue 18: "on CPU, nothing
gets slower", paired runs.)

Each commit is checked out in a temporary git worktree and runs `yolotr train` from there (its own code, this
interpreter and packages) with the same config, synthetic set, ranks and steps; rounds alternate which commit goes
first. The figure is the steady-state images/s (the train records after `--warmup-steps`), the median over rounds,
and the ratio new / old per round.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_commits.py OLD_REF [NEW_REF] [--rounds 3] [--steps 150]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from yolotr.track.metrics import read_metrics
from yolotr.track.summary import steady_images_per_s

REPO = Path(__file__).resolve().parents[1]


def checkout(ref: str, where: Path) -> str:
    """A detached worktree of `ref` at `where`; returns the commit's short hash."""
    subprocess.run(["git", "worktree", "add", "--detach", str(where), ref], cwd=REPO, check=True,
                   capture_output=True)
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, check=True, capture_output=True,
                          text=True).stdout.strip()


def train_images_per_s(tree: Path, args, data: Path, run_dir: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 2) // args.nproc))}
    launcher = ([sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={args.nproc}", "--standalone"]
                if args.nproc > 1 else [sys.executable])
    cmd = [*launcher, "-m", "yolotr", "train", "--config", str(tree / args.config), f"data={data}",
           f"run.dir={run_dir}", f"train.max_steps={args.steps}", "val.every_epochs=0", "wandb.enabled=false",
           *args.overrides]
    result = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{tree}: yolotr train failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return steady_images_per_s(read_metrics(run_dir / "metrics.jsonl"), after_step=args.warmup_steps)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", help="the reference commit (any git ref)")
    parser.add_argument("new", nargs="?", default="HEAD")
    parser.add_argument("--config", default="configs/train/demo.yaml", help="each commit's own copy of this file")
    parser.add_argument("--nproc", type=int, default=2, help="ranks (torchrun; 1: one plain process)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup-steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=2048, help="size of the synthetic set")
    parser.add_argument("overrides", nargs="*", help="`key=value` overrides for both commits' runs")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="yolotr-commits-"))
    trees = {"old": work / "old", "new": work / "new"}
    try:
        names = {side: checkout(getattr(args, side), tree) for side, tree in trees.items()}
        data = work / "data"
        subprocess.run([sys.executable, "-m", "yolotr", "data", "synth", "--out", str(data), "--train",
                        str(args.train_images), "--val", "16", "--seed", "0"], cwd=trees["new"], check=True,
                       capture_output=True, env={**os.environ, "PYTHONPATH": str(trees["new"])})
        speeds: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(args.rounds):
            for side in ("old", "new") if i % 2 == 0 else ("new", "old"):
                speeds[side].append(train_images_per_s(trees[side], args, data / "data.yaml", work / f"{side}-{i}"))
            print(f"round {i + 1}: old {speeds['old'][-1]:.1f}, new {speeds['new'][-1]:.1f} img/s, "
                  f"new/old {speeds['new'][-1] / speeds['old'][-1]:.3f}", flush=True)
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True,
                           check=False)
        shutil.rmtree(work, ignore_errors=True)

    ratios = [n / o for n, o in zip(speeds["new"], speeds["old"])]
    print(f"\n{args.config}, {args.nproc} rank(s), {args.steps} steps, steady state after step {args.warmup_steps}, "
          f"{args.rounds} rounds")
    print(f"old {args.old} ({names['old']}): {statistics.median(speeds['old']):.1f} img/s (median)")
    print(f"new {args.new} ({names['new']}): {statistics.median(speeds['new']):.1f} img/s (median)")
    print(f"new/old per round: {', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
