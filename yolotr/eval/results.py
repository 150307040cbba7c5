"""What `YOLO.predict` returns for each image: `Results`, holding `Boxes`, shaped like ultralytics' so that code
written against `ultralytics.engine.results` carries over.

    for result in model.predict("images/"):
        result.boxes.xyxy        # (n, 4) x1 y1 x2 y2 in the pixels of the original image
        result.boxes.conf, result.boxes.cls, result.names[int(result.boxes.cls[0])]
        result.plot()            # (H, W, 3) uint8 BGR, the boxes drawn on the original image
        result.save("out.jpg"); result.to_json(); result.to_df()

Images are BGR where they leave this module (`orig_img`, `plot()`), as ultralytics' are (they come from cv2), so that
`cv2.imwrite(path, result.plot())` works as it does there; predict itself reads and is given RGB.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch


class Boxes:
    """The detections of one image: `data` (n, 6) x1 y1 x2 y2 conf cls, in original pixels, as a torch tensor (or a
    numpy array after `.numpy()`); `orig_shape` (height, width) for the normalised forms."""

    def __init__(self, data: torch.Tensor | np.ndarray, orig_shape: tuple[int, int]) -> None:
        if data.ndim == 1:  # one box picked by an integer index keeps its row
            data = data[None, :]
        if data.ndim != 2 or data.shape[1] != 6:
            raise ValueError(f"Boxes expects (n, 6) x1 y1 x2 y2 conf cls, got shape {tuple(data.shape)}")
        self.data = data
        self.orig_shape = tuple(orig_shape)

    @property
    def xyxy(self):
        """(n, 4) x1 y1 x2 y2, pixels."""
        return self.data[:, :4]

    @property
    def conf(self):
        """(n,) confidence: objectness × class score."""
        return self.data[:, 4]

    @property
    def cls(self):
        """(n,) class index (a float, as ultralytics')."""
        return self.data[:, 5]

    @property
    def xywh(self):
        """(n, 4) centre x, centre y, width, height, pixels."""
        xyxy = self.xyxy
        out = _copy(xyxy)
        out[:, 0] = (xyxy[:, 0] + xyxy[:, 2]) / 2
        out[:, 1] = (xyxy[:, 1] + xyxy[:, 3]) / 2
        out[:, 2] = xyxy[:, 2] - xyxy[:, 0]
        out[:, 3] = xyxy[:, 3] - xyxy[:, 1]
        return out

    @property
    def xyxyn(self):
        """(n, 4) x1 y1 x2 y2 divided by the original width and height: in [0, 1]."""
        return self._normalised(_copy(self.xyxy))

    @property
    def xywhn(self):
        """(n, 4) centre x, centre y, width, height divided by the original width and height."""
        return self._normalised(self.xywh)

    def _normalised(self, boxes):
        height, width = self.orig_shape
        boxes[:, [0, 2]] /= width
        boxes[:, [1, 3]] /= height
        return boxes

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index) -> Boxes:
        return Boxes(self.data[index], self.orig_shape)

    def __iter__(self) -> Iterator[Boxes]:
        return (self[i] for i in range(len(self)))

    def cpu(self) -> Boxes:
        return Boxes(self.data.cpu(), self.orig_shape) if isinstance(self.data, torch.Tensor) else self

    def numpy(self) -> Boxes:
        data = self.data.detach().cpu().numpy() if isinstance(self.data, torch.Tensor) else self.data
        return Boxes(data, self.orig_shape)

    def to(self, *args, **kwargs) -> Boxes:
        return Boxes(torch.as_tensor(self.data).to(*args, **kwargs), self.orig_shape)

    def __repr__(self) -> str:
        return f"Boxes(n={len(self)}, orig_shape={self.orig_shape})\ndata: {self.data!r}"


class Results:
    """One image's predictions: `boxes`, `names` {index: name}, `orig_img` (H, W, 3) uint8 BGR, `orig_shape`
    (height, width), `path` (its file, or `image<i>.jpg` for an array), `speed` {preprocess, inference,
    postprocess} in ms per image. Its length is the number of boxes; indexing or iterating gives Results of single
    boxes (or of a slice)."""

    def __init__(self, orig_img: np.ndarray, path: str, names: dict[int, str], boxes: torch.Tensor | np.ndarray,
                 speed: dict[str, float] | None = None) -> None:
        self.orig_img = orig_img
        self.orig_shape = tuple(orig_img.shape[:2])
        self.path = path
        self.names = names
        self.boxes = Boxes(boxes, self.orig_shape)
        self.speed = dict(speed or {"preprocess": None, "inference": None, "postprocess": None})

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> Results:
        return self._with(self.boxes[index].data)

    def __iter__(self) -> Iterator[Results]:
        return (self[i] for i in range(len(self)))

    def _with(self, data) -> Results:
        return Results(self.orig_img, self.path, self.names, data, self.speed)

    def cpu(self) -> Results:
        return self._with(self.boxes.cpu().data)

    def numpy(self) -> Results:
        return self._with(self.boxes.numpy().data)

    def to(self, *args, **kwargs) -> Results:
        return self._with(self.boxes.to(*args, **kwargs).data)

    def __repr__(self) -> str:
        return f"Results(path={self.path!r}, orig_shape={self.orig_shape}, boxes={len(self)}, speed={self.speed})"

    # ------------------------------------------------------------------ pictures
    def plot(self, conf: bool = True, labels: bool = True, line_width: int | None = None, boxes: bool = True,
             img: np.ndarray | None = None) -> np.ndarray:
        """The original image (or `img`, BGR of the same size) with the boxes drawn, labelled `name 0.87` on a
        filled background (`labels=False`: no text, `conf=False`: the name alone): (H, W, 3) uint8 BGR."""
        from yolotr.eval.plots.drawing import draw_boxes  # torchvision's drawing and matplotlib: on first use

        base = self.orig_img if img is None else img
        rgb = torch.from_numpy(np.ascontiguousarray(base[..., ::-1])).permute(2, 0, 1)  # (H,W,3) BGR -> (3,H,W) RGB
        if boxes and len(self):
            found = self.boxes.cpu()
            xyxy, cls, scores = (torch.as_tensor(v) for v in (found.xyxy, found.cls, found.conf))
            names = [self.names.get(i, str(i)) for i in range(int(cls.max()) + 1)]
            rgb = draw_boxes(rgb, xyxy, cls, names, scores=scores if conf else None, width=line_width,
                             show_labels=labels, fill_labels=True)
        return np.ascontiguousarray(rgb.permute(1, 2, 0).numpy()[..., ::-1])  # (3,H,W) RGB -> (H,W,3) BGR

    def save(self, filename: str | os.PathLike | None = None, **plot_options) -> str:
        """Writes `plot(**plot_options)` to `filename` (.jpg or .png; default `results_<image name>`) and returns
        the path."""
        from yolotr.eval.plots.drawing import save_image

        filename = filename or f"results_{Path(self.path).stem}.jpg"
        drawn = self.plot(**plot_options)
        save_image(torch.from_numpy(np.ascontiguousarray(drawn[..., ::-1])).permute(2, 0, 1), filename)
        return str(filename)

    # ------------------------------------------------------------------ tables
    def summary(self, normalize: bool = False, decimals: int = 5) -> list[dict]:
        """One dict per box, ultralytics' format: {name, class, confidence, box: {x1, y1, x2, y2}}; `normalize`
        divides x by the image's width and y by its height."""
        found = self.boxes.numpy()
        xyxy = found.xyxyn if normalize else found.xyxy
        rows = []
        for (x1, y1, x2, y2), score, cls in zip(xyxy.tolist(), found.conf.tolist(), found.cls.tolist()):
            rows.append({"name": self.names.get(int(cls), str(int(cls))), "class": int(cls),
                         "confidence": round(score, decimals),
                         "box": {"x1": round(x1, decimals), "y1": round(y1, decimals), "x2": round(x2, decimals),
                                 "y2": round(y2, decimals)}})
        return rows

    def to_json(self, normalize: bool = False, decimals: int = 5) -> str:
        """`summary()` as a json string."""
        return json.dumps(self.summary(normalize=normalize, decimals=decimals), indent=2)

    def to_df(self, normalize: bool = False, decimals: int = 5):
        """`summary()` as a pandas DataFrame (pandas is the optional extra `yolotr[pandas]`)."""
        try:
            import pandas
        except ImportError as error:
            raise ImportError("Results.to_df() needs pandas, an optional extra: pip install 'yolotr[pandas]'") \
                from error
        return pandas.DataFrame(self.summary(normalize=normalize, decimals=decimals))

    def verbose(self) -> str:
        """'2 persons, 1 car' style counts per class; '(no detections)' for none."""
        if not len(self):
            return "(no detections)"
        counts = np.bincount(self.boxes.numpy().cls.astype(int)).tolist()
        return ", ".join(f"{n} {self.names.get(c, str(c))}{'s' if n > 1 else ''}" for c, n in enumerate(counts) if n)


def _copy(array):
    return array.clone() if isinstance(array, torch.Tensor) else array.copy()
