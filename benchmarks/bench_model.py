"""Cost of the Transformer block: plain YOLOv5 layouts against yolotr's transformer variants, on CPU.

Prints a markdown table: parameters, GFLOPs at 640, and the median time of one training step (forward + loss +
backward) for a batch of 8 at 320x320 with 2 threads, for the n and s scales, each plain (C3) and with C3TR, plus
the transformer/plain time ratio per scale (target: <= 1.10). The four models are timed interleaved, round by
round, with the order reversed every other round, so that load from other processes on the machine hits them
alike; the ratio is the median over rounds of the back-to-back pair (plain, transformer) of the same round, which
cancels load that drifts slower than a pair.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_model.py [--rounds 7]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch's OpenMP starts: set before importing it

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from yolotr.model.info import model_summary  # noqa: E402
from yolotr.model.loss import ComputeLoss  # noqa: E402
from yolotr.model.yolo import DetectionModel  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "models"
# (scale, plain config, transformer config)
PAIRS = [("n", "yolov5n", "yolotr-n"), ("s", "yolov5s", "yolotr-s")]


def synthetic_targets(batch: int, boxes_per_image: int, generator: torch.Generator) -> torch.Tensor:
    """(N, 6) [image, class, cx, cy, w, h] with boxes of 5-50% of the image, so every level gets matches."""
    n = batch * boxes_per_image
    image = torch.arange(batch).repeat_interleave(boxes_per_image).float()
    cls = torch.randint(0, 80, (n,), generator=generator).float()
    wh = 0.05 + 0.45 * torch.rand(n, 2, generator=generator)
    centre = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=generator)
    return torch.cat((image[:, None], cls[:, None], centre, wh), dim=1)


class TrainStep:
    """One model with its loss and a fixed batch; `__call__` times forward + loss + backward."""

    def __init__(self, name: str, batch: int, imgsz: int, seed: int) -> None:
        torch.manual_seed(seed)
        self.name = name
        self.model = DetectionModel(CONFIGS / f"{name}.yaml").train()
        self.loss = ComputeLoss(self.model, imgsz=imgsz)
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(batch, 3, imgsz, imgsz, generator=generator)
        self.targets = synthetic_targets(batch, 4, generator)
        self.times: list[float] = []

    def __call__(self) -> float:
        start = time.perf_counter()
        total, _ = self.loss(self.model(self.images), self.targets)
        total.backward()
        elapsed = time.perf_counter() - start
        self.model.zero_grad(set_to_none=True)
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed steps per model (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    steps = {name: TrainStep(name, args.batch, args.imgsz, seed=0) for _, *names in PAIRS for name in names}
    summaries = {name: model_summary(step.model, 640) for name, step in steps.items()}
    for step in steps.values():  # warm-up: allocator, OpenMP pool, first-call dispatch
        step()
    # Order n-plain, n-transformer, s-plain, s-transformer, then reversed: each pair stays back to back.
    order = list(steps.values())
    for round_index in range(args.rounds):
        for step in order if round_index % 2 == 0 else reversed(order):
            step.times.append(step())
    paired_ratio = {
        transformer: statistics.median(t / p for p, t in zip(steps[plain].times, steps[transformer].times, strict=True))
        for _, plain, transformer in PAIRS
    }

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY')}, batch {args.batch} at {args.imgsz}x{args.imgsz}, "
        f"median of {args.rounds} interleaved steps\n"
    )
    print("| model | params | GFLOPs@640 | fwd+loss+bwd s/step (median) | min | transformer / plain (paired) |")
    print("|---|---:|---:|---:|---:|---:|")
    for _, plain, transformer in PAIRS:
        for name in (plain, transformer):
            median = statistics.median(steps[name].times)
            ratio = f"{paired_ratio[name]:.3f}" if name == transformer else ""
            print(
                f"| {name} | {summaries[name]['params']:,} | {summaries[name]['gflops']:.1f} | {median:.3f} "
                f"| {min(steps[name].times):.3f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
