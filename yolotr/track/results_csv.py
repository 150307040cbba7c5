"""`results.csv`: a row per validation, as YOLOv5's, for a spreadsheet or pandas; made from metrics.jsonl's records.

Columns: `epoch`, `step`; the train losses (`train/box_loss`, `train/obj_loss`, `train/cls_loss`, `train/loss`), the
image-weighted mean of the train records written since the previous row (empty when there were none: an epoch
shorter than train.log_every); `metrics/precision`, `metrics/recall`, `metrics/mAP_0.5`,
`metrics/mAP_0.5:0.95`, `fitness`; the guard's counters so far (`skipped_steps`, `rollbacks`); and the learning rate
of each parameter group at the last train record (`lr/<group>`). yolotr's validation computes no loss, so there are no
val loss columns.

metrics.jsonl is the source of truth: at every start (rank 0) the rows are remade from its records, and the file is
rewritten, whole and atomically, at each validation (a row per epoch: a small file). A resume thus keeps exactly the
rows of the records it keeps (the records after its checkpoint are superseded first, track/metrics.py), no step
appears twice, and a column first seen in a later row (the learning rates, when the first validation came before
the first train record) is added to the header. A validation at the step of the previous one (the end-of-run
validation right after the last epoch's) validated the same weights: one row.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LOSSES = (("train/box_loss", "box"), ("train/obj_loss", "obj"), ("train/cls_loss", "cls"), ("train/loss", "loss"))
METRICS = (("metrics/precision", "precision"), ("metrics/recall", "recall"), ("metrics/mAP_0.5", "map50"),
           ("metrics/mAP_0.5:0.95", "map"), ("fitness", "fitness"))
COUNTERS = ("skipped_steps", "rollbacks")


class ResultsTable:
    """Turns records, in file order, into rows: train records are averaged until a val record closes a row."""

    def __init__(self) -> None:
        self._sums = {column: 0.0 for column, _ in LOSSES}
        self._images = {column: 0 for column, _ in LOSSES}
        self._last_train: Mapping[str, Any] = {}
        self._last_row_step: int | None = None

    def add(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """The row a val record completes, None for any other record (and for a repeated validation)."""
        if record.get("kind") == "train":
            self._add_train(record)
            return None
        if record.get("kind") != "val" or record.get("step") == self._last_row_step:
            return None
        row: dict[str, Any] = {"epoch": record.get("epoch"), "step": record.get("step")}
        for column, _ in LOSSES:
            row[column] = self._sums[column] / self._images[column] if self._images[column] else None
        row.update({column: record.get(field) for column, field in METRICS})
        row.update({counter: self._last_train.get(counter) for counter in COUNTERS})
        row.update(_learning_rates(self._last_train))
        self._sums = dict.fromkeys(self._sums, 0.0)
        self._images = dict.fromkeys(self._images, 0)
        self._last_row_step = record.get("step")
        return row

    def _add_train(self, record: Mapping[str, Any]) -> None:
        images = record.get("images") or 0  # a record's losses are means over its window's images
        for column, field in LOSSES:
            value = record.get(field)
            if _is_number(value) and images:
                self._sums[column] += value * images
                self._images[column] += images
        self._last_train = record


class ResultsCsv:
    """Rank 0's results.csv: the rows of `records` (metrics.jsonl as it stands at the start), then one per validation."""

    def __init__(self, path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
        self.path = Path(path)
        self.table = ResultsTable()
        self.rows = [row for row in map(self.table.add, records) if row is not None]
        self._write()

    def log_record(self, record: Mapping[str, Any]) -> None:
        row = self.table.add(record)
        if row is not None:
            self.rows.append(row)
            self._write()

    def close(self) -> None:
        pass  # every write is complete

    def _write(self) -> None:
        columns = list(dict.fromkeys(column for row in self.rows for column in row))  # first seen, first
        partial = self.path.with_name(self.path.name + ".partial")
        with open(partial, "w", newline="", encoding="utf-8") as file:  # a reader never sees half a file
            if self.rows:
                writer = csv.DictWriter(file, fieldnames=columns, restval="")
                writer.writeheader()
                writer.writerows(map(_formatted, self.rows))
        os.replace(partial, self.path)


def _learning_rates(train: Mapping[str, Any]) -> dict[str, Any]:
    rates, groups = train.get("lr") or [], train.get("lr_groups") or []
    names = groups if len(groups) == len(rates) else [str(index) for index in range(len(rates))]
    return {f"lr/{name}": rate for name, rate in zip(names, rates)}


def _formatted(row: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers as short, exact enough text (6 significant digits); an unknown value as an empty cell."""
    return {key: "" if value is None else format(value, ".6g") if isinstance(value, float) else value
            for key, value in row.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
