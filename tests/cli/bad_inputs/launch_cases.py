"""Bad launches and sources: --resume values, run folders that cannot be used, unreadable predict inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.bad_inputs.common import NO_RUN, BadInput, Prepared, World, refused_train, train



def _run_dir_is_file(world: World, here: Path) -> Prepared:
    (here / "run").write_text("a file where the run folder should be\n")
    return train(world, here)


def _read_only_run_dir(world: World, here: Path) -> Prepared:
    folder = here / "readonly"
    run = folder / "run"
    shutil.copytree(world.run, run)  # an earlier run in it, to continue
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount here ({mounted.stderr.strip()}): needs root, as in CI")
    subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
    prepared = train(world, here, "--resume", str(run), "train.max_steps=3", run={"dir": str(run)})
    prepared.kept = [run]
    prepared.cleanup = lambda: subprocess.run(["umount", "-l", str(folder)], check=True)
    return prepared


def _images_with_one_unreadable(world: World, here: Path, *, readable: int) -> Prepared:
    images = here / "images"
    images.mkdir()
    for image in sorted((world.yolo.parent / "images" / "val").iterdir())[:readable]:
        shutil.copy(image, images / image.name)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return Prepared(["predict", "--weights", str(world.run / "weights" / "best.safetensors"), "--source", str(images),
                     "--out", str(here / "preds"), "--no-progress"])


def _predict_one_unreadable(world: World, here: Path) -> Prepared:
    prepared = _images_with_one_unreadable(world, here, readable=2)

    def check(output: str) -> None:
        assert len(json.loads((here / "preds" / "images.json").read_text())) == 2

    prepared.check = check
    return prepared


def _predict_nothing_readable(world: World, here: Path) -> Prepared:
    prepared = _images_with_one_unreadable(world, here, readable=0)

    def check(output: str) -> None:
        assert not (here / "preds").exists()

    prepared.check = check
    return prepared


LAUNCH = [
    BadInput("resume-missing-path", "launch", "`--resume` naming no path",
             lambda world, here: refused_train(world, here, "--resume", str(here / "no-such-run")),
             2, ("--resume", "{here}/no-such-run"), NO_RUN),
    BadInput("resume-bad-word", "launch", "`--resume` with a value that is neither auto, none nor a path",
             lambda world, here: refused_train(world, here, "--resume", "latest"), 2, ("--resume", "latest"),
             NO_RUN),
    BadInput("run-dir-is-file", "launch", "`run.dir` naming a file", _run_dir_is_file, 2, ("{here}/run",),
             "the file"),
    BadInput("run-dir-read-only", "launch", "a run folder on a read-only file system, resumed",
             _read_only_run_dir, 74, ("read-only file system", "{here}/readonly/run"), "the run folder"),
    BadInput("predict-one-unreadable", "predict", "`predict` on a folder where one image of 3 does not decode",
             _predict_one_unreadable, 0, ("skipped 1 unreadable images or frames", "broken.jpg"),
             "the other images' predictions"),
    BadInput("predict-nothing-readable", "predict", "`predict` on a folder where no image decodes",
             _predict_nothing_readable, 1, ("nothing could be read", "broken.jpg"), "no output folder is left"),
    BadInput("predict-missing-source", "predict", "`predict --source` naming no file",
             lambda world, here: Prepared(["predict", "--weights", str(world.run / "weights" / "best.safetensors"),
                                           "--source", str(here / "nope.jpg"), "--out", str(here / "p")]),
             2, ("{here}/nope.jpg",)),
    BadInput("export-bad-format", "predict", "`export --format` of an unknown format",
             lambda world, here: Prepared(["export", "--weights", str(world.run / "weights" / "best.safetensors"),
                                           "--format", "tflite", "--out", str(here / "e")]),
             2, ("tflite",)),
]
