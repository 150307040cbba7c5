"""Which strings are URLs, how a relative split resolves under a remote data.yaml, and which fsspec filesystem serves
a URL (its package an optional extra: `pip install yolotr[remote]`, `yolotr[gcs]` for gs://)."""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolotr.data.errors import RemoteDataError

if TYPE_CHECKING:
    from yolotr.config.run import RemoteConfig

# scheme -> (the packages fsspec needs for it, the extra that installs them)
SUPPORTED = {"http": (("fsspec", "aiohttp"), "remote"), "https": (("fsspec", "aiohttp"), "remote"),
             "s3": (("fsspec", "s3fs"), "remote"), "gs": (("fsspec", "gcsfs"), "gcs"),
             "gcs": (("fsspec", "gcsfs"), "gcs")}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def scheme_of(value: str) -> str | None:
    """The URL scheme of `value` ("s3", "http", "pipe", ...), None for a local path (a Windows drive letter is one)."""
    match = _SCHEME.match(value)
    if match is None or len(match.group(1)) == 1:
        return None
    return match.group(1).lower()


def is_url(value: object) -> bool:
    return isinstance(value, str) and scheme_of(value) is not None


def check_supported(url: str, where: str = "") -> None:
    """RemoteDataError (exit 2) naming the URL when its scheme is not served, or its package is not installed."""
    scheme = scheme_of(url)
    prefix = f"{where}: " if where else ""
    if scheme not in SUPPORTED:
        raise RemoteDataError(f"{prefix}{url}: the scheme {scheme}: is not supported; shards may be local paths or "
                              f"http(s)://, s3:// or gs:// URLs")
    packages, extra = SUPPORTED[scheme]
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise RemoteDataError(f"{prefix}{url}: reading {scheme}:// needs {', '.join(missing)}: "
                              f"pip install 'yolotr[{extra}]'")


def join(base: str, relative: str) -> str:
    """`relative` under the folder URL `base` (a URL `relative` stays as it is)."""
    if is_url(relative):
        return relative
    return base.rstrip("/") + "/" + relative.lstrip("/")


def parent(url: str) -> str:
    """The folder URL holding `url`."""
    return url.rstrip("/").rpartition("/")[0]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "yolotr" / "shards"


@dataclass(frozen=True)
class RemoteOptions:
    """How remote shards are fetched and cached (the `remote` config section); picklable, it travels to workers."""

    cache_dir: str = field(default_factory=lambda: str(default_cache_dir()))
    cache_limit_gb: float = 100.0
    retry_budget_s: float = 300.0
    timeout_s: float = 60.0
    prefetch_shards: int = 2

    @classmethod
    def from_config(cls, remote: RemoteConfig) -> RemoteOptions:
        return cls(cache_dir=remote.cache_dir or str(default_cache_dir()), cache_limit_gb=remote.cache_limit_gb,
                   retry_budget_s=remote.retry_budget_s, timeout_s=remote.timeout_s,
                   prefetch_shards=remote.prefetch_shards)


def filesystem(url: str, options: RemoteOptions) -> Any:
    """The fsspec filesystem for `url`, with a request timeout; fsspec caches instances (and makes them fork-safe).

    Retries are ours (fetch.py), within one budget: the clients' own retry loops are cut down so that they do not
    multiply it."""
    check_supported(url)
    import fsspec

    scheme = scheme_of(url)
    if scheme in ("http", "https"):
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=options.timeout_s, sock_read=options.timeout_s)
        return fsspec.filesystem(scheme, client_kwargs={"timeout": timeout})
    if scheme == "s3":
        # AWS_ENDPOINT_URL (MinIO, Ceph, a test server) is read by botocore itself, like the credentials.
        config = {"connect_timeout": options.timeout_s, "read_timeout": options.timeout_s,
                  "retries": {"max_attempts": 1, "mode": "standard"}}
        fs = fsspec.filesystem("s3", config_kwargs=config)
        fs.retries = 1  # s3fs's own loop (a class attribute, 5): ours has the budget
        return fs
    return fsspec.filesystem(scheme, timeout=options.timeout_s)
