"""Progress lines for output that is not a terminal: one per epoch, one per interval, one at the end. They are info
lines of yolotr's log, which puts `[yolotr] ` in front (tests/engine/test_train_cli_exit.py reads them from a run)."""

from __future__ import annotations

from yolotr.track.progress_lines import LineProgress


def drive(progress: LineProgress, steps: list[tuple[int, int]]) -> None:
    for step, epoch in steps:
        progress.n = step
        progress.set_postfix(epoch=epoch, loss="1.000")
        progress.refresh()


def test_a_line_per_epoch_and_at_the_last_step_when_the_interval_is_long():
    lines: list[str] = []
    progress = LineProgress(total=8, interval_s=3600, emit=lines.append)

    drive(progress, [(1, 0), (2, 0), (3, 0), (4, 1), (5, 1), (6, 1), (7, 1), (8, 1)])

    assert [line.split(" eta ")[0] for line in lines] == [
        "step 1/8 (12.5%) epoch 0 loss 1.000",
        "step 4/8 (50.0%) epoch 1 loss 1.000",
        "step 8/8 (100.0%) epoch 1 loss 1.000",
    ]
    assert lines[-1].endswith("eta 0:00:00")


def test_a_line_at_every_refresh_once_the_interval_has_passed():
    lines: list[str] = []
    progress = LineProgress(total=100, interval_s=0.0, emit=lines.append)

    drive(progress, [(10, 0), (20, 0), (30, 0)])

    assert len(lines) == 3


def test_a_resumed_run_counts_its_eta_from_where_it_resumed():
    lines: list[str] = []
    progress = LineProgress(total=100, initial=50, interval_s=3600, emit=lines.append)

    drive(progress, [(51, 3)])

    (line,) = lines
    assert line.startswith("step 51/100 (51.0%) epoch 3")
