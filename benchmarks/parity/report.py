"""The parity table: per model, each trainer (and each yolotr variant) per seed, then mean ± spread over seeds.

Spread is the sample standard deviation over the seeds (n − 1), and the [min, max] range is given beside it. The
"vs yolov5" line says whether a variant's mean mAP50-95 is at least yolov5's mean or within yolov5's own seed spread
(mean − 1 std), the issue's target.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path


def load_runs(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("runs/*/*/result.json"))]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(values: list[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def _metric(run: dict, evaluator: str, key: str) -> float | None:
    if evaluator == "own":
        return run[key]
    scored = run.get(evaluator)
    return None if scored is None else scored[key]


def format_report(runs: list[dict]) -> str:
    by_model: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_model[run["model"]][run["trainer"]].append(run)
    lines = []
    for model, trainers in by_model.items():
        settings = next(iter(trainers.values()))[0].get("settings", {})
        lines += [f"### {model} ({', '.join(f'{k} {v}' for k, v in settings.items())})", "",
                  "| trainer | seed | img/s | mAP50 | mAP50-95 | mAP50-95 pycocotools | mAP50-95 yolov5 eval |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        order = sorted(trainers, key=lambda t: (t != "yolov5", t))
        for trainer in order:
            for run in sorted(trainers[trainer], key=lambda r: r["seed"]):
                cross = [_metric(run, e, "map") for e in ("pycocotools", "yolov5_eval")]
                lines.append(f"| {trainer} | {run['seed']} | {run['images_per_s']:.1f} | {run['map50']:.3f} | "
                             f"{run['map']:.3f} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cross)
                             + " |")
        lines += ["", "| trainer | seeds | img/s | mAP50 | mAP50-95 (own evaluator) | mAP50-95 pycocotools | "
                      "mAP50-95 yolov5 eval |", "|---|---:|---:|---:|---:|---:|---:|"]
        for trainer in order:
            group = trainers[trainer]
            cells = [_cell([r["images_per_s"] for r in group], 1), _cell([r["map50"] for r in group]),
                     _cell([r["map"] for r in group])]
            for evaluator in ("pycocotools", "yolov5_eval"):
                values = [_metric(r, evaluator, "map") for r in group]
                cells.append("-" if None in values else _cell(values))
            lines.append(f"| {trainer} | {len(group)} | " + " | ".join(cells) + " |")
        lines += ["", *_verdicts(trainers), ""]
    return "\n".join(lines)


def _verdicts(trainers: dict[str, list[dict]]) -> list[str]:
    """Each yolotr variant against yolov5, on the common evaluator (pycocotools) and on each trainer's own."""
    base = trainers.get("yolov5")
    if not base:
        return []
    out = []
    for trainer, group in sorted(trainers.items()):
        if trainer == "yolov5":
            continue
        speed = statistics.fmean(r["images_per_s"] for r in group) / statistics.fmean(r["images_per_s"] for r in base)
        parts = [f"img/s ×{speed:.2f}"]
        for evaluator, label in (("pycocotools", "pycocotools"), ("own", "own evaluators")):
            mine = [_metric(r, evaluator, "map") for r in group]
            theirs = [_metric(r, evaluator, "map") for r in base]
            if None in mine or None in theirs:
                continue
            (m, _), (t, s) = mean_std(mine), mean_std(theirs)
            verdict = "≥ yolov5" if m >= t else ("within yolov5's spread" if m >= t - s else "BELOW yolov5's spread")
            parts.append(f"mAP50-95 ({label}) {m:.3f} vs {t:.3f} ± {s:.3f}: {verdict}")
        out.append(f"- **{trainer}** vs yolov5: " + "; ".join(parts))
    return out
