"""The run's small records on a real full file system (a 64 KB tmpfs): a metrics record that does not fit is a
StorageError naming metrics.jsonl and leaves no half line behind; exit.json still gets the code a launcher reads."""

from __future__ import annotations

import json

import pytest

from tests.data.test_conversion_storage import mount, mounts  # noqa: F401 - the tmpfs fixture
from yolotr.checkpoint.run_status import mark_running, write_exit_file
from yolotr.debug.faults import fill_file_system
from yolotr.errors import EXIT_STORAGE, StorageError
from yolotr.track.metrics import MetricsWriter, read_metrics


@pytest.fixture
def disk(tmp_path, mounts):  # noqa: F811
    folder = tmp_path / "disk"
    mount(folder, "-t", "tmpfs", "-o", "size=64k", "tmpfs")
    mounts.append(folder)
    return folder


def test_a_metrics_record_that_does_not_fit_is_a_storage_error_naming_the_file_and_leaves_whole_lines(disk):
    path = disk / "metrics.jsonl"
    writer = MetricsWriter(path)
    writer.write("event", step=0, event="start")  # the file's first block: the records after it fill it up
    fill_file_system(disk / "filler")
    written = 0
    with pytest.raises(StorageError) as raised:
        for step in range(1, 10_000):  # the file's last allocated block fills, then the disk has none to give
            writer.write("train", step=step, loss=0.5, note="x" * 200)
            written = step
    writer.close()

    assert raised.value.exit_code == EXIT_STORAGE
    assert str(path) in str(raised.value) and "no space left on device" in str(raised.value)
    assert path.read_bytes().endswith(b"\n")  # the failed record is cut away, not left half written
    assert written > 0 and [r["step"] for r in read_metrics(path)] == list(range(written + 1))


def test_exit_json_reaches_a_full_disk_by_overwriting_the_starts_own_file(disk):
    mark_running(disk)
    fill_file_system(disk / "filler")
    with pytest.raises(OSError):
        (disk / "probe").write_bytes(b"x" * 8192)  # the disk takes no new block

    write_exit_file(disk, EXIT_STORAGE, "no space left on device writing RUN/metrics.jsonl", 11)

    status = json.loads((disk / "exit.json").read_text())
    assert status == {"state": "ended", "exit_code": 74, "step": 11,
                      "reason": "no space left on device writing RUN/metrics.jsonl"}
    assert not (disk / "exit.json.partial").exists()
