"""Converting a YOLO-txt or COCO dataset into shards: every split, data.yaml, and report.json listing every excluded
sample with its reason (`yolotr data shard`). Same input, same bytes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from yolotr.data.convert import Candidate, ConversionReport, Exclusion, write_split
from yolotr.data.convert_coco import read_coco_dataset
from yolotr.data.convert_yolo import read_yolo_dataset
from yolotr.data.errors import ConversionStorageError, DataSpecError
from yolotr.data.index import INDEX_FILE
from yolotr.data.spec import read_yaml_mapping, write_data_yaml

REPORT_FILE = "report.json"


@dataclass(frozen=True)
class SourceDataset:
    """A YOLO or COCO dataset as read, before any of its samples is validated."""

    names: list[str]
    splits: dict[str, list[Candidate]]
    notes: list[str]
    category_ids: list[int] | None
    orphan_labels: dict[str, list[Path]]
    files: list[Path]
    """The files that describe it (the data.yaml, the annotation jsons), besides images and label files."""


def read_source(fmt: str, src: Path, *, images_dir: Path | None = None) -> SourceDataset:
    if fmt == "yolo":
        yolo = read_yolo_dataset(src)
        return SourceDataset(yolo.names, yolo.splits, [], None, yolo.orphan_labels, [Path(src)])
    if fmt == "coco":
        coco = read_coco_dataset(src, images_dir=images_dir)
        return SourceDataset(coco.names, coco.splits, coco.notes, coco.category_ids, {}, coco.files)
    raise DataSpecError(f"--format: unknown format {fmt!r}")


def convert(fmt: str, src: Path, out: Path, *, samples_per_shard: int = 1000, shard_bytes: int | None = None,
            images_dir: Path | None = None, progress: bool = False) -> ConversionReport:
    """Converts a dataset; returns the report (also written to OUT/report.json). A progress bar per split when
    `progress`."""
    if samples_per_shard < 1:
        raise DataSpecError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    source = read_source(fmt, src, images_dir=images_dir)
    return write_dataset(source, out, samples_per_shard=samples_per_shard, shard_bytes=shard_bytes, progress=progress)


def write_dataset(source: SourceDataset, out: Path, *, samples_per_shard: int = 1000, shard_bytes: int | None = None,
                  progress: bool = False,
                  storage_hint: str = "free space there, or choose another --out") -> ConversionReport:
    """Writes every split of `source` as shards into `out`, with data.yaml and report.json; a progress bar per
    split on stderr when `progress`. A disk full or read-only raises ConversionStorageError (`storage_hint` says
    what to do) after removing what this conversion wrote: its splits' folders, and data.yaml and report.json
    unless they list splits of an earlier conversion, which are kept."""
    out = Path(out)
    names = source.names
    data_yaml = out / "data.yaml"
    earlier = _earlier_splits(data_yaml, names, converted=set(source.splits))  # refuses before anything is overwritten
    report = ConversionReport(notes=list(source.notes))
    for split, orphans in source.orphan_labels.items():
        report.excluded += [Exclusion(split=split, source=str(path), reason="label_without_image",
                                      detail=f"no image of split '{split}' has this label") for path in orphans]
    try:
        for split, candidates in source.splits.items():
            shown = tqdm(candidates, desc=f"shards: {split}", unit="img", disable=not progress, mininterval=1.0)
            write_split(shown, out, split=split, nc=len(names), names=names, report=report,
                        samples_per_shard=samples_per_shard, shard_bytes=shard_bytes)
        write_data_yaml(data_yaml, names=names, category_ids=source.category_ids,
                        splits={**earlier, **{s: f"{s}/{INDEX_FILE}" for s in source.splits}})
        missing = [s for s in ("train", "val") if s not in earlier and s not in source.splits]
        if missing:
            report.notes.append(f"{data_yaml} has no {' and no '.join(missing)} split yet: training needs both; "
                                "convert the other annotations into the same --out (the yaml then lists both)")
        report.write(out / REPORT_FILE)
    except OSError as error:
        _remove_partial(out, source, earlier)
        raise ConversionStorageError.from_os_error(error, out, hint=storage_hint) from None
    return report


def _remove_partial(out: Path, source: SourceDataset, earlier: dict[str, str]) -> None:
    """Best effort (the disk may still refuse): what a failed conversion wrote, so that none of it is read as valid."""
    for split in source.splits:
        shutil.rmtree(out / split, ignore_errors=True)
    report = out / REPORT_FILE
    report.unlink(missing_ok=True)
    data_yaml = out / "data.yaml"
    try:
        if earlier:  # an earlier conversion's splits stay usable; the failed ones are no longer listed
            write_data_yaml(data_yaml, names=source.names, splits=earlier, category_ids=source.category_ids)
        else:
            data_yaml.unlink(missing_ok=True)
    except OSError:
        data_yaml.unlink(missing_ok=True)


def _earlier_splits(data_yaml: Path, names: list[str], *, converted: set[str]) -> dict[str, str]:
    """Splits an earlier conversion into the same folder wrote (e.g. COCO's train json, then its val json), kept in
    data.yaml next to this conversion's; refused when that folder holds a dataset with other classes."""
    if not data_yaml.is_file():
        return {}
    doc = read_yaml_mapping(data_yaml, "data yaml", "names and splits")
    if list(doc.get("names") or []) != list(names):
        raise DataSpecError(f"{data_yaml}: this folder already holds a dataset with the classes {doc.get('names')}, "
                            f"not {list(names)}: choose another --out")
    return {split: doc[split] for split in ("train", "val", "test")
            if split not in converted and isinstance(doc.get(split), str)
            and (data_yaml.parent / doc[split]).is_file()}
