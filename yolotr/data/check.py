"""Verifies a split's shards against its index: files, sizes, hashes, sample counts and offsets, and that every
sample decodes and has a valid label; counts boxes per class."""

from __future__ import annotations

import tarfile
from collections import Counter
from dataclasses import dataclass, field

from yolotr.data.decode import decode_sample
from yolotr.data.errors import RemoteDataError, SampleError
from yolotr.data.index import SplitIndex, scan_shard
from yolotr.data.shard_reader import ShardReader


@dataclass
class SplitCheck:
    shards: int
    samples_indexed: int
    samples_ok: int = 0
    images_without_boxes: int = 0
    boxes_per_class: Counter[int] = field(default_factory=Counter)
    shard_problems: list[tuple[str, str]] = field(default_factory=list)  # (file, problem)
    corrupt: list[tuple[str, str, str]] = field(default_factory=list)  # (key, reason, detail)

    @property
    def ok(self) -> bool:
        return not self.shard_problems and not self.corrupt

    def to_json(self, names: list[str]) -> dict:
        return {
            "ok": self.ok, "shards": self.shards, "samples_indexed": self.samples_indexed,
            "samples_ok": self.samples_ok, "corrupt_samples": len(self.corrupt),
            "images_without_boxes": self.images_without_boxes,
            "boxes_per_class": {_name(names, c): n for c, n in sorted(self.boxes_per_class.items())},
            "shard_problems": [{"file": f, "problem": p} for f, p in self.shard_problems],
            "corrupt": [{"key": k, "reason": r, "detail": d} for k, r, d in self.corrupt],
        }


def check_split(split: SplitIndex) -> SplitCheck:
    result = SplitCheck(shards=len(split.shards), samples_indexed=split.num_samples)
    for number, entry in enumerate(split.shards):
        problem = _shard_problem(split, number)
        if problem:
            result.shard_problems.append((entry.file, problem))
    reader = ShardReader(split)
    try:
        for global_id, key in enumerate(split.keys):
            try:
                sample = decode_sample(key, reader.read(global_id), nc=split.nc)
            except SampleError as err:
                result.corrupt.append((key, err.reason, err.detail))
                continue
            result.samples_ok += 1
            result.boxes_per_class.update(sample.label.classes.tolist())
            result.images_without_boxes += len(sample.label.classes) == 0
    finally:
        reader.close()
    return result


def _shard_problem(split: SplitIndex, number: int) -> str:
    entry = split.shards[number]
    try:
        path = split.shard_path(number)  # a remote shard: downloaded into the cache, verified on arrival
    except RemoteDataError as err:
        return str(err)
    if not path.is_file():
        return "file missing"
    try:
        actual = scan_shard(path, file=entry.file)
    except (OSError, tarfile.TarError) as err:
        return f"not a readable tar ({err}); samples past the damage are lost"
    problems = []
    if actual.bytes != entry.bytes:
        problems.append(f"{actual.bytes} bytes, the index says {entry.bytes}")
    if actual.sha256 != entry.sha256:
        problems.append("sha256 differs from the index")
    if actual.keys != entry.keys:
        problems.append(f"{actual.samples} samples, the index lists {entry.samples}" if actual.samples != entry.samples
                        else "sample keys differ from the index")
    elif actual.offsets != entry.offsets or actual.sizes != entry.sizes:
        problems.append("sample offsets differ from the index")
    return "; ".join(problems)


def _name(names: list[str], cls: int) -> str:
    return names[cls] if 0 <= cls < len(names) else str(cls)
