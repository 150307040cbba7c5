"""COCO-format ground truth of a val split, for pycocotools.

Image ids are positions in the val index (the same as `ValBatch.image_ids`), boxes are in original pixels (xywh),
category ids are class indices. Crowd regions of a COCO conversion come back as `iscrowd: 1` annotations, which
COCOeval uses to ignore the detections inside them.
"""

from __future__ import annotations

from collections.abc import Iterable

from yolotr.data.errors import SampleError
from yolotr.data.index import SplitIndex
from yolotr.data.labels import parse_label
from yolotr.data.shard_reader import ShardReader


def coco_ground_truth(split: SplitIndex, names: list[str], *, exclude_image_ids: Iterable[int] = ()) -> dict:
    """Reads every label of `split`. Images whose label is unreadable are left out, as are `exclude_image_ids`
    (pass `ValStream.skipped_image_ids` so that images the val stream could not decode are not counted as missed)."""
    excluded = set(exclude_image_ids)
    images: list[dict] = []
    annotations: list[dict] = []
    reader = ShardReader(split)
    try:
        for image_id, key in enumerate(split.keys):
            if image_id in excluded:
                continue
            try:
                members = reader.read(image_id)
                if "json" not in members:
                    raise SampleError("missing_label")
                label = parse_label(members["json"], nc=split.nc)
            except SampleError:
                continue
            images.append({"id": image_id, "file_name": key, "width": label.width, "height": label.height})
            for crowd, boxes, classes in ((0, label.boxes, label.classes), (1, label.crowd_boxes, label.crowd_classes)):
                for (x1, y1, x2, y2), cls in zip(boxes.tolist(), classes.tolist()):
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls),
                                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                        "iscrowd": crowd})
    finally:
        reader.close()
    return {"info": {"description": f"yolotr ground truth of {split.index_file}"}, "licenses": [],
            "images": images, "annotations": annotations,
            "categories": [{"id": i, "name": name, "supercategory": ""} for i, name in enumerate(names)]}
