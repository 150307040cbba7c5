"""ultralytics' and YOLOv5's ways of naming settings that `yolotr train` refuses, each with what to write instead."""

from __future__ import annotations

import dataclasses

from tests.cli.bad_inputs.common import NO_RUN, BadInput, Prepared, refused_train

NAMES = [
    BadInput("ultralytics-name-not-supported", "config", "an ultralytics name yolotr has no equivalent of yet: "
             "`patience=50`", lambda world, here: refused_train(world, here, "patience=50"),
             2, ("config key 'patience'", "is not supported yet", "best.safetensors")),
    BadInput("name-with-its-key", "config", "an ultralytics name with the key it stands for: "
             "`batch=8 train.batch_size=16`", lambda world, here: refused_train(world, here, "batch=8",
                                                                               "train.batch_size=16"),
             2, ("config key 'train.batch_size'", "which batch sets too: give one of them")),
    BadInput("yolov5-flags", "config", "YOLOv5's flags: `--epochs 3 --img 64`",
             lambda world, here: Prepared([*refused_train(world, here).argv, "--epochs", "3", "--img", "64"],
                                          absent=[here / "run"]),
             2, ("unrecognized arguments: --epochs", "did you mean epochs=3 imgsz=64?")),
    BadInput("device-not-here", "config", "a GPU this machine does not have: `device=7`",
             lambda world, here: refused_train(world, here, "device=7"),
             2, ("config key 'device'", "asks for GPU 7, but")),
]
NAMES = [dataclasses.replace(case, kept=NO_RUN) for case in NAMES]
