"""Video in and out for `yolotr predict`: frames of a file, webcam or stream through cv2.VideoCapture, and the
annotated video written with cv2.VideoWriter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from yolotr.errors import YolotrError

# A file whose frames stop decoding for this long is truncated: the rest is counted as lost, not waited for.
MAX_CONSECUTIVE_FAILURES = 30
DEFAULT_FPS = 30.0  # for streams and webcams that do not say theirs


class VideoOpenError(YolotrError):
    """A webcam or stream that cv2.VideoCapture cannot open (a video file that does not open is a skipped file)."""


class VideoReader:
    """Every `vid_stride`-th frame of a video file, webcam (integer index) or stream URL, as RGB.

    Iterating yields (frame index, (H,W,3) uint8 RGB or None, reason or None): a frame that does not decode is
    yielded without an image, and reading goes on with the next one.
    """

    def __init__(self, target: str | int, *, stem: str = "video", vid_stride: int = 1, live: bool = False) -> None:
        self.target = target
        self.stem = stem
        """Name of its outputs: `<stem>.mp4`, `<stem>_<frame>.txt`."""
        self.name = f"webcam {target}" if isinstance(target, int) else str(target)
        self.vid_stride = vid_stride
        self.live = live
        self.fps = DEFAULT_FPS
        self.size: tuple[int, int] | None = None
        """(width, height) of its frames."""

    @staticmethod
    def frame_count(target: str | int) -> int:
        """Frames the container declares; 0 when it does not say (or does not open)."""
        capture = cv2.VideoCapture(target)
        try:
            return max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0) if capture.isOpened() else 0
        finally:
            capture.release()

    def __iter__(self) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        capture = cv2.VideoCapture(self.target)
        try:
            if not capture.isOpened():
                if self.live:
                    raise VideoOpenError(f"cannot open {self.name} (cv2.VideoCapture)")
                yield 0, None, f"{self.name}: cannot open the video"
                return
            fps = capture.get(cv2.CAP_PROP_FPS)
            self.fps = fps if 0 < fps < 1000 else DEFAULT_FPS
            self.size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            declared = 0 if self.live else max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
            yield from self._frames(capture, declared)
        finally:
            capture.release()

    def _frames(self, capture: cv2.VideoCapture, declared: int) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        index, failures = 0, 0
        while declared == 0 or index < declared:
            wanted = index % self.vid_stride == 0
            ok, bgr = capture.read() if wanted else (capture.grab(), None)
            if ok:
                failures = 0
                if wanted:
                    self.size = (bgr.shape[1], bgr.shape[0])
                    yield index, np.ascontiguousarray(bgr[..., ::-1]), None  # BGR -> RGB
            else:
                failures += 1
                # Without a declared length a failed read is the end (a stream that stopped, a webcam unplugged).
                if declared == 0 or failures > MAX_CONSECUTIVE_FAILURES:
                    reason = f"{self.name}: stops decoding at frame {index} of the {declared} it declares"
                    for lost in range(-(-index // self.vid_stride) * self.vid_stride, declared, self.vid_stride):
                        yield lost, None, reason
                    return
                if wanted:
                    yield index, None, f"{self.name}: frame {index} does not decode"
            index += 1


class VideoSink:
    """The annotated copy of one video: `out/<stem>.mp4` (MPEG-4 part 2, which every OpenCV build writes), at the
    source's fps divided by the frame stride."""

    def __init__(self, path: Path, fps: float, vid_stride: int) -> None:
        self.path = path
        self.fps = max(fps / vid_stride, 1.0)
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        height, width = rgb.shape[:2]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self._writer.isOpened():
                raise YolotrError(f"{self.path}: cv2.VideoWriter cannot write an mp4v video here")
            self._size = (width, height)
        if (width, height) != self._size:  # a stream that changed resolution: keep the file playable
            rgb = cv2.resize(rgb, self._size)
        self._writer.write(np.ascontiguousarray(rgb[..., ::-1]))  # RGB -> BGR
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
