"""Progress lines for output that is not a terminal: one per epoch, one per interval, one at the end."""

from __future__ import annotations

import io

from yolotr.track.progress_lines import LineProgress


def drive(progress: LineProgress, steps: list[tuple[int, int]]) -> list[str]:
    for step, epoch in steps:
        progress.n = step
        progress.set_postfix(epoch=epoch, loss="1.000")
        progress.refresh()
    return progress.stream.getvalue().splitlines()


def test_a_line_per_epoch_and_at_the_last_step_when_the_interval_is_long():
    progress = LineProgress(total=8, interval_s=3600, stream=io.StringIO())

    lines = drive(progress, [(1, 0), (2, 0), (3, 0), (4, 1), (5, 1), (6, 1), (7, 1), (8, 1)])

    assert [line.split(" eta ")[0] for line in lines] == [
        "[yolotr] step 1/8 (12.5%) epoch 0 loss 1.000",
        "[yolotr] step 4/8 (50.0%) epoch 1 loss 1.000",
        "[yolotr] step 8/8 (100.0%) epoch 1 loss 1.000",
    ]
    assert lines[-1].endswith("eta 0:00:00")


def test_a_line_at_every_refresh_once_the_interval_has_passed():
    progress = LineProgress(total=100, interval_s=0.0, stream=io.StringIO())

    assert len(drive(progress, [(10, 0), (20, 0), (30, 0)])) == 3


def test_a_resumed_run_counts_its_eta_from_where_it_resumed():
    progress = LineProgress(total=100, initial=50, interval_s=3600, stream=io.StringIO())

    (line,) = drive(progress, [(51, 3)])

    assert line.startswith("[yolotr] step 51/100 (51.0%) epoch 3")
