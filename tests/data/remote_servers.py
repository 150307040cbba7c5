"""Real servers for the remote-shard tests, on 127.0.0.1: an HTTP file server with faults injected at the server
(Python's http.server), and moto's S3 server (the S3 protocol over HTTP, reached with s3fs like a user's S3)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_CHUNK = 64 * 1024


@dataclass
class Faults:
    """What the HTTP server does wrong, set by a test while it runs."""

    fail_first: int = 0  # answer 500 to this many requests first
    status: dict[str, int] = field(default_factory=dict)  # path suffix -> status to answer (404, 403)
    truncate_once: set[str] = field(default_factory=set)  # path suffixes whose next body stops halfway
    stall_once: dict[str, float] = field(default_factory=dict)  # path suffix -> seconds to stall before the body
    down: bool = False  # every request answered 503 (a server that has gone away behind its load balancer)
    down_after_shards: int | None = None  # goes down after this many shard requests (mid-run)
    bytes_per_s: float = 0.0  # throttle (sleep per chunk); 0: as fast as it goes


class ShardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.faults = Faults()
        self.requests: list[str] = []
        self.bytes_sent = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(SimpleHTTPRequestHandler):
    server: ShardServer
    protocol_version = "HTTP/1.1"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(args[2].root), **kwargs)

    def log_message(self, *args) -> None:  # quiet
        pass

    def _fault(self) -> int | None:
        self.directory = str(self.server.root)  # per request: a kept-alive connection outlives a change of root
        faults = self.server.faults
        with self.server.lock:
            self.server.requests.append(self.path)
            if self.path.endswith(".tar") and faults.down_after_shards is not None:
                if faults.down_after_shards <= 0:
                    faults.down = True
                faults.down_after_shards -= 1
            if faults.down:
                return 503
            if faults.fail_first > 0:
                faults.fail_first -= 1
                return 500
        for suffix, code in faults.status.items():
            if self.path.endswith(suffix):
                return code
        return None

    def do_HEAD(self) -> None:
        code = self._fault()
        if code is not None:
            return self._error(code)
        super().do_HEAD()

    def do_GET(self) -> None:
        code = self._fault()
        if code is not None:
            return self._error(code)
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self._error(404)
        data = path.read_bytes()
        start, end = 0, len(data)
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes="):
            first, _, last = ranged[6:].partition("-")
            start, end = int(first or 0), min(int(last) + 1 if last else len(data), len(data))
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        body = data[start:end]
        faults = self.server.faults
        for suffix in list(faults.stall_once):
            if self.path.endswith(suffix):
                time.sleep(faults.stall_once.pop(suffix))
        for suffix in list(faults.truncate_once):
            if self.path.endswith(suffix):
                faults.truncate_once.discard(suffix)
                body = body[: len(body) // 2]
                self.close_connection = True
        for offset in range(0, len(body), _CHUNK):
            chunk = body[offset:offset + _CHUNK]
            try:
                self.wfile.write(chunk)
            except OSError:
                return
            with self.server.lock:
                self.server.bytes_sent += len(chunk)
            if faults.bytes_per_s:
                time.sleep(len(chunk) / faults.bytes_per_s)
        if self.close_connection:
            self.wfile.flush()
            self.connection.shutdown(2)

    def _error(self, code: int) -> None:
        body = HTTPStatus(code).phrase.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def http_server(root: Path):
    """A ShardServer serving `root`, stopped at the end."""
    server = ShardServer(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def s3_server(port: int):
    """moto's S3 server on 127.0.0.1:port, with the environment a user's S3 client would read (endpoint, keys)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(s3_env(port))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def s3_env(port: int) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def upload_folder(folder: Path, bucket: str, prefix: str) -> None:
    """Puts every file under `folder` into s3://bucket/prefix/ with boto3 (creating the bucket)."""
    import boto3

    client = boto3.client("s3")
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def copy_set(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def synth_shard_set(out: Path, *, train: int, val: int) -> Path:
    """`yolotr data synth` into `out`: 64 px images in shards of 8, so that a set spans several shards."""
    subprocess.run([sys.executable, "-m", "yolotr", "data", "synth", "--out", str(out), "--train", str(train), "--val",
                    str(val), "--imgsz", "64", "--samples-per-shard", "8", "--seed", "0", "-q"],
                   check=True, cwd=Path(__file__).resolve().parents[2], capture_output=True, timeout=300)
    return out


@contextmanager
def s3_holding(folder: Path, port: int):
    """An S3 server on 127.0.0.1:`port` whose bucket `datasets` holds `folder` under `synth/`; yields its endpoint."""
    with s3_server(port) as endpoint:
        upload_folder(folder, "datasets", "synth")
        yield endpoint
