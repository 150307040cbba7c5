"""Evaluation (COCO mAP via pycocotools), prediction, plots and ONNX export."""
