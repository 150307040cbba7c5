"""torch.hub entry points: `torch.hub.load("path/to/yolotr", "yolotr_s", source="local")` returns a `yolotr.YOLO`
(its `.model` is the `nn.Module`; `predict`, `val`, `train` and `export` work as on any YOLO).

Each entry builds the preset of its name; `weights=` loads a yolotr weights file, checkpoint or yolov5 .pt into it
layer by layer (what fits), and `nc=` sets the number of classes.
"""

dependencies = ["torch", "torchvision", "yaml", "numpy", "safetensors"]


def _create(preset: str, weights: str | None = None, nc: int | None = None):
    from yolotr import YOLO

    model = YOLO(f"{preset}.yaml", nc=nc)
    if weights is not None:
        print(f"[yolotr] {preset}: {model.load(weights).summary()}")
    return model


def yolotr_n(weights: str | None = None, nc: int | None = None):
    """yolotr-n: YOLOv5n with yolotr's Transformer block (1.8 M parameters at 80 classes)."""
    return _create("yolotr-n", weights, nc)


def yolotr_s(weights: str | None = None, nc: int | None = None):
    """yolotr-s: YOLOv5s with yolotr's Transformer block (7.1 M parameters at 80 classes)."""
    return _create("yolotr-s", weights, nc)


def yolotr_m(weights: str | None = None, nc: int | None = None):
    """yolotr-m: YOLOv5m with yolotr's Transformer block."""
    return _create("yolotr-m", weights, nc)


def yolov5n(weights: str | None = None, nc: int | None = None):
    """YOLOv5n's architecture, parameter for parameter (a yolov5n.pt loads into it whole)."""
    return _create("yolov5n", weights, nc)


def yolov5s(weights: str | None = None, nc: int | None = None):
    """YOLOv5s's architecture, parameter for parameter (a yolov5s.pt loads into it whole)."""
    return _create("yolov5s", weights, nc)


def yolov5m(weights: str | None = None, nc: int | None = None):
    """YOLOv5m's architecture, parameter for parameter (a yolov5m.pt loads into it whole)."""
    return _create("yolov5m", weights, nc)
