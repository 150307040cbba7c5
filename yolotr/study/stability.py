"""`yolotr study stability --out DIR [--quick] [--steps N] [--procs 2] [--jobs 2] [--cells a,b] [--lr NAME=VALUE]`

Recreates the Transformer-in-YOLOv5 NaN problem and measures what each remedy and each part of the guard does:
every cell of configs/study/stability.yaml is one real `yolotr train` run (the NaN-injection cells under torchrun)
on the synthetic set with a fixed seed. Writes DIR/stability.md, DIR/stability.csv and DIR/stability.png, keeps each
cell's run folder and log under DIR/runs/, and prints the table.

Exit codes: 0 when every cell produced a result (whatever the result), 1 when a cell crashed or timed out,
2 for a bad study file or arguments.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import time
from pathlib import Path

from yolotr import console
from yolotr.errors import UsageError

DEFAULT_STUDY = "configs/study/stability.yaml"

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = " ".join(__doc__.split("\n\n")[1].split())
    parser.add_argument("--out", required=True, type=Path, help="output folder (data, runs, table, plot)")
    parser.add_argument("--quick", action="store_true",
                        help="the quick profile and cell subset (under 10 minutes on 2 CPU cores)")
    parser.add_argument("--steps", type=int, help="optimizer steps per cell (default: the profile's)")
    parser.add_argument("--procs", type=int, default=2, help="ranks of the multi-process cells (default 2)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="processes run side by side (default 2); each gets an equal share of the CPU threads")
    parser.add_argument("--cells", help="comma-separated cell ids to run (default: all cells of the profile)")
    parser.add_argument("--lr", action="append", default=[], metavar="NAME=VALUE",
                        help="replace one of the study's learning rates, e.g. --lr stress=3.0 (repeatable)")
    parser.add_argument("--study", default=DEFAULT_STUDY, help=f"study definition (default {DEFAULT_STUDY})")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from yolotr.study.matrix import StudyError, load_study

    if args.procs < 1 or args.jobs < 1 or (args.steps is not None and args.steps < 1):
        raise UsageError("--procs, --jobs and --steps must be >= 1")
    try:
        study = load_study(args.study)
        command_line_rates = _learning_rates(args.lr, study)
        cells = study.select(args.quick, args.cells.split(",") if args.cells else None)
    except StudyError as exc:
        raise UsageError(str(exc)) from exc
    profile_name = "quick" if args.quick else "full"
    profile = study.profiles[profile_name]
    profile = replace(profile, learning_rates={**profile.learning_rates, **command_line_rates})
    if args.steps:
        profile = replace(profile, steps=args.steps)
    out = args.out
    command = "yolotr study stability " + shlex.join(_argv(args))
    return _run_study(study, cells, profile, profile_name, out, args, command)


def _run_study(study, cells, profile, profile_name, out: Path, args, command: str) -> int:
    from yolotr.study.conclusions import check_conclusions
    from yolotr.study.matrix import StudyError
    from yolotr.study.report import CellReport, markdown_table, plot_curves, write_csv, write_markdown
    from yolotr.study.results import read_run
    from yolotr.study.runner import plan_cells, prepare_data, run_cells
    from yolotr.study.setting import describe

    started = time.perf_counter()
    try:  # every cell is planned (and checked) before anything is written or trained
        launches = plan_cells(study, cells, profile, out / "data" / "data.yaml", out, args.procs)
    except StudyError as exc:
        raise UsageError(str(exc)) from exc
    prepare_data(out, profile, study.data_seed)
    log.info(f"study: {len(launches)} cells, profile {profile_name}: {profile.steps} steps, {profile.imgsz} px, "
             f"batch {profile.batch_size}, {profile.train_images} train / {profile.val_images} val images")

    def progress(launch, process) -> None:
        status = "timed out" if process.timed_out else f"exit {process.returncode}"
        log.info(f"study: {launch.cell.id}: {status} after {process.wall_s:.0f} s")

    processes = run_cells(launches, args.jobs, on_done=progress)
    reports = []
    for launch in launches:  # the study file's order, whatever order the cells finished in
        result = read_run(launch.run_dir)
        setting = describe(launch.run_dir, result.steps_per_epoch)
        reports.append(CellReport(launch.cell, setting, result, processes[launch.cell.id]))

    checks = check_conclusions(reports)
    elapsed = time.perf_counter() - started
    profile_text = (f"Profile `{profile_name}`: {profile.steps} optimizer steps per cell, {profile.imgsz} px, "
                    f"global batch {profile.batch_size}, synthetic set of {profile.train_images} train / {profile.val_images} val "
                    f"images (seed {study.data_seed}), bf16 autocast; the study took {elapsed / 60:.1f} min "
                    f"({args.jobs} processes side by side).")
    write_markdown(out / "stability.md", reports, command=command, profile_text=profile_text,
                   notes=[str(c) for c in checks])
    write_csv(out / "stability.csv", reports)
    plot_curves(out / "stability.png", reports)
    console.result(markdown_table(reports))
    console.result()
    for check in checks:
        console.result(f"- {check}")
    console.result(f"\nwrote {out / 'stability.md'}, {out / 'stability.csv'}, {out / 'stability.png'} "
                   f"in {elapsed / 60:.1f} min")
    failed = [r.cell.id for r in reports if r.process.timed_out or r.result.exit_code is None]
    if failed:
        log.warning(f"study: cells without a result: {', '.join(failed)} (logs under {out / 'runs'})")
    return 1 if failed else 0


def _learning_rates(pairs: list[str], study) -> dict[str, float]:
    """`--lr stress=3.0` → {"stress": 3.0}, checked against the study's own names."""
    from yolotr.study.matrix import StudyError

    values = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in study.learning_rates:
            known = ", ".join(study.learning_rates)
            raise StudyError("--lr", name or pair, f"not one of the study's learning rates ({known})")
        try:
            values[name] = float(value)
        except ValueError:
            raise StudyError("--lr", name, f"{value!r} is not a number") from None
        if not values[name] > 0:
            raise StudyError("--lr", name, f"must be > 0, got {value}")
    return values


def _argv(args: argparse.Namespace) -> list[str]:
    """The command line that reproduces this run, for the report."""
    argv = ["--out", str(args.out)]
    if args.quick:
        argv.append("--quick")
    for flag, value, default in (("--steps", args.steps, None), ("--procs", args.procs, 2), ("--jobs", args.jobs, 2),
                                 ("--cells", args.cells, None), ("--study", args.study, DEFAULT_STUDY)):
        if value != default:
            argv += [flag, str(value)]
    for pair in args.lr:
        argv += ["--lr", pair]
    return argv


__all__ = ["configure_parser", "run"]
