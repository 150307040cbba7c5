"""yolotr: a YOLOv5-style detector with Transformer blocks, and a trainer that never lets a bad step through."""

__version__ = "0.1.0"
