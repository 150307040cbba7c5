"""ValStream gives every val image exactly once across ranks, letterboxed; its boxes map back to the COCO ground
truth, which pycocotools scores as perfect."""

from __future__ import annotations

import contextlib
import io
from collections import Counter

import numpy as np
import pytest

from yolotr.data.coco_gt import coco_ground_truth
from yolotr.data.stream import ValStream

IMGSZ = 64


@pytest.mark.parametrize("world_size, batch_size, num_workers", [(1, 8, 0), (3, 4, 2), (4, 5, 1), (7, 8, 0)])
def test_every_val_image_once_across_ranks(split_100, world_size, batch_size, num_workers):
    ids, batch_counts = Counter(), []
    for rank in range(world_size):
        stream = ValStream(split_100, rank=rank, world_size=world_size, batch_size=batch_size, imgsz=IMGSZ,
                           num_workers=num_workers)
        batches = list(stream)
        batch_counts.append(len(batches))
        assert len(batches) == len(stream)
        for batch in batches:
            ids.update(batch.image_ids)
            assert batch.keys == [split_100.keys[i] for i in batch.image_ids]

    assert ids == Counter(range(100))


def test_val_batches_carry_letterbox_geometry_and_original_sizes(split_100):
    batch = next(iter(ValStream(split_100, rank=0, world_size=1, batch_size=4, imgsz=IMGSZ)))

    assert batch.images.shape == (4, 3, IMGSZ, IMGSZ)
    for (height, width), (ratio, _) in zip(batch.orig_sizes, batch.ratio_pad):
        assert ratio == pytest.approx(IMGSZ / max(height, width))


def test_val_targets_mapped_back_score_perfectly_against_the_coco_ground_truth(split_100):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = coco_ground_truth(split_100, ["c0", "c1", "c2"])
    detections = []
    for batch in ValStream(split_100, rank=0, world_size=1, batch_size=16, imgsz=IMGSZ):
        for row in batch.targets.numpy():
            i = int(row[0])
            ratio, (pad_w, pad_h) = batch.ratio_pad[i]
            cx, cy, w, h = row[2:6] * IMGSZ
            x1, y1 = (cx - w / 2 - pad_w) / ratio, (cy - h / 2 - pad_h) / ratio
            detections.append({"image_id": batch.image_ids[i], "category_id": int(row[1]),
                               "bbox": [x1, y1, w / ratio, h / ratio], "score": 1.0})

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(detections), "bbox")
        evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()

    assert len(gt["images"]) == 100 and {c["id"] for c in gt["categories"]} == {0, 1, 2}
    assert evaluation.stats[1] > 0.99  # mAP@0.5


def test_coco_ground_truth_uses_index_positions_as_image_ids_in_original_pixels(split_100):
    gt = coco_ground_truth(split_100, ["c0", "c1", "c2"], exclude_image_ids=[5])

    assert [image["id"] for image in gt["images"]] == [i for i in range(100) if i != 5]
    first = [a for a in gt["annotations"] if a["image_id"] == 0]
    image = gt["images"][0]
    for annotation in first:
        x, y, w, h = annotation["bbox"]
        assert 0 <= x and x + w <= image["width"] + 1e-6 and w > 0 and h > 0
    assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"])


def test_a_corrupt_val_image_is_skipped_and_its_id_reported(raw_split, jpeg_bytes, make_label):
    samples = [{"__key__": f"v{i}", "jpg": jpeg_bytes(48, 40), "json": make_label([[1, 1, 9, 9]], [0])}
               for i in range(6)]
    samples[2]["jpg"] = b"\xff\xd8\xff nope"
    split = raw_split(samples)

    stream = ValStream(split, rank=0, world_size=1, batch_size=4, imgsz=IMGSZ)
    ids = [i for batch in stream for i in batch.image_ids]

    assert ids == [0, 1, 3, 4, 5]
    assert stream.skipped_image_ids == [2] and stream.counters()["errors"] == {"invalid_image": 1}
    gt = coco_ground_truth(split, ["c0", "c1", "c2"], exclude_image_ids=stream.skipped_image_ids)
    assert [image["id"] for image in gt["images"]] == ids
    assert np.all([a["image_id"] != 2 for a in gt["annotations"]])
