"""The study file: the shipped matrix asks the issue's questions, every cell is a valid training config, and a broken
study file is refused with an error naming the file and the key."""

from __future__ import annotations

import pytest

from tests.study.conftest import REPO, write_study
from yolotr.cli import main
from yolotr.config import load_config
from yolotr.study.matrix import StudyError, load_study
from yolotr.study.runner import plan_cells

SHIPPED = REPO / "configs/study/stability.yaml"


def test_every_cell_of_the_shipped_study_is_a_valid_training_config(in_repo, tmp_path):
    study = load_study(SHIPPED)

    for profile_name, profile in study.profiles.items():
        for launch in plan_cells(study, list(study.cells), profile, tmp_path / "data.yaml", tmp_path, procs=2):
            args = launch.train_args  # -m yolotr train --config BASE key=value ...
            overrides = args[args.index("--config") + 2 :]
            cfg = load_config(study.base, overrides, check_files=False)

            assert cfg.train.max_steps == profile.steps, (profile_name, launch.cell.id)
            assert cfg.train.lr0 == study.learning_rate(launch.cell, profile), (profile_name, launch.cell.id)
            assert (in_repo / cfg.model).is_file(), launch.cell.id


def test_quick_matrix_holds_the_cells_the_issue_asks_for(in_repo):
    study = load_study(SHIPPED)

    quick = {cell.id: cell for cell in study.select(quick=True)}

    assert {"v5-default", "v5-stress", "tr-stress"} <= set(quick)  # block × LR
    assert {"v5-stress-clip", "v5-stress-xavier", "v5-stress-lrmult", "v5-stress-warmup"} <= set(quick)  # remedies
    assert {"v5-stress-skip", "v5-stress-skiprb", "v5-stress-guard", "yolotr-stress"} <= set(quick)  # guard
    assert quick["yolotr-2p-nan"].procs == 2 and quick["yolotr-2p-clean"].procs == 2  # injection on 2 ranks
    assert len(study.select(quick=False)) > len(quick)


def test_a_remedy_cell_differs_from_the_naive_cell_only_by_its_remedy(in_repo):
    study = load_study(SHIPPED)
    profile = study.profiles["quick"]
    naive = study.overrides(next(c for c in study.cells if c.id == "v5-stress"), profile, world_size=1)

    clip = study.overrides(next(c for c in study.cells if c.id == "v5-stress-clip"), profile, world_size=1)

    assert {k: v for k, v in clip.items() if naive.get(k) != v} == {"guard.max_norm": 1.0}


def test_multi_rank_cells_launch_through_torchrun_with_the_requested_ranks(in_repo, tmp_path):
    study = load_study(SHIPPED)
    cells = study.select(quick=True, only=["v5-stress", "yolotr-2p-nan"])

    launches = plan_cells(study, cells, study.profiles["quick"], tmp_path / "data.yaml", tmp_path, procs=2)

    single, multi = launches
    assert single.world_size == 1 and "torch.distributed.run" not in single.command()
    assert multi.world_size == 2 and "--nproc-per-node=2" in multi.command(master_port=29999)
    assert f"run.dir={tmp_path / 'runs' / 'yolotr-2p-nan'}" in multi.train_args
    assert "faults.random_nan_rate=0.01" in multi.train_args


def test_an_unknown_bundle_is_refused_naming_the_file_and_the_cell(tmp_path, in_repo):
    path = write_study(tmp_path / "bad.yaml", [{"id": "a", "group": "g", "title": "t", "lr": "stress",
                                                 "bundles": ["clip", "no-such-remedy"]}])

    with pytest.raises(StudyError, match=r"bad\.yaml: cells\[0\]\.bundles: unknown bundle 'no-such-remedy'"):
        load_study(path)


def test_an_unknown_learning_rate_name_is_refused(tmp_path, in_repo):
    path = write_study(tmp_path / "bad.yaml", [{"id": "a", "group": "g", "title": "t", "lr": "huge"}])

    with pytest.raises(StudyError, match=r"cells\[0\]\.lr: 'huge' is not one of default, stress"):
        load_study(path)


def test_the_cli_refuses_an_unknown_cell_id_with_exit_2(tmp_path, in_repo, capsys):
    code = main(["study", "stability", "--out", str(tmp_path / "out"), "--quick", "--cells", "v5-stress,nope"])

    assert code == 2
    assert "no cell named nope" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written
