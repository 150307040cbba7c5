"""A metrics.jsonl record as named numbers: the keys W&B and TensorBoard both chart, so a chart has one name in both.

`{"kind": "train", "step": 10, "loss": 0.2, "lr": [0.01, 0.002], "lr_groups": ["conv", "transformer"]}` gives
`{"train/loss": 0.2, "train/lr/conv": 0.01, "train/lr/transformer": 0.002}`: `<kind>/<field>`, nested dicts and lists
as `/<key>` and `/<index>`, the learning rates by parameter-group name when the record names its groups. Only finite
numbers: W&B and TensorBoard chart a NaN poorly, and metrics.jsonl keeps it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

NOT_CHARTED = ("kind", "time", "step", "lr_groups")


def record_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    fields = {key: value for key, value in record.items() if key not in NOT_CHARTED}
    groups = record.get("lr_groups")
    if isinstance(fields.get("lr"), list) and isinstance(groups, list) and len(groups) == len(fields["lr"]):
        fields["lr"] = dict(zip(map(str, groups), fields["lr"]))  # train/lr/<group name>
    return dict(_flatten(str(record.get("kind")), fields))


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, float]]:
    """(key, number) pairs: dicts and lists become `prefix/key` and `prefix/<index>` entries."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(f"{prefix}/{key}", item)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _flatten(f"{prefix}/{index}", item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        yield prefix, value
