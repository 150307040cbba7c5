"""`yolotr train --config FILE [key=value ...]` — also `python -m yolotr train` and
`accelerate launch -m yolotr train`, or under torchrun; `device=0,1` or `nproc=2` start the ranks here
(engine/rank_launch.py). Keys take ultralytics' names too (config/aliases.py, listed by `yolotr train --help`).

Exit codes: 0 done; 2 bad config (before any process group starts); 3 diverged (rollback budget exhausted);
75 preempted (checkpoint written: run the command again with `--resume`; a Slurm requeue or an elastic restart
continues by itself).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from yolotr import console
from yolotr.config.aliases import TOP_LEVEL_KEYS, help_table, launch_settings, resolve_name, translate_overrides
from yolotr.errors import YolotrError

# YOLOv5's train.py flags whose key=value name is not the flag's own (`--img 640` is `imgsz=640`).
YOLOV5_FLAGS = {"img": "imgsz", "img_size": "imgsz", "batch_size": "batch", "cfg": "model", "weights": "train.weights"}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = help_table()
    parser.add_argument("--config", help="training config yaml (configs/train/*.yaml); defaults when omitted")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, values as YAML: a key path (train.lr0=0.01), a field name (lr0=0.01) "
                             "or one of ultralytics' names below (epochs=3 imgsz=640 batch=16)")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="auto|none|PATH",
                        help="continue a run (same as checkpoint.resume=...); alone: auto, the newest run of run.dir")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    # Light imports only until the config is read: a typo in a key is answered at once, without loading torch.
    from yolotr.checkpoint.run_status import write_status_file
    from yolotr.config import dump_config, load_config

    overrides = list(args.overrides)
    if args.resume and "=" in args.resume and not Path(args.resume).exists():
        overrides.insert(0, args.resume)  # `--resume key=value`: a bare --resume followed by an override
        args.resume = "auto"
    if args.resume:
        overrides.append(f"checkpoint.resume={args.resume}")
    try:
        launch, overrides = launch_settings(overrides)
        plan = rank_plan(launch)
        cfg = load_config(args.config, translate_overrides(overrides))  # checked here, before any rank starts
        if args.print_config:  # with the run folder this start would take (launch scripts read it)
            from yolotr.checkpoint.run_folder import choose_run_folder

            folder = choose_run_folder(cfg.run.dir, cfg.checkpoint.resume)
            cfg.run.dir, cfg.checkpoint.resume = str(folder.path), folder.resume
            console.result(dump_config(cfg), end="")
            return 0
        if plan.ranks > 1:
            from yolotr.engine.rank_launch import launch_ranks

            verbosity = {"quiet": ["--quiet"], "verbose": ["--verbose"]}.get(args.verbosity, [])
            config = ["--config", str(args.config)] if args.config else []
            return launch_ranks(plan.ranks, [*config, *overrides, *verbosity], gpus=plan.gpus).code
        if plan.gpus is not None:
            from yolotr.engine.device_choice import apply_device

            apply_device(plan.gpus)
        return train(cfg)
    except YolotrError as error:  # the launch scripts read the real code: theirs is 1 for any failed worker
        write_status_file(exit_code=error.exit_code)
        raise


def rank_plan(launch: dict, source: str = "command line"):
    """The ranks and devices `device=` and `nproc=` ask for (engine/device_choice.py)."""
    from yolotr.engine.device_choice import check_gpus, plan_ranks
    from yolotr.engine.rank_launch import under_a_launcher

    plan = plan_ranks(launch.get("device"), launch.get("nproc"), under_launcher=under_a_launcher(), source=source)
    check_gpus(plan.gpus or (), source)
    return plan


def usage_hint(argv: list[str]) -> str | None:
    """For `yolotr train --data D --epochs 3 --img 64` (YOLOv5's flags), the key=value form they mean."""
    known = {"--config", "--resume", "--print-config", "--quiet", "--verbose", "--help"}
    pieces, i = [], 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("--") or token.split("=", 1)[0] in known:
            continue
        flag, has_value, value = token[2:].partition("=")
        if not has_value:
            takes_value = i < len(argv) and not argv[i].startswith("-") and "=" not in argv[i]
            value = argv[i] if takes_value else "true"
            i += takes_value
        name = flag.replace("-", "_")
        name = YOLOV5_FLAGS.get(name, name)
        try:
            known_name = name in TOP_LEVEL_KEYS or resolve_name(name) != name
        except YolotrError:  # ultralytics has it, yolotr not yet: the train command will say so
            known_name = True
        if not known_name:
            continue
        pieces.append(f"{name}={value}")
    if not pieces:
        return None
    return f"yolotr train takes settings as key=value: did you mean {' '.join(pieces)}? (yolotr train --help)"


def train(cfg, callbacks=None) -> int:
    """One training run of a loaded config, in this process (with the launcher's other ranks, if any): what
    `yolotr train` does after reading its config, and what `yolotr.YOLO.train()` calls, with its user callbacks
    (engine/callbacks.py). Returns the exit code."""
    from yolotr.checkpoint.run_folder import settle_run_folder
    from yolotr.engine.preemption import PREEMPTION

    PREEMPTION.install(cfg.checkpoint.preempt_signals)  # before the slow start-up: a notice then is not fatal
    # Threads: one process per core group; an oversubscribed CPU is 10x slower. Respect the user's setting.
    if not os.environ.get("OMP_NUM_THREADS") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["WORLD_SIZE"])))

    from yolotr.checkpoint.run_status import mark_running, write_exit_file, write_status_file
    from yolotr.distributed import destroy_process_group
    from yolotr.engine.runtime import setup_runtime, stop_with_the_launcher
    from yolotr.engine.start_checks import check_before_start
    from yolotr.engine.trainer import Trainer

    check_before_start(cfg)  # before the process group and the run folder: a refused start leaves nothing behind
    stop_with_the_launcher()  # a rank whose launcher is killed stops too, instead of training on alone
    runtime = setup_runtime(cfg)
    folder = settle_run_folder(cfg)  # a new runs/exp2 ... or the run to resume, chosen by rank 0 for every rank
    write_status_file(run_dir=cfg.run.dir)  # a launcher's retry resumes this folder
    if runtime.is_main:
        mark_running(Path(cfg.run.dir))
    try:
        try:
            trainer = Trainer(cfg, runtime, callbacks,
                              fence=folder.lock.check_held if folder.lock is not None else None)
        except YolotrError as error:  # e.g. a data yaml whose split is missing: the run folder says why, like any exit
            if runtime.is_main:
                with contextlib.suppress(OSError):
                    write_exit_file(Path(cfg.run.dir), error.exit_code, str(error), 0)
            raise
        code = trainer.fit()
    finally:
        if folder.lock is not None:
            folder.lock.release()
    write_status_file(exit_code=code)
    import gc
    import multiprocessing

    gc.collect()  # a DataLoader iterator held in a reference cycle is shut down now, by torch, while it still can
    for child in multiprocessing.active_children():  # a DataLoader worker left behind by an error path: it ignores
        child.kill()  # SIGTERM (producers.py), and multiprocessing's exit would wait for it forever
    runtime.accelerator.wait_for_everyone()
    runtime.accelerator.end_training()
    destroy_process_group()
    return code
