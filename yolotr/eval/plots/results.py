"""`results.png`: losses, mAP, P/R, learning rates, throughput and grad norm of a run, from metrics.jsonl.

Skipped steps (red crosses on the grad-norm panel) and rollbacks (dashed lines on the loss and grad-norm
panels) are marked where they happened, because they are what a user of this trainer looks for first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from yolotr.track.metrics import read_metrics

SKIP_COLOR, ROLLBACK_COLOR = "tab:red", "tab:purple"


def plot_results(metrics_path: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Draw `out_png` from the records of `metrics_path` (a metrics.jsonl)."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("kind") == "train" and "step" in r]
    val = [r for r in records if r.get("kind") == "val" and "step" in r]
    skips = _event_steps(records, train, event="skip", counter="skipped_steps")
    rollbacks = _event_steps(records, train, event="rollback", counter="rollbacks")

    figure = Figure(figsize=(20, 8), layout="constrained")
    axes = figure.subplots(2, 5).ravel()
    for ax, key in zip(axes[:4], ("box", "obj", "cls", "loss")):
        _line(ax, train, key)
        ax.set_title(f"train/{key}")
    for step in rollbacks:
        axes[3].axvline(step, color=ROLLBACK_COLOR, linestyle="--", linewidth=1)
    _line(axes[4], train, "images_per_s")
    axes[4].set_title("images/s")
    _line(axes[5], val, "map50", marker=".")
    axes[5].set_title("metrics/mAP50")
    _line(axes[6], val, "map", marker=".")
    axes[6].set_title("metrics/mAP50-95")
    _line(axes[7], val, "precision", label="precision", marker=".")
    _line(axes[7], val, "recall", label="recall", marker=".")
    axes[7].set_title("metrics/precision, recall")
    _lr_lines(axes[8], train)
    axes[8].set_title("learning rate")
    _grad_norm(axes[9], train, skips, rollbacks)
    for ax in axes:
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=100)
    return out_png


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _line(ax, records: list[dict], key: str, label: str | None = None, marker: str | None = None) -> None:
    points = [(r["step"], r[key]) for r in records if _finite(r.get(key))]
    if points:
        steps, values = zip(*points)
        ax.plot(steps, values, label=label, marker=marker, linewidth=1.5)


def _lr_lines(ax, train: list[dict]) -> None:
    """`lr` is one number, a list (one per parameter group, named by `lr_groups` if present) or a dict."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in train:
        lr = record.get("lr")
        names = record.get("lr_groups")
        if isinstance(lr, list) and isinstance(names, list) and len(names) == len(lr):
            lr = dict(zip(map(str, names), lr))
        groups = lr.items() if isinstance(lr, dict) else enumerate(lr) if isinstance(lr, list) else [("lr", lr)]
        for name, value in groups:
            if _finite(value):
                series.setdefault(f"pg{name}" if isinstance(name, int) else str(name), []).append((record["step"], value))
    for name, points in series.items():
        steps, values = zip(*points)
        ax.plot(steps, values, label=name, linewidth=1.5)


def _grad_norm(ax, train: list[dict], skips: list[int], rollbacks: list[int]) -> None:
    points = [(r["step"], r["grad_norm"]) for r in train if _finite(r.get("grad_norm")) and r["grad_norm"] > 0]
    if points:
        steps, values = zip(*points)
        ax.plot(steps, values, linewidth=1.5, label="grad norm")
        ax.set_yscale("log")
    if skips:
        # Skipped steps often have a non-finite norm: mark them at the top of the panel.
        top = max((v for _, v in points), default=1.0)
        ax.scatter(skips, [top] * len(skips), marker="x", color=SKIP_COLOR, label=f"skipped ({len(skips)})", zorder=3)
    for index, step in enumerate(rollbacks):
        ax.axvline(step, color=ROLLBACK_COLOR, linestyle="--", linewidth=1, label="rollback" if index == 0 else None)
    ax.set_title("grad norm")


def _event_steps(records: list[dict], train: list[dict], *, event: str, counter: str) -> list[int]:
    """Steps of `event` events; without events, the steps at which the train records' counter grew."""
    steps = [r["step"] for r in records if r.get("kind") == "event" and r.get("event") == event and "step" in r]
    if steps:
        return steps
    return list(_counter_increases(train, counter))


def _counter_increases(train: Iterable[dict], counter: str) -> Iterable[int]:
    previous = 0
    for record in train:
        value = record.get(counter)
        if _finite(value):
            if value > previous:
                yield record["step"]
            previous = value
