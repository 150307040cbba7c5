"""Requests to remote storage, retried with exponential backoff within one time budget (remote.retry_budget_s).

What a retry can fix: timeouts, refused or reset connections, a body cut short, 5xx and 429. What it cannot: 404,
401/403 and an unknown host; those are a `RemoteDataError` at once, naming the URL and the cause. When the budget runs
out the error is `DataUnavailable` (exit 69, which the launchers retry once the storage is back).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from yolotr.data.errors import DataUnavailable, RemoteDataError
from yolotr.data.remote.location import RemoteOptions, filesystem
from yolotr.log import EVERY_RANK

log = logging.getLogger(__name__)

T = TypeVar("T")
_FIRST_DELAY_S = 0.25
_MAX_DELAY_S = 15.0
# Errors of the client libraries that mean "the transport failed" (a retry may succeed); matched by module so that
# none of them has to be imported.
_TRANSIENT_MODULES = ("aiohttp", "botocore", "aiobotocore", "fsspec", "urllib3", "google", "requests", "asyncio")


def permanent_cause(error: BaseException) -> str | None:
    """Why `error` will fail again on a retry ("not found (404)", ...), or None when a retry may succeed."""
    if isinstance(error, FileNotFoundError):
        return "not found (404)"
    if isinstance(error, PermissionError):
        return "access denied (403): check the credentials and the bucket's policy"
    status = getattr(error, "status", None) or getattr(error, "code", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        return {401: "unauthorized (401)", 403: "access denied (403): check the credentials"}.get(
            status, f"HTTP {status} {getattr(error, 'message', '')}".rstrip())
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, socket.gaierror) or type(seen).__name__ == "ClientConnectorDNSError":
            return f"the host cannot be resolved (DNS: {seen})"
        seen = seen.__cause__ or seen.__context__
    return None


def is_transient(error: BaseException) -> bool:
    if isinstance(error, (OSError, TimeoutError, EOFError)):
        return True
    return type(error).__module__.split(".")[0] in _TRANSIENT_MODULES


def with_retries(action: Callable[[], T], url: str, options: RemoteOptions, *, what: str) -> T:
    """`action()`, retried on transient errors with exponential backoff until `options.retry_budget_s` is spent."""
    deadline = time.monotonic() + options.retry_budget_s
    delay, attempts = _FIRST_DELAY_S, 0
    while True:
        attempts += 1
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - sorted into permanent / transient / a bug below
            cause = permanent_cause(error)
            if cause is not None:
                raise RemoteDataError(f"{url}: {cause}") from None
            if not is_transient(error):
                raise
            detail = f"{type(error).__name__}: {error}".strip()
            left = deadline - time.monotonic()
            if left <= 0:
                raise DataUnavailable(
                    f"{url}: unreachable for {options.retry_budget_s:g}s ({attempts} attempt(s) to {what}; last "
                    f"error {detail}); the storage may be down: the run stops and its launcher retries it "
                    f"(remote.retry_budget_s sets how long to wait)") from None
            log.warning(f"data: {what} {url} failed ({detail}); retrying in {min(delay, left):.2f}s", extra=EVERY_RANK)
            time.sleep(min(delay, left))
            delay = min(delay * 2, _MAX_DELAY_S)


def read_bytes(url: str, options: RemoteOptions) -> bytes:
    """A whole small file (a data.yaml, an index.json)."""
    fs = filesystem(url, options)
    return with_retries(lambda: fs.cat_file(url), url, options, what="read")


def download(url: str, destination: Path, *, size: int, sha256: str, options: RemoteOptions) -> int:
    """Downloads `url` to `destination` through `<destination>.part` and a rename, so that a file under the final name
    is always whole; checks size and sha256 against the index's. A mismatch is deleted and fetched once more (a body
    cut short, a flaky proxy); a second is a RemoteDataError (the remote file is not the one indexed). Returns the
    bytes transferred."""
    fs = filesystem(url, options)
    part = destination.with_name(destination.name + ".part")
    transferred = 0
    problem = ""
    for attempt in range(2):
        part.unlink(missing_ok=True)
        with_retries(lambda: _get(fs, url, part), url, options, what="download")
        got = part.stat().st_size
        transferred += got
        if got != size:
            problem = f"{got} bytes arrived, the index says {size}"
        elif _sha256(part) != sha256:
            problem = "the sha256 of what arrived differs from the index's"
        else:
            os.replace(part, destination)
            return transferred
        if attempt == 0:
            log.warning(f"data: {url}: {problem}; deleted, fetching it again", extra=EVERY_RANK)
    part.unlink(missing_ok=True)
    raise RemoteDataError(f"{url}: {problem}, twice: the remote file is not the one its index.json describes "
                          f"(re-run `yolotr data shard`, or restore the file)")


def _get(fs, url: str, part: Path) -> None:
    part.unlink(missing_ok=True)  # a retry starts the file afresh
    fs.get_file(url, str(part))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
