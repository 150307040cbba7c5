"""The `yolotr` command line.

Each command lives in a light `*_cli` module beside the concern it belongs to. That module exposes
`configure_parser(parser)` and `run(args) -> int` and imports nothing heavy at its top: the whole parser tree is
built from them, so `yolotr <anything> --help` answers without importing torch, and a command's heavy modules are
imported only inside its `run`.

Options may stand anywhere among a command's positional arguments (`yolotr train --config C data=D --resume auto`),
as ultralytics accepts them. A `YolotrError` raised by library code becomes one line on stderr and its exit code
(2 for usage, 1 for a runtime failure); anything else is a bug and keeps its traceback. A config error, the same on
every rank a launcher started, is said by each node's local rank 0 only.

Every command takes `--quiet` / `-q` (warnings and errors only, no progress) and `--verbose` / `-v` (debug lines
too), anywhere among its arguments or before the command: they set the level of yolotr's log (yolotr/log.py).
What a command prints as its result (yolotr/console.py) is not affected.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from types import ModuleType

from yolotr import console
from yolotr.errors import YolotrError
from yolotr.log import set_verbosity

# (command path, module, one-line help). A command path of two words is a sub-command group.
COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("train",), "yolotr.engine.train_cli", "train a detector (single process, torchrun, accelerate, deepspeed)"),
    (("val",), "yolotr.eval.val_cli", "COCO mAP, per-class table, confusion matrix and curves of a weights file"),
    (("predict",), "yolotr.eval.predict_cli", "detect on images, folders, globs, lists, videos, webcams, streams, shards"),
    (("export",), "yolotr.export.export_cli", "export weights to ONNX (optionally with NMS), TorchScript, OpenVINO, TensorRT"),
    (("export-weights",), "yolotr.checkpoint.export_weights_cli", "consolidate a run or checkpoint into one weights file"),
    (("plot",), "yolotr.eval.plot_cli", "redraw a run's plots from metrics.jsonl"),
    (("model", "info"), "yolotr.model.info_cli", "layer table, parameters and GFLOPs of a model yaml"),
    (("data", "synth"), "yolotr.data.synth_cli", "write the synthetic detection set as shards"),
    (("data", "shard"), "yolotr.data.shard_cli", "convert a YOLO-txt or COCO dataset into shards"),
    (("data", "check"), "yolotr.data.check_cli", "verify shards against their index"),
    (("data", "export"), "yolotr.data.export_cli", "write a shard dataset as a YOLOv5 folder (images/, labels/)"),
    (("study", "stability"), "yolotr.study.stability", "the NaN stability ablation study"),
    (("drill",), "yolotr.drill.drill_cli", "a fault campaign on one training job, checked bit for bit against a run without"),
]
SAY_IT_FIRST_S = 3.0  # how long the other ranks wait for local rank 0 to say a config error they all met

GROUP_HELP = {"model": "model commands", "data": "dataset commands", "study": "studies"}
VERBOSITY_FLAGS = {"--quiet": "quiet", "-q": "quiet", "--verbose": "verbose", "-v": "verbose"}


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    """--quiet / --verbose on a command's own parser: accepted anywhere among its arguments."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const="quiet", default=None,
                       help="warnings and errors only, no progress bars")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const="verbose",
                       help="debug lines too")


def build_parser() -> tuple[argparse.ArgumentParser, dict[tuple[str, ...], tuple[argparse.ArgumentParser, ModuleType]]]:
    """The top-level parser and, per command path, its own parser and module."""
    parser = argparse.ArgumentParser(prog="yolotr", description=__doc__.splitlines()[0])
    _add_verbosity(parser)  # shown in the help; main() hands these flags to the command
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    commands = {}
    for path, module_name, help_text in COMMANDS:
        if len(path) == 1:
            sub = top.add_parser(path[0], help=help_text, description=help_text)
        else:
            if path[0] not in groups:
                group = top.add_parser(path[0], help=GROUP_HELP[path[0]], description=GROUP_HELP[path[0]])
                groups[path[0]] = group.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
            sub = groups[path[0]].add_parser(path[1], help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.configure_parser(sub)
        _add_verbosity(sub)
        commands[path] = (sub, module)
    return parser, commands


def find_command(argv: list[str], commands) -> tuple[tuple[str, ...] | None, list[str]]:
    """The command path that `argv` starts with, and the rest of it; (None, argv) when it names no command."""
    for length in (2, 1):
        if tuple(argv[:length]) in commands:
            return tuple(argv[:length]), argv[length:]
    return None, argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    leading = []  # `yolotr --quiet train ...`: the flags before the command are the command's too
    while argv and argv[0] in VERBOSITY_FLAGS:
        leading.append(argv.pop(0))
    parser, commands = build_parser()
    path, rest = find_command(argv, commands)
    if path is None:  # top-level or group help, or a usage error: argparse prints it and exits
        parser.parse_args(argv)
        return 2
    command_parser, module = commands[path]
    # Intermixed: the positional overrides of `train` may come before, between and after its options.
    try:
        args = command_parser.parse_intermixed_args(leading + rest)
    except SystemExit as exit:  # argparse has printed its usage line; a command may add what was meant
        hint = getattr(module, "usage_hint", None)
        if exit.code == 2 and hint is not None and (line := hint(rest)):
            console.error(line)
        raise
    set_verbosity(args.verbosity or "normal")  # also when main() runs again in one process (tests, the API)
    try:
        return int(module.run(args) or 0)
    except YolotrError as error:
        if not (error.same_on_every_rank and os.environ.get("LOCAL_RANK", "0") != "0"):
            console.error(f"yolotr {' '.join(path)}: error: {error}")
        elif os.environ.get("WORLD_SIZE", "1") != "1":
            # Every rank meets it and local rank 0 says it: the others leave a moment later, since a launcher stops
            # the remaining ranks as soon as the first one exits, and rank 0 must not be stopped before its line.
            time.sleep(SAY_IT_FIRST_S)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
