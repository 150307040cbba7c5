"""The exceptions of the data side, and the reasons a sample can be rejected.

Reasons are short stable identifiers (they are counter names in `TrainStream.counters()` and appear in logs and
reports), each with a sentence a user can act on.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from pathlib import Path

from yolotr.errors import EXIT_DATA, EXIT_DATA_UNAVAILABLE, EXIT_STORAGE, UsageError, YolotrError


class DataSpecError(UsageError):
    """A data yaml, an index or a source dataset is malformed or missing; the message names the file and the key."""


class RemoteDataError(DataSpecError):
    """A URL that cannot be read as asked and will not be by retrying: an unsupported scheme or a missing package,
    404, 403, an unknown host, a file whose size or sha256 is not the index's. The message names the URL and the
    cause (exit 2 at the start; a shard failing mid-run is an unreadable shard, counted in the skip budget)."""


class DataUnavailable(YolotrError):
    """Remote storage stayed unreachable for the whole retry budget (remote.retry_budget_s): exit 69, retryable."""

    exit_code = EXIT_DATA_UNAVAILABLE
    between_steps = False
    """Set by the trainer: no batch of the step was consumed when it came, so the stream's position is exact."""

    @classmethod
    def from_worker(cls, error: DataUnavailable) -> DataUnavailable:
        """The worker's own message, without the traceback a DataLoader puts around an error it passes on."""
        text = str(error)
        if "Traceback" in text:
            text = text.rstrip().rsplit("\n", 1)[-1].partition(": ")[2] or text
        return cls(text)


class ConversionStorageError(YolotrError):
    """A conversion cannot be written (disk full, read-only, no permission): EXIT_STORAGE, not retried. What it had
    written is removed first, so that no half conversion is ever taken for a whole one."""

    exit_code = EXIT_STORAGE

    @classmethod
    def from_os_error(cls, error: OSError, folder: Path, *, hint: str = "") -> ConversionStorageError:
        where = error.filename or folder
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            what = f"no space left on device writing {where}"
        elif error.errno == errno.EROFS:
            what = f"cannot write {where}: read-only file system"
        elif error.errno in (errno.EACCES, errno.EPERM):
            what = f"cannot write {where}: permission denied"
        else:
            what = f"cannot write {where}: {error.strerror or error}"
        return cls(f"data conversion into {folder}: {what}" + (f"; {hint}" if hint else ""))


class StreamStateError(UsageError):
    """A stream state (from a checkpoint) cannot be honoured by this stream; the message says why."""


class SampleError(Exception):
    """One sample cannot be used. `reason` is one of `REASONS`; `detail` says what exactly was wrong."""

    def __init__(self, reason: str, detail: str = "", key: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown sample error reason {reason!r}")
        self.reason = reason
        self.detail = detail
        self.key = key
        super().__init__(reason, detail)

    def __str__(self) -> str:
        # The key is often filled in by the caller that knows it, after the error was raised.
        return f"{self.key or '?'}: {self.reason}: {self.detail or REASONS[self.reason]}"


class DataErrorBudgetExceeded(YolotrError):
    """More samples were corrupt than `max_error_fraction` allows; the message is a report of what was seen."""

    exit_code = EXIT_DATA

    def __init__(self, *, errors: Mapping[str, int], seen: int, allowed: float,
                 examples: Sequence[tuple[str, str]]) -> None:
        self.errors = dict(errors)
        self.seen = seen
        self.allowed = allowed
        lines = [
            f"data error budget exceeded: {sum(errors.values())} corrupt samples of {seen} seen "
            f"(at most {allowed:.1f} allowed); the data is damaged, fix or re-shard it (`yolotr data check`).",
            "errors by reason:",
        ]
        lines += [f"  {reason}: {count} ({REASONS.get(reason, '')})" for reason, count in sorted(errors.items())]
        lines.append("last corrupt samples (key: reason):")
        lines += [f"  {key}: {reason}" for key, reason in examples]
        super().__init__("\n".join(lines))


# reason -> what it means. Stream-side reasons first, then the ones only converters report.
REASONS: dict[str, str] = {
    "unreadable_shard": "the shard file could not be opened or read",
    "truncated_shard": "the shard file ends before this sample does",
    "bad_tar_header": "a tar header of the sample is damaged",
    "key_mismatch": "the tar members at the indexed offset belong to another key",
    "missing_image": "the sample has no .jpg/.png member",
    "missing_label": "the sample has no .json member",
    "invalid_json": "the label member is not valid json",
    "invalid_label": "the label json lacks a field or has one of the wrong type",
    "invalid_image": "the image bytes do not decode",
    "image_size_mismatch": "the decoded image size differs from the label's width/height",
    "nonfinite_box": "a box coordinate is NaN or infinite",
    "negative_box": "a box has a negative coordinate, width or height",
    "box_outside_image": "a box extends beyond the image",
    "class_out_of_range": "a class id is not an integer in [0, nc)",
    # converter-only reasons
    "unsupported_image_format": "the file is in no image format that PIL or torchvision decodes",
    "missing_file": "the image file does not exist or cannot be read",
    "malformed_label_row": "a label row does not have the expected number of numeric columns",
    "label_without_image": "a label file in labels/ whose image is not in the split",
}
