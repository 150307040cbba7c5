"""torch.hub entry points: `torch.hub.load("path/to/yolotr", "yolotr_s", source="local")` returns a `yolotr.YOLO`
(its `.model` is the `nn.Module`; `predict`, `val`, `train` and `export` work as on any YOLO).

Each entry builds the preset of its name; `weights=` loads a yolotr weights file, checkpoint or yolov5 .pt into it
layer by layer (what fits), and `nc=` sets the number of classes.
"""

dependencies = ["torch", "torchvision", "yaml", "numpy", "safetensors"]


def _entry(preset: str, summary: str):
    def create(weights: str | None = None, nc: int | None = None):
        from yolotr import YOLO

        model = YOLO(f"{preset}.yaml", nc=nc)
        if weights is not None:
            print(f"[yolotr] {preset}: {model.load(weights).summary()}")
        return model

    create.__name__ = create.__qualname__ = preset.replace("-", "_")
    create.__doc__ = f"{summary} Arguments: weights (a file to load by layer), nc (number of classes)."
    return create


yolotr_n = _entry("yolotr-n", "yolotr-n: YOLOv5n with yolotr's Transformer block.")
yolotr_s = _entry("yolotr-s", "yolotr-s: YOLOv5s with yolotr's Transformer block.")
yolotr_m = _entry("yolotr-m", "yolotr-m: YOLOv5m with yolotr's Transformer block.")
yolov5n = _entry("yolov5n", "YOLOv5n's architecture, parameter for parameter (a yolov5n.pt loads into it whole).")
yolov5s = _entry("yolov5s", "YOLOv5s's architecture, parameter for parameter (a yolov5s.pt loads into it whole).")
yolov5m = _entry("yolov5m", "YOLOv5m's architecture, parameter for parameter (a yolov5m.pt loads into it whole).")
