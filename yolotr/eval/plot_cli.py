"""`yolotr plot RUN`: redraw a run's results.png and validation plots (PR, F1, P, R curves, confusion matrix)."""

from __future__ import annotations

import argparse

from yolotr import console


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (holds metrics.jsonl)")


def run(args: argparse.Namespace) -> int:
    from yolotr.eval.plots.run import redraw_run

    for path in redraw_run(args.run):
        console.result(str(path))
    return 0
