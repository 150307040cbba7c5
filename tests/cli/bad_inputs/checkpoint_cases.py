"""Bad checkpoints and weights files: damaged, cut short, of another model or recipe, or a pickle that runs code."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

from tests.cli.bad_inputs.common import NO_RUN, REPO, BadInput, Prepared, World, copy_run, flip_bytes, refused_train

V5_FIXTURE = REPO / "tests/weights/fixtures/tiny-yolov5s-full.pt"



def _resume(world: World, here: Path, damage: Callable[[Path], None], *args: str) -> Prepared:
    run = copy_run(world, here)
    damage(run)
    return Prepared(["train", "--config", str(run / "config.yaml"), "--resume", str(run), *args], kept=[run])


def _distcp(run: Path, step: int) -> Path:
    return next((run / "checkpoints" / f"step-{step:08d}" / "state").glob("*.distcp"))


def _flipped_newest(world: World, here: Path) -> Prepared:
    prepared = _resume(world, here, lambda run: flip_bytes(_distcp(run, 2)), "train.max_steps=2")

    def check(output: str) -> None:
        records = [json.loads(line) for line in (here / "run" / "metrics.jsonl").read_text().splitlines()]
        assert any(r.get("event") == "checkpoint_fallback" for r in records), records
        assert (here / "run" / "checkpoints" / "damaged" / "step-00000002").is_dir()

    prepared.check = check
    # Every checkpoint file keeps its bytes: step-1, and the damaged step-2 moved aside (the resumed run writes a new
    # step-2); metrics.jsonl is rewritten on purpose (its records after step 1 are superseded).
    prepared.kept = [here / "run" / "checkpoints"]
    return prepared


def _all_damaged(run: Path) -> None:
    flip_bytes(_distcp(run, 1))
    flip_bytes(_distcp(run, 2))


def _truncated_checkpoint(world: World, here: Path) -> Prepared:
    run = copy_run(world, here)
    victim = _distcp(run, 2)
    victim.write_bytes(victim.read_bytes()[:1000])
    return Prepared(["export-weights", str(victim.parent.parent), "--out", str(here / "w.safetensors")], kept=[run])


def _no_manifest(world: World, here: Path) -> Prepared:
    run = copy_run(world, here)
    (run / "checkpoints" / "step-00000002" / "manifest.json").unlink()
    return Prepared(["export-weights", str(run / "checkpoints" / "step-00000002"), "--out",
                     str(here / "w.safetensors")], kept=[run])


def _other_model(world: World, here: Path) -> Prepared:
    run = copy_run(world, here)
    return Prepared(["train", "--config", str(run / "config.yaml"), "--resume", str(run),
                     "model=configs/models/yolov5n.yaml"], kept=[run])


def _other_recipe(world: World, here: Path) -> Prepared:
    run = copy_run(world, here)
    return Prepared(["train", "--config", str(run / "config.yaml"), "--resume", str(run), "train.lr0=0.5"],
                    kept=[run])


def _not_a_run(world: World, here: Path) -> Prepared:
    return refused_train(world, here, "--resume", str(world.synth.parent))


def _pickle_with_code(world: World, here: Path) -> Prepared:
    import torch

    class Evil:
        def __reduce__(self):
            import os

            return os.system, ("echo pwned > " + str(here / "pwned"),)

    path = here / "evil.pt"
    torch.save({"model": Evil()}, path)  # a real torch archive, as a crafted download would be

    def check(output: str) -> None:
        assert not (here / "pwned").exists()

    return Prepared(["val", "--weights", str(path), "--data", str(world.synth)], check=check)


def _v5_unknown_layer(world: World, here: Path) -> Prepared:
    path = here / "v5-custom.pt"
    with zipfile.ZipFile(V5_FIXTURE) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"SPPF", b"SPPX")  # same length: the pickle stays well-formed
            target.writestr(item, data)
    return Prepared(["val", "--weights", str(path), "--data", str(world.synth)])


def _truncated_weights(world: World, here: Path) -> Prepared:
    path = here / "best.safetensors"
    path.write_bytes((world.run / "weights" / "best.safetensors").read_bytes()[:5000])
    return Prepared(["val", "--weights", str(path), "--data", str(world.synth)])


def _text_weights(world: World, here: Path) -> Prepared:
    path = here / "weights.pt"
    path.write_text("these are not weights\n")
    return Prepared(["predict", "--weights", str(path), "--source", str(world.synth.parent / "val"), "--out",
                     str(here / "preds")])


CHECKPOINTS = [
    BadInput("checkpoint-flipped-bytes", "checkpoint", "the newest checkpoint with 16 flipped bytes, resumed",
             _flipped_newest, 0, ("sha256", "step-00000002"),
             "every checkpoint file: the damaged one moved to checkpoints/damaged/; resumed from step 1"),
    BadInput("all-checkpoints-damaged", "checkpoint", "every checkpoint damaged, resumed",
             lambda world, here: _resume(world, here, _all_damaged), 5, ("every checkpoint is damaged",),
             "both checkpoints, moved to checkpoints/damaged/; metrics.jsonl"),
    BadInput("checkpoint-truncated", "checkpoint", "a checkpoint file cut short (`export-weights`)",
             _truncated_checkpoint, 2, ("{here}/run/checkpoints/step-00000002", "has 1000 bytes, manifest says"),
             "the run folder"),
    BadInput("checkpoint-no-manifest", "checkpoint", "a checkpoint without its manifest (`export-weights`)",
             _no_manifest, 2, ("{here}/run/checkpoints/step-00000002", "manifest"), "the run folder"),
    BadInput("resume-other-model", "checkpoint", "resuming a run with another model (`model=yolov5n.yaml`)",
             _other_model, 2, ("model",), "the run folder"),
    BadInput("resume-other-recipe", "checkpoint", "resuming with a changed recipe (`train.lr0=0.5`)",
             _other_recipe, 2, ("train.lr0", "0.5"), "the run folder"),
    BadInput("resume-not-a-run", "checkpoint", "`--resume` naming a folder that holds no run (a dataset)",
             _not_a_run, 2, ("--resume", "{synth}"), NO_RUN),
    BadInput("quarantine-not-json", "checkpoint", "a run's quarantine.json that is not json, resumed",
             lambda world, here: _resume(world, here, lambda run: (run / "quarantine.json").write_text("[oops")),
             2, ("{here}/run/quarantine.json", "not valid json"), "the run folder"),
    BadInput("pickle-with-code", "weights", "a .pt whose pickle calls `os.system`", _pickle_with_code,
             2, ("{here}/evil.pt", "refused", "system")),
    BadInput("yolov5-unknown-layer", "weights", "a yolov5 .pt with a layer yolotr does not know (`SPPX`)",
             _v5_unknown_layer, 2, ("{here}/v5-custom.pt", "SPPX")),
    BadInput("weights-truncated", "weights", "a .safetensors file cut short", _truncated_weights,
             2, ("{here}/best.safetensors",)),
    BadInput("weights-are-text", "weights", "a .pt that is a text file", _text_weights, 2, ("{here}/weights.pt",)),
]
