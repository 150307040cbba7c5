"""The validation stream: letterboxed, no augmentation, every val image exactly once across all ranks.

Rank r of W reads the contiguous chunk [N·r/W, N·(r+1)/W) of the val index, in index order (sequential reads).
Chunks differ by at most one image, so ranks may have different batch counts; nothing is padded or repeated, so no
image is counted twice. The trainer gathers the predictions of all ranks once, at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

from yolotr.data.batch import ValBatch
from yolotr.data.error_budget import ErrorBudget
from yolotr.data.index import SplitIndex
from yolotr.data.producers import ValBatches, ValPlan, iterate_loader


class ValStream:
    def __init__(self, split: SplitIndex, *, rank: int, world_size: int, batch_size: int, imgsz: int,
                 num_workers: int = 0, pin_memory: bool = False) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if batch_size < 1:
            raise ValueError(f"val batch size must be >= 1, got {batch_size}")
        total = split.num_samples
        self.split = split
        self.plan = ValPlan(split=split, first_id=total * rank // world_size, stop_id=total * (rank + 1) // world_size,
                            batch_size=batch_size, imgsz=imgsz)
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        # Corrupt val images are skipped and counted, never a reason to stop: the val set is what it is.
        self._errors = ErrorBudget(max_error_fraction=None, min_seen=0)
        self.skipped_image_ids: list[int] = []

    def __len__(self) -> int:
        """Batches on this rank."""
        return self.plan.num_batches

    @property
    def image_ids(self) -> range:
        """The val index positions (COCO image ids) this rank covers."""
        return range(self.plan.first_id, self.plan.stop_id)

    def __iter__(self) -> Iterator[ValBatch]:
        self.skipped_image_ids = []
        key_to_id = None
        for batch, report in iterate_loader(ValBatches(self.plan), num_workers=self.num_workers,
                                            pin_memory=self.pin_memory):
            self._errors.count(report)
            if report.errors:
                if key_to_id is None:
                    key_to_id = {self.split.keys[i]: i for i in self.image_ids}
                self.skipped_image_ids += [key_to_id[key] for key, _, _ in report.errors]
            yield batch

    def counters(self) -> dict:
        return {"errors": dict(self._errors.by_reason), "errors_total": self._errors.total,
                "samples_seen": self._errors.samples_seen, "skipped_image_ids": list(self.skipped_image_ids)}

    @property
    def error_log(self) -> list[tuple[str, str]]:
        return list(self._errors.log)
