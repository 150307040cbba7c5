"""The detector: YOLOv5's architecture, built from YOLOv5-format yaml, with Transformer blocks stable by construction.

Modules, one concern each:
    common       YOLOv5's convolutional blocks (Conv, Bottleneck, C3, SPPF, SPP, Focus, Concat)
    transformer  C3TR (yolotr's block), C3TRv5 (YOLOv5's), TRANSFORMER_TYPES, token helpers
    detect       Detect, the anchor-based head and its decoding
    yolo         DetectionModel (yaml -> nn.Module) and ModelConfigError
    loss         ComputeLoss, bbox_iou (CIoU)
    nms          non_max_suppression
    info         model_summary and the `yolotr model info` command
"""
