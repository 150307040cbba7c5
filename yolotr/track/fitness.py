"""YOLOv5's checkpoint-selection score, for the best weights and the run summary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def fitness(result: Any) -> float:
    """YOLOv5's checkpoint-selection score: 0.1·mAP50 + 0.9·mAP50-95.

    `result` is an `EvalResult` or a mapping with `map50` and `map` (a `val` record of metrics.jsonl).
    """
    if isinstance(result, Mapping):
        map50, map5095 = result["map50"], result["map"]
    else:
        map50, map5095 = result.map50, result.map
    return 0.1 * float(map50) + 0.9 * float(map5095)
