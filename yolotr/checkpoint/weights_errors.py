"""The error of a weights file that cannot be read or used: a yolotr weights file, a training checkpoint read for its
weights, or a yolov5 `.pt`. A usage error (exit 2): the same file fails the same way until it is replaced."""

from __future__ import annotations

from yolotr.errors import UsageError


class WeightsFileError(UsageError):
    """The message names the file and says what is wrong with it."""
