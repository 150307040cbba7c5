"""`results.csv`: a row per validation, as YOLOv5's, for a spreadsheet or pandas; made from metrics.jsonl's records.

Columns: `epoch`, `step`; the train losses (`train/box_loss`, `train/obj_loss`, `train/cls_loss`, `train/loss`), the
mean over the images trained since the previous row; `metrics/precision`, `metrics/recall`, `metrics/mAP_0.5`,
`metrics/mAP_0.5:0.95`, `fitness`; the guard's counters so far (`skipped_steps`, `rollbacks`); and the learning rate
of each parameter group at the last train record (`lr/<group>`). yolotr's validation computes no loss, so there are no
val loss columns.

metrics.jsonl is the source of truth: at every start (rank 0) the file is remade from its records, then rows are
appended as validations come. A resume thus keeps exactly the rows of the records it keeps (the records after its
checkpoint are superseded first, track/metrics.py), and no step appears twice. A validation at the step of the
previous one (the end-of-run validation right after the last epoch's) validated the same weights: one row.
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
        self.columns: list[str] | None = None  # fixed by the first row: the learning-rate groups do not change
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
        if self.columns is None:
            self.columns = list(row)
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
    """Rank 0's results.csv: remade from `records` (metrics.jsonl as it stands at the start), then appended to."""

    def __init__(self, path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
        self.path = Path(path)
        self.table = ResultsTable()
        rows = [row for row in map(self.table.add, records) if row is not None]
        partial = self.path.with_name(self.path.name + ".partial")
        with open(partial, "w", newline="", encoding="utf-8") as file:  # atomically: a reader never sees half of it
            if rows:
                self._writer(file).writeheader()
                self._writer(file).writerows(map(_formatted, rows))
        os.replace(partial, self.path)
        self._file = open(self.path, "a", newline="", encoding="utf-8", buffering=1)

    def log_record(self, record: Mapping[str, Any]) -> None:
        row = self.table.add(record)
        if row is None:
            return
        if self._file.tell() == 0:
            self._writer(self._file).writeheader()
        self._writer(self._file).writerow(_formatted(row))
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def _writer(self, file) -> csv.DictWriter:
        return csv.DictWriter(file, fieldnames=self.table.columns, restval="", extrasaction="ignore")


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
