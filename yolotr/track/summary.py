"""The short table printed when a run ends, computed from its metrics.jsonl records."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from yolotr.track.fitness import fitness


def print_summary(records: list[dict[str, Any]]) -> str:
    """The end-of-run table to print: best mAP, steps, skipped, rollbacks, quarantined, time, images/s.

    Returned rather than printed, so that the caller decides where it goes (rank 0's stdout, a log file).
    """
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val" and "map" in r and "map50" in r]
    events = [r for r in records if r.get("kind") == "event"]

    rows: list[tuple[str, str]] = []
    if val:
        best = max(val, key=fitness)
        where = ", ".join(f"{key} {best[key]}" for key in ("epoch", "step") if key in best)
        rows.append(("best mAP50-95", f"{best['map']:.4f}  (mAP50 {best['map50']:.4f}{', ' + where if where else ''})"))
        rows.append(("last mAP50-95", f"{val[-1]['map']:.4f}  (mAP50 {val[-1]['map50']:.4f})"))
    else:
        rows.append(("best mAP50-95", "no validation"))
    steps = _max_field(train + [e for e in events if e.get("event") == "stop"], "step")
    epochs = _max_field(train + val, "epoch")
    epoch_note = f"  (last epoch {epochs})" if epochs is not None else ""
    rows.append(("steps", f"{steps if steps is not None else 0}{epoch_note}"))
    # Counters are cumulative fields of train records; events cover runs that only log the event.
    rows.append(("skipped steps", str(_count(train, events, field="skipped_steps", event="skip"))))
    rows.append(("rollbacks", str(_count(train, events, field="rollbacks", event="rollback"))))
    rows.append(("quarantined", str(_count(train, events, field="quarantined", event="quarantine"))))
    rows.append(("time", _format_duration(_training_time(records))))
    speeds = [r["images_per_s"] for r in train if _is_finite(r.get("images_per_s"))]
    rows.append(("images/s", f"{sum(speeds) / len(speeds):.1f}" if speeds else "-"))
    waits = [r["data_wait"] for r in train if _is_finite(r.get("data_wait"))]  # absent before 0.2's records
    if waits:
        rows.append(("data wait", f"{100 * sum(waits) / len(waits):.0f} % of the time (mean of the train records)"))

    width = max(len(label) for label, _ in rows)
    return "\n".join(["run summary"] + [f"  {label:<{width}}  {value}" for label, value in rows])


def steady_images_per_s(records: list[dict[str, Any]], *, after_step: int) -> tuple[float, int]:
    """(images/s, steps) of the `train` records after `after_step`: the images they count over the wall time from
    the last record at or before `after_step` to the last one. Start-up, compilation and warm-up stay out, which the
    per-record mean of the summary does not leave out. Raises ValueError when no record lies on either side."""
    train = [r for r in records if r.get("kind") == "train"]
    before = [r for r in train if r["step"] <= after_step]
    steady = [r for r in train if r["step"] > after_step]
    if not before or not steady:
        raise ValueError(f"no train record on both sides of step {after_step} ({len(train)} records)")
    span = steady[-1]["time"] - before[-1]["time"]
    return sum(r["images"] for r in steady) / span, steady[-1]["step"] - before[-1]["step"]


def _training_time(records: list[dict[str, Any]]) -> float:
    """The time the run trained: each process's segment (from its `start` event to its last record) added up, so
    that the time between a crash and the resume does not count."""
    segments: list[list[float]] = [[]]
    opening = False  # a process opens the file with these events, in this order: a new segment
    for record in records:
        opener = record.get("kind") == "event" and record.get("event") in ("checkpoint_fallback", "resume", "start")
        if opener and not opening and segments[-1]:
            segments.append([])
        opening = opener
        if isinstance(record.get("time"), (int, float)):
            segments[-1].append(record["time"])
    return sum(max(times) - min(times) for times in segments if times)


def _max_field(records: Iterable[dict[str, Any]], field: str) -> Any:
    values = [r[field] for r in records if _is_finite(r.get(field))]
    return max(values) if values else None


def _count(train: list[dict], events: list[dict], *, field: str, event: str) -> int:
    cumulative = _max_field(train, field) or 0
    return int(max(cumulative, sum(1 for r in events if r.get("event") == event)))


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"
