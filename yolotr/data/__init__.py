"""The data side: shards and their index, converters, the synthetic set, augmentations, and the train/val streams.

    spec.py          data.yaml → DataSpec (names, nc, train/val SplitIndex)
    index.py         the per-split index (byte offset of every sample) and the dataset fingerprint
    shard_writer.py  validated samples → WebDataset tar shards + index, byte-identical for the same input
    convert*.py      YOLO-txt and COCO sources → shards (`yolotr data shard`), with a report of exclusions
    synth.py         the synthetic shape set (`yolotr data synth`)
    check.py         shards vs index, decodability, class statistics (`yolotr data check`)
    order.py         the deterministic global order of an epoch and its split into steps and ranks
    stream.py        TrainStream: equal batches per rank, exact resume on any rank/worker count
    val_stream.py    ValStream: every val image once across ranks
    producers.py     the DataLoader workers' side: positions → read → decode → augment → collate
    augment.py       YOLOv5's augmentations (mosaic, affine, HSV, flip) on uint8 images
    coco_gt.py       COCO ground truth of a val split for pycocotools
    boxes.py         the (N,6) target layout and the letterbox inverse (network pixels -> original pixels)
"""

import cv2

# OpenCV's thread pool does not survive fork(): a DataLoader worker forked after the pool started hangs in its first
# parallel OpenCV call. YOLOv5 makes the same call for the same reason. Parallelism comes from DataLoader workers.
cv2.setNumThreads(1)
