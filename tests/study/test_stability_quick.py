"""The study's two core facts, on real training runs started by `yolotr study stability` (tiny set, few steps).

The naive stress setting (YOLOv5's block, no clip, default init, Transformer LR ×1, no warmup, bf16, no guard) at a
high LR goes non-finite; the very same setting with the guard on (skip consensus + rollback) finishes with finite
parameters and logged skips. The guard's loss-spike rollback is left off here: at this LR it fires before the first
NaN and there would be nothing to skip (the study's `v5-stress-guard` cell shows that case).
"""

from __future__ import annotations

import csv
import math

import pytest

from tests.study.conftest import write_study
from yolotr.cli import main
from yolotr.study.results import read_run, weights_are_finite
from yolotr.track.metrics import read_metrics

CELLS = [
    {"id": "v5-stress", "group": "core", "lr": "stress", "title": "naive, stress LR, no guard"},
    {"id": "v5-stress-skiprb", "group": "core", "lr": "stress", "bundles": ["guard_skip_rollback"],
     "title": "the same, guard on: skip consensus + rollback"},
]


@pytest.fixture(scope="module")
def study_out(tmp_path_factory):
    """Runs the two cells once for every test of this file (two trainings side by side, ~40 s on 2 cores)."""
    tmp = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        from tests.study.conftest import REPO

        mp.chdir(REPO)
        mp.setenv("OMP_NUM_THREADS", "1")
        study = write_study(tmp / "study.yaml", CELLS, steps=40, stress=10.0)
        code = main(["study", "stability", "--out", str(tmp / "out"), "--quick", "--study", str(study), "--jobs", "2"])
    return code, tmp / "out"


def test_the_study_command_writes_table_csv_and_plot(study_out):
    code, out = study_out

    assert code == 0
    table = (out / "stability.md").read_text()
    assert "| `v5-stress` |" in table and "| `v5-stress-skiprb` |" in table
    rows = list(csv.DictReader(open(out / "stability.csv")))
    assert [r["cell"] for r in rows] == ["v5-stress", "v5-stress-skiprb"]
    assert (out / "stability.png").stat().st_size > 10_000


def test_naive_stress_setting_without_guard_goes_non_finite(study_out):
    _, out = study_out

    naive = read_run(out / "runs" / "v5-stress")

    assert naive.first_nonfinite_step is not None
    assert naive.nonfinite_steps > 0 and naive.skipped_steps == 0  # applied, not skipped
    assert naive.params_finite is False  # the NaN went into the weights
    assert math.isnan(naive.final_loss)


def test_same_setting_with_guard_finishes_with_finite_parameters_and_a_logged_skip(study_out):
    _, out = study_out
    run_dir = out / "runs" / "v5-stress-skiprb"

    guarded = read_run(run_dir)
    skips = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "event" and r.get("event") == "skip"]

    assert guarded.exit_code in (0, 3), guarded.reason  # completed, or stopped cleanly after its rollback budget
    assert weights_are_finite(run_dir / "weights" / "last.safetensors") is True
    assert skips and guarded.skipped_steps == len(skips)
    assert guarded.map50 is not None and math.isfinite(guarded.map50)
