"""Shards behind HTTP, read from a real server on 127.0.0.1 (Python's http.server) with faults injected at the
server: 500s, a body cut short, a stalled response, 404, 403, a server that has gone away, a shard deleted mid-run."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.data.remote_servers import http_server, synth_shard_set
from yolotr.data.errors import DataUnavailable, RemoteDataError, SampleError
from yolotr.data.remote.cache import cache_name
from yolotr.data.remote.location import RemoteOptions
from yolotr.data.shard_reader import ShardReader
from yolotr.data.spec import load_data_yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory) -> Path:
    """`yolotr data synth`: 48 train images in 6 shards, 16 val images in 2."""
    return synth_shard_set(tmp_path_factory.mktemp("remote-set"), train=48, val=16)


@pytest.fixture
def server(shard_set):
    with http_server(shard_set) as running:
        yield running


def options(tmp_path: Path, **changes) -> RemoteOptions:
    return RemoteOptions(**{"cache_dir": str(tmp_path / "cache"), "retry_budget_s": 10.0, "timeout_s": 2.0,
                            "prefetch_shards": 0, **changes})


def every_sample(split) -> list[bytes]:
    reader = ShardReader(split)
    try:
        return [bytes(reader.read(i)["jpg"]) for i in range(split.num_samples)]
    finally:
        reader.close()


def shard_gets(server) -> list[str]:
    return [path for path in server.requests if path.endswith(".tar")]


def test_a_data_yaml_behind_http_reads_the_same_samples_as_on_disk_one_request_per_shard(server, shard_set, tmp_path):
    remote = load_data_yaml(f"{server.url}/data.yaml", remote=options(tmp_path))
    local = load_data_yaml(shard_set / "data.yaml")

    assert remote.train.fingerprint == local.train.fingerprint  # a run may resume from either
    assert every_sample(remote.train) == every_sample(local.train)
    assert len(shard_gets(server)) == 6  # whole shards into the cache, not one request per sample
    cached = sorted(p.name for p in (tmp_path / "cache").glob("*.tar"))
    assert cached == sorted(cache_name(entry) for entry in remote.train.shards)

    assert every_sample(remote.train) == every_sample(local.train)  # a second pass: from the cache alone
    assert len(shard_gets(server)) == 6


def test_a_local_data_yaml_may_name_remote_splits(server, tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text(f"train: {server.url}/train\nval: {server.url}/val/index.json\nnames: [a, b, c, d]\n")
    spec = load_data_yaml(data, remote=options(tmp_path))
    assert (spec.train.num_samples, spec.val.num_samples) == (48, 16)
    assert spec.train.shard_location(0) == f"{server.url}/train/shard-000000.tar"


def test_500s_are_retried_with_backoff(server, tmp_path):
    server.faults.fail_first = 3
    spec = load_data_yaml(f"{server.url}/data.yaml", remote=options(tmp_path))
    assert len(every_sample(spec.train)) == 48
    assert server.requests[:4] == ["/data.yaml"] * 4


def test_a_body_cut_short_is_detected_deleted_and_fetched_again(server, tmp_path):
    spec = load_data_yaml(f"{server.url}/data.yaml", remote=options(tmp_path))
    server.faults.truncate_once.add("shard-000002.tar")
    path = spec.train.shard_path(2)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.train.shards[2].sha256
    assert shard_gets(server).count("/train/shard-000002.tar") == 2
    assert not list((tmp_path / "cache").glob("*.part"))


def test_a_file_that_is_not_the_one_indexed_is_an_unreadable_shard_naming_the_url(server, shard_set, tmp_path):
    spec = load_data_yaml(f"{server.url}/data.yaml", remote=options(tmp_path))
    served = tmp_path / "served"
    subprocess.run(["cp", "-r", str(shard_set), str(served)], check=True)
    server.root = served  # the handler serves this folder from now on
    with open(served / "train" / "shard-000001.tar", "r+b") as shard:  # one byte changed: same size, other sha256
        shard.seek(700)
        byte = shard.read(1)
        shard.seek(700)
        shard.write(bytes([byte[0] ^ 0xFF]))

    with pytest.raises(SampleError, match="unreadable_shard") as caught:
        ShardReader(spec.train).read(8)
    assert f"{server.url}/train/shard-000001.tar" in str(caught.value) and "sha256" in str(caught.value)
    assert shard_gets(server).count("/train/shard-000001.tar") == 2  # deleted and fetched once more
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(("shard-000001.tar", ".part"))]


def test_a_stalled_response_times_out_and_is_retried(server, tmp_path):
    spec = load_data_yaml(f"{server.url}/data.yaml", remote=options(tmp_path, timeout_s=1.0))
    server.faults.stall_once["shard-000003.tar"] = 4.0
    started = time.monotonic()
    path = spec.train.shard_path(3)
    assert time.monotonic() - started < 4.0  # did not wait the stall out
    assert path.stat().st_size == spec.train.shards[3].bytes
    assert shard_gets(server).count("/train/shard-000003.tar") == 2


@pytest.mark.parametrize("code, cause", [(404, "not found (404)"), (403, "access denied (403)")])
def test_404_and_403_name_the_url_and_the_cause_at_once(server, tmp_path, code, cause):
    server.faults.status["/train/index.json"] = code
    started = time.monotonic()
    with pytest.raises(RemoteDataError) as caught:
        load_data_yaml(f"{server.url}/data.yaml", remote=options(tmp_path))
    assert time.monotonic() - started < 2.0  # not retried
    assert f"{server.url}/train/index.json" in str(caught.value) and cause in str(caught.value)
    assert "key 'train'" in str(caught.value)


def test_an_unknown_host_is_named_with_the_cause():
    with pytest.raises(RemoteDataError, match=r"http://no-such-host\.invalid/data\.yaml: the host cannot be resolved"):
        load_data_yaml("http://no-such-host.invalid/data.yaml", remote=RemoteOptions(retry_budget_s=10))


def test_a_server_gone_for_longer_than_the_budget_is_data_unavailable(server, tmp_path):
    spec = load_data_yaml(f"{server.url}/data.yaml", remote=options(tmp_path, retry_budget_s=1.5))
    server.faults.down = True
    started = time.monotonic()
    with pytest.raises(DataUnavailable, match=r"shard-000004\.tar: unreachable for 1\.5s") as caught:
        ShardReader(spec.train).read(33)
    assert 1.4 < time.monotonic() - started < 5.0
    assert caught.value.exit_code == 69


def test_a_server_back_within_the_budget_is_waited_for(server, tmp_path):
    spec = load_data_yaml(f"{server.url}/data.yaml", remote=options(tmp_path, retry_budget_s=20))
    server.faults.down = True
    import threading

    threading.Timer(1.5, lambda: setattr(server.faults, "down", False)).start()
    assert ShardReader(spec.train).read(40)["jpg"]


def test_a_shard_deleted_mid_run_is_an_unreadable_shard_for_the_skip_budget(server, tmp_path):
    spec = load_data_yaml(f"{server.url}/data.yaml", remote=options(tmp_path))
    server.faults.status["/train/shard-000005.tar"] = 404
    reader = ShardReader(spec.train)
    with pytest.raises(SampleError) as caught:
        reader.read(41)
    assert caught.value.reason == "unreadable_shard"
    assert f"{server.url}/train/shard-000005.tar: not found (404)" in str(caught.value)
    assert reader.unreadable_shards == {"shard-000005.tar"}
    assert reader.read(0)["jpg"]  # the other shards read on


@pytest.mark.parametrize("url", ["pipe:cat /tmp/x.tar", "ftp://host/set/index.json"])
def test_an_unsupported_scheme_is_named_before_any_request(tmp_path, url):
    data = tmp_path / "data.yaml"
    data.write_text(f"train: '{url}'\nval: '{url}'\nnames: [a]\n")
    with pytest.raises(RemoteDataError, match="is not supported; shards may be local paths or http"):
        load_data_yaml(data)


def test_the_cache_keeps_its_limit_evicting_the_least_recently_used_shard(server, tmp_path):
    spec = load_data_yaml(f"{server.url}/data.yaml", remote=options(tmp_path))
    size = spec.train.shards[0].bytes
    limited = load_data_yaml(f"{server.url}/data.yaml",
                             remote=options(tmp_path, cache_limit_gb=3.5 * size / 1e9))
    for shard in (0, 1, 2):
        limited.train.shard_path(shard)
        time.sleep(0.01)
    limited.train.shard_path(0)  # used again: now the most recent
    limited.train.shard_path(3)  # one too many: the least recently used (1) goes
    cached = {p.name for p in (tmp_path / "cache").glob("*.tar")}
    assert cached == {cache_name(limited.train.shards[s]) for s in (0, 2, 3)}


def test_a_missing_optional_package_names_the_url_and_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "s3fs" else real(name, *a))
    with pytest.raises(RemoteDataError, match=r"s3://bucket/set/data\.yaml: reading s3:// needs s3fs: pip install "
                                              r"'yolotr\[remote\]'"):
        load_data_yaml("s3://bucket/set/data.yaml")


def test_train_with_an_unsupported_scheme_exits_2_with_one_line_before_any_run_folder(tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text("train: 'pipe:curl -s http://host/shard-{000..009}.tar'\nval: val/index.json\nnames: [a]\n")
    result = subprocess.run([sys.executable, "-m", "yolotr", "train", f"data={data}", f"run.dir={tmp_path / 'runs'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "key 'train': pipe:curl" in lines[0] and "is not supported" in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_a_stream_with_workers_and_prefetch_delivers_the_batches_read_from_disk(server, shard_set, tmp_path):
    import torch

    from yolotr.config.augment import AugmentConfig
    from yolotr.data.stream import TrainStream

    def batches(split, workers):
        stream = TrainStream(split, global_batch_size=8, rank=0, world_size=1, seed=0, imgsz=32,
                             augment=AugmentConfig(), num_workers=workers)
        return [(batch.keys, batch.images.clone()) for batch in stream]

    remote = load_data_yaml(f"{server.url}/data.yaml", remote=options(tmp_path, prefetch_shards=2)).train
    local = load_data_yaml(shard_set / "data.yaml").train
    got, expected = batches(remote, 2), batches(local, 0)
    assert [keys for keys, _ in got] == [keys for keys, _ in expected]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, expected))
    gets = shard_gets(server)
    assert sorted(gets) == sorted(set(gets)) and len(gets) == 6  # the two workers and their prefetchers: once each
