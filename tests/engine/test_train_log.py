"""The `train` record's data_wait: the share of its window that the rank spent waiting for batches."""

from types import SimpleNamespace

import pytest

import yolotr.engine.train_log as train_log_module
from yolotr.data.prefetch import LoaderClock
from yolotr.engine.train_log import TrainLog
from yolotr.guard.monitor import StepOutcome


class Records:
    def __init__(self):
        self.written = []

    def log(self, kind, **fields):
        self.written.append(fields)
        return fields


def test_data_wait_is_the_waited_share_of_each_records_window(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(train_log_module.time, "perf_counter", lambda: now[0])
    clock = LoaderClock()
    stream = SimpleNamespace(clock=clock, error_log=[], counters=lambda: {"errors_total": 0, "errors": {}})
    records = Records()
    log = TrainLog(records, world_size=1, max_norm=1.0, progress=None)
    clock.handed_out(5.0, 0.1)  # start-up before the first step: not part of any window
    log.restart_clock(stream)
    optimizer = SimpleNamespace(param_groups=[{"lr": 0.01}])
    outcome = StepOutcome(step=1, grad_norm=0.5, skipped=False, loss=1.0, box=0.4, obj=0.3, cls=0.3,
                          stop_requested=False, images=8)
    for waited, elapsed in [(1.0, 4.0), (0.0, 2.0), (3.0, 3.0)]:
        clock.handed_out(waited, 0.1)
        now[0] += elapsed
        log.add([outcome])
        log.write(step=1, epoch=0, optimizer=optimizer, stream=stream, skipped_steps=0, rollbacks=0, quarantined=0)
    assert [r["data_wait"] for r in records.written] == pytest.approx([0.25, 0.0, 1.0])
