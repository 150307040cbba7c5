"""Reading a cell's run folder, the table and plot built from it, and the checks of the issue's conclusions.

Run folders are written here with the trainer's own writers (MetricsWriter, save_weights), so these tests need no
training run and exercise the same files the study reads after a real one.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from yolotr.checkpoint.weights_file import save_weights
from yolotr.model.yolo import DetectionModel
from yolotr.study.conclusions import check_conclusions
from yolotr.study.matrix import Cell
from yolotr.study.report import CellReport, markdown_table, plot_curves, write_csv
from yolotr.study.results import read_run, weights_finiteness
from yolotr.study.runner import CellProcess
from yolotr.track.metrics import MetricsWriter

REPO = Path(__file__).resolve().parents[2]
NAN = float("nan")


def write_run(run_dir: Path, losses: list[float], *, skipped: set[int] = frozenset(), map50: float | None = 0.2,
              exit_code: int = 0, rollbacks: dict[int, int] | None = None) -> Path:
    """A run folder as the trainer leaves it: one train record per step, skip events, a final val, exit.json."""
    run_dir.mkdir(parents=True)
    rollbacks = rollbacks or {}
    with MetricsWriter(run_dir / "metrics.jsonl") as metrics:
        metrics.write("event", event="start", step=0, world_size=1, steps_per_epoch=10)
        skips = done_rollbacks = 0
        for step, loss in enumerate(losses, start=1):
            if step in skipped:
                skips += 1
                metrics.write("event", event="skip", step=step, skipped_steps=skips)
            if step in rollbacks:
                done_rollbacks += 1
                metrics.write("event", event="rollback", step=step, rollbacks=done_rollbacks)
            metrics.write("train", step=step, loss=loss, grad_norm=1.0 if math.isfinite(loss) else NAN,
                          skipped_steps=skips, rollbacks=done_rollbacks, quarantined=0)
        if map50 is not None:
            metrics.write("val", step=len(losses), map50=map50, map=map50 / 2)
    (run_dir / "exit.json").write_text(json.dumps({"exit_code": exit_code, "reason": "completed", "step": len(losses)}))
    return run_dir


def report_for(cell_id: str, run_dir: Path, group: str = "g") -> CellReport:
    cell = Cell(id=cell_id, group=group, title=cell_id, lr="stress")
    return CellReport(cell, None, read_run(run_dir), CellProcess(0, 12.0, False, run_dir.with_suffix(".log")))


def test_unguarded_run_that_goes_nan_reports_its_first_non_finite_step_and_a_nan_final_loss(tmp_path):
    run = write_run(tmp_path / "naive", [0.5, 0.4, 30.0, NAN, NAN, NAN])

    result = read_run(run)

    assert result.first_nonfinite_step == 4
    assert result.nonfinite_steps == 3 and result.skipped_steps == 0
    assert math.isnan(result.final_loss)
    assert result.nonfinite == [4, 5, 6]


def test_guarded_run_reports_skips_and_its_final_loss_over_the_finite_steps(tmp_path):
    run = write_run(tmp_path / "guarded", [0.5, NAN, 0.3, NAN], skipped={2, 4}, rollbacks={4: 1})

    result = read_run(run)

    assert (result.first_nonfinite_step, result.nonfinite_steps, result.skipped_steps) == (2, 2, 2)
    assert result.skip_events == 2 and result.rollback_steps == [4] and result.rollbacks == 1
    assert result.final_loss == pytest.approx(0.4)  # the last step was skipped, not applied
    assert result.map50 == 0.2 and result.exit_code == 0


def test_a_run_that_never_wrote_exit_json_is_reported_as_such(tmp_path):
    run = write_run(tmp_path / "crashed", [0.5, 0.4], map50=None)
    (run / "exit.json").unlink()

    result = read_run(run)

    assert result.exit_code is None and "crashed" in result.reason
    assert result.map50 is None


@pytest.fixture(scope="module")
def tiny_detector():
    return DetectionModel(str(REPO / "configs/study/yolov5n-c3trv5.yaml"), nc=2)


def _save(path: Path, model: DetectionModel) -> Path:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return save_weights(path, model_state=state, ema_state=state, model_yaml=model.yaml, names=["a", "b"], imgsz=64)


def test_weights_check_tells_a_nan_parameter_from_an_overflowed_batchnorm_statistic(tmp_path, tiny_detector):
    running_var = next(name for name, _ in tiny_detector.named_buffers() if name.endswith("running_var"))
    weight = next(name for name, _ in tiny_detector.named_parameters())
    clean = _save(tmp_path / "clean.safetensors", tiny_detector)
    with torch.no_grad():
        tiny_detector.get_buffer(running_var).fill_(float("inf"))
    inf_statistic = _save(tmp_path / "inf_var.safetensors", tiny_detector)
    with torch.no_grad():
        tiny_detector.get_parameter(weight).view(-1)[0] = NAN
    nan_parameter = _save(tmp_path / "nan_weight.safetensors", tiny_detector)

    assert weights_finiteness(clean).parameters and weights_finiteness(clean).nonfinite_buffers == []
    assert weights_finiteness(inf_statistic).parameters
    assert weights_finiteness(inf_statistic).nonfinite_buffers == [f"model.{running_var}", f"ema.{running_var}"]
    assert weights_finiteness(nan_parameter).parameters is False
    assert weights_finiteness(tmp_path / "missing.safetensors") is None


def test_table_csv_and_plot_hold_one_row_and_one_curve_per_cell(tmp_path):
    reports = [
        report_for("v5-stress", write_run(tmp_path / "a", [0.5, NAN, NAN]), group="block"),
        report_for("v5-stress-skiprb", write_run(tmp_path / "b", [0.5, NAN, 0.4], skipped={2}), group="guard"),
    ]

    table = markdown_table(reports)
    write_csv(tmp_path / "s.csv", reports)
    plot_curves(tmp_path / "s.png", reports)

    rows = table.splitlines()
    assert len(rows) == 4 and rows[2].startswith("| `v5-stress` |") and "| 2 |" in rows[2]
    assert "completed, NaN steps skipped" in rows[3]
    written = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [r["cell"] for r in written] == ["v5-stress", "v5-stress-skiprb"]
    assert written[0]["first_nonfinite_step"] == "2" and written[0]["final_loss"] == "nan"
    assert (tmp_path / "s.png").stat().st_size > 10_000


def test_conclusions_say_does_not_hold_when_the_numbers_disagree(tmp_path):
    reports = [
        report_for("v5-stress", write_run(tmp_path / "naive", [0.5, 0.4, 0.3])),  # never went non-finite
        report_for("yolotr-2p-clean", write_run(tmp_path / "clean", [0.5, 0.4], map50=0.30)),
        report_for("yolotr-2p-nan", write_run(tmp_path / "nan", [0.5, NAN], skipped={2}, map50=0.25)),
    ]

    checks = {c.claim.split(" ")[0]: c for c in check_conclusions(reports)}

    assert checks["YOLOv5's"].verdict == "does not hold"
    assert checks["with"].verdict == "does not hold" and "cost +0.050" in checks["with"].evidence
    assert checks["yolotr's"].verdict == "not run"
