"""yolotr: a YOLOv5-style detector with Transformer blocks, and a trainer that never lets a bad step through.

`from yolotr import YOLO` is the Python API (yolotr/api.py). It is imported on first use, so that `import yolotr`
and `yolotr --help` stay fast (no torch). Importing yolotr gives its `yolotr` logger a stderr handler (yolotr/log.py).
"""

from yolotr.log import install as _install_log

__version__ = "0.1.0"
__all__ = ["YOLO", "__version__"]

_install_log()


def __getattr__(name: str):
    if name == "YOLO":
        from yolotr.api import YOLO

        return YOLO
    raise AttributeError(f"module 'yolotr' has no attribute {name!r}")
