"""Bad data: data yamls, shards, a corrupt sample met in training, and a YOLO folder with damaged images and labels,
converted by `yolotr data shard`."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from yolotr.data.spec import load_data_yaml

from tests.cli.bad_inputs.common import (
    NO_RUN,
    STARTED,
    BadInput,
    Prepared,
    World,
    copy_yolo,
    flip_bytes,
    refused_train,
    report_of,
    started_train,
    train,
)



def _data_yaml(text: str) -> Callable[[World, Path], Prepared]:
    def prepare(world: World, here: Path) -> Prepared:
        path = here / "data.yaml"
        path.write_text(text.format(root=world.synth.parent))
        return started_train(world, here, data=str(path))

    return prepare


def _damaged_shards(world: World, here: Path, damage: Callable[[Path], None]) -> Path:
    root = here / "shards"
    shutil.copytree(world.synth.parent, root)
    damage(next((root / "train").glob("*.tar")))
    return root


def _flipped_shard(world: World, here: Path) -> Prepared:
    root = _damaged_shards(world, here, lambda tar: flip_bytes(tar, at=3000, count=64))
    return Prepared(["data", "check", str(root)])


def _truncated_shard(world: World, here: Path) -> Prepared:
    root = _damaged_shards(world, here, lambda tar: tar.write_bytes(tar.read_bytes()[:5000]))
    return Prepared(["data", "check", str(root)])


def _index_not_json(world: World, here: Path) -> Prepared:
    root = _damaged_shards(world, here, lambda tar: (tar.parent / "index.json").write_text("{not json"))
    return started_train(world, here, data=str(root / "data.yaml"))


def _batch_larger_than_converted_data(world: World, here: Path) -> Prepared:
    """A YOLO folder's size is only known once converted, at the start: the run folder then says why it stopped."""
    root = copy_yolo(world, here)
    return started_train(world, here, "train.batch_size=100000", data=str(root / "data.yaml"))


def _corrupt_sample_in_training(world: World, here: Path) -> Prepared:
    root = here / "shards"
    shutil.copytree(world.synth.parent, root)
    split = load_data_yaml(root / "data.yaml").train
    key = split.keys[1]
    shard = split.shard_path(int(split.shard_of[1]))
    with tarfile.open(shard) as tar:
        member = tar.getmember(f"{key}.jpg")
    with open(shard, "r+b") as fh:  # same size: the index stays valid, the image does not
        fh.seek(member.offset_data)
        fh.write(b"not a jpeg".ljust(member.size, b" "))

    def check(output: str) -> None:
        records = [json.loads(line) for line in (here / "run" / "metrics.jsonl").read_text().splitlines()]
        assert f"skipped corrupt sample {key}: invalid_image" in output
        events = [r for r in records if r.get("event") == "data_error"]
        assert [(e["key"], e["reason"]) for e in events] == [(key, "invalid_image")], events
        assert [r["data_errors"] for r in records if r["kind"] == "train"][-1] == 1  # counted once, in the records

    prepared = train(world, here, "train.max_data_error_fraction=0.5", data=str(root / "data.yaml"))
    prepared.check = check
    return prepared


DATA = [
    BadInput("missing-split", "data", "a data.yaml whose `val` folder does not exist",
             _data_yaml("path: {root}\ntrain: train\nval: no-such-split\nnames: [circle, square, triangle, cross]\n"),
             2, ("{here}/data.yaml", "key 'val'", "no-such-split"), STARTED),
    BadInput("no-names", "data", "a data.yaml without `nc` and `names`",
             _data_yaml("path: {root}\ntrain: train\nval: val\n"), 2, ("{here}/data.yaml", "key 'names'"), STARTED),
    BadInput("names-count", "data", "a data.yaml whose `nc` differs from its names",
             _data_yaml("path: {root}\ntrain: train\nval: val\nnc: 5\nnames: [circle, square, triangle, cross]\n"),
             2, ("{here}/data.yaml", "key 'nc'", "4 names"), STARTED),
    BadInput("missing-data", "data", "`data=` naming no file",
             lambda world, here: refused_train(world, here, "data=no-such-data.yaml"),
             2, ("config key 'data'", "no-such-data.yaml"), NO_RUN),
    BadInput("index-not-json", "data", "a shard index.json that is not json", _index_not_json,
             2, ("index.json", "{here}/shards"), STARTED),
    BadInput("batch-larger-than-yolo-data", "data", "a batch larger than a YOLO folder's train split, known once "
             "converted", _batch_larger_than_converted_data, 2,
             ("config key 'train.batch_size'", "100000 is more than the 16 images of the train split"), STARTED),
    BadInput("shard-flipped-bytes", "data", "a shard tar with 64 flipped bytes (`yolotr data check`)",
             _flipped_shard, 1, ("shard shard-000000.tar: sha256 differs from the index", "corrupt train_000000")),
    BadInput("shard-truncated", "data", "a shard tar cut short (`yolotr data check`)", _truncated_shard,
             1, ("truncated_shard", "{here}/shards/train/shard-000000.tar ends at byte 5000")),
    BadInput("corrupt-sample-in-training", "data", "a shard sample whose image bytes are not a JPEG, met in training",
             _corrupt_sample_in_training, 0, ("skipped corrupt sample",),
             "the run trains on; the skip counted in metrics.jsonl"),
]



def _yolo_damage(damage: Callable[[Path], str | None], *, reason: str | None, count: int = 1,
                 counted: dict[str, int] | None = None):
    """Damages one image/label of the YOLO copy, converts it, and checks that the report excludes `count` samples
    for `reason` (naming the damaged file), and holds the `counted` totals."""

    def prepare(world: World, here: Path) -> Prepared:
        root = copy_yolo(world, here)
        named = damage(root)
        out = here / "shards"

        def check(output: str) -> None:
            if reason is None and not counted:
                return
            report = report_of(out)
            for key, value in (counted or {}).items():
                assert report[key] == value, report
            if reason is None:
                return
            excluded = [e for e in report["excluded"] if e["reason"] == reason]
            assert len(excluded) == count, report
            if named:
                assert any(named in e["source"] for e in excluded), report

        return Prepared(["data", "shard", "--format", "yolo", "--src", str(root / "data.yaml"), "--out", str(out)],
                        check=check)

    return prepare


def _first(root: Path, kind: str, split: str = "train") -> Path:
    return sorted((root / kind / split).iterdir())[0]


def _label_rows(rows: str) -> Callable[[Path], str]:
    def damage(root: Path) -> str:
        label = _first(root, "labels")
        label.write_text(rows)
        return label.stem

    return damage


def _image_bytes(make: Callable[[bytes], bytes]) -> Callable[[Path], str]:
    def damage(root: Path) -> str:
        image = _first(root, "images")
        image.write_bytes(make(image.read_bytes()))
        return image.name

    return damage


def _orphan_label(root: Path) -> str:
    image = _first(root, "images")
    image.unlink()
    return image.stem


def _empty_split(root: Path) -> None:
    for image in (root / "images" / "val").iterdir():
        image.unlink()


YOLO = [
    BadInput("label-bad-class", "data", "a label row with class 9 in a 4-class set", _yolo_damage(
        _label_rows("9 0.5 0.5 0.2 0.2\n"), reason="class_out_of_range"), 0, ("class_out_of_range",),
        "the other images; the skip in report.json"),
    BadInput("label-four-columns", "data", "a label row with 4 columns",
             _yolo_damage(_label_rows("0 0.5 0.5 0.2\n"), reason="malformed_label_row"), 0, ("malformed_label_row",),
             "the other images; the skip in report.json"),
    BadInput("label-out-of-range", "data", "a box beyond the image (`cx 1.7`)",
             _yolo_damage(_label_rows("0 1.7 0.5 0.2 0.2\n"), reason=None,
                          counted={"boxes_dropped_outside_image": 1}), 0, ("1 dropped (entirely outside their image)",),
             "the image; the box dropped and counted (one partly outside is clipped, and counted)"),
    BadInput("label-nan", "data", "a label row with `nan`",
             _yolo_damage(_label_rows("0 nan 0.5 0.2 0.2\n"), reason="nonfinite_box"), 0, ("nonfinite_box",),
             "the other images; the skip in report.json"),
    BadInput("label-empty", "data", "an empty label file",
             _yolo_damage(_label_rows(""), reason=None, counted={"background_images": 1}), 0,
             ("background images (no boxes: an empty or missing label file): 1",), "the image, as a background image"),
    BadInput("image-is-text", "data", "an image that is a text file", _yolo_damage(
        _image_bytes(lambda data: b"just some text\n"), reason="unsupported_image_format"), 0,
        ("unsupported_image_format",),
        "the other images; the skip in report.json"),
    BadInput("image-truncated", "data", "a JPEG cut in half", _yolo_damage(
        _image_bytes(lambda data: data[: len(data) // 2]), reason="invalid_image"), 0, ("invalid_image",),
        "the other images; the skip in report.json"),
    BadInput("image-zero-bytes", "data", "a zero-byte image", _yolo_damage(
        _image_bytes(lambda data: b""), reason="invalid_image"), 0, ("invalid_image: the file is empty (0 bytes)",),
        "the other images; the skip in report.json"),
    BadInput("label-without-image", "data", "a label file whose image is gone",
             _yolo_damage(_orphan_label, reason="label_without_image"), 0, ("label_without_image",),
             "the other images; the orphan listed in report.json"),
    BadInput("empty-split", "data", "a YOLO split folder with no images", _yolo_damage(_empty_split, reason=None),
             2, ("key 'val'", "no images found")),
]
