"""The `yolotr` command line.

Each command lives in the module of the concern it belongs to. That module exposes
`configure_parser(parser)` and `run(args) -> int`; it is imported only when its command runs,
so `yolotr data check` does not pay for importing DeepSpeed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command path, module, one-line help). A command path of two words is a sub-command group.
COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("train",), "yolotr.engine.train_cli", "train a detector (single process, torchrun, accelerate, deepspeed)"),
    (("val",), "yolotr.eval.val_cli", "COCO mAP of a weights file on a data yaml"),
    (("predict",), "yolotr.eval.predict_cli", "draw and save detections for images, folders or shards"),
    (("export",), "yolotr.eval.export_cli", "export weights to ONNX and check parity with onnxruntime"),
    (("export-weights",), "yolotr.engine.export_weights_cli", "consolidate a run or checkpoint into one weights file"),
    (("plot",), "yolotr.eval.plot_cli", "redraw a run's plots from metrics.jsonl"),
    (("model", "info"), "yolotr.model.info", "layer table, parameters and GFLOPs of a model yaml"),
    (("data", "synth"), "yolotr.data.synth_cli", "write the synthetic detection set as shards"),
    (("data", "shard"), "yolotr.data.shard_cli", "convert a YOLO-txt or COCO dataset into shards"),
    (("data", "check"), "yolotr.data.check_cli", "verify shards against their index"),
    (("data", "export"), "yolotr.data.export_cli", "write a shard dataset as a YOLOv5 folder (images/, labels/)"),
    (("study", "stability"), "yolotr.study.stability", "the NaN stability ablation study"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolotr", description=__doc__.splitlines()[0])
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module, help_text in COMMANDS:
        if len(path) == 1:
            sub = top.add_parser(path[0], help=help_text)
        else:
            if path[0] not in groups:
                group = top.add_parser(path[0], help=f"{path[0]} commands")
                groups[path[0]] = group.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
            sub = groups[path[0]].add_parser(path[1], help=help_text)
        sub.set_defaults(_module=module)
        # Parsers are configured lazily in main(); only the chosen command's module is imported.
        sub.set_defaults(_parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass finds the command; the second parses its own options once its module is loaded.
    first_pass = [a for a in argv if a not in ("-h", "--help")]
    if not first_pass or first_pass[0].startswith("-"):
        return int(parser.parse_args(argv) is None)
    known, _ = parser.parse_known_args(first_pass)
    module = importlib.import_module(known._module)
    module.configure_parser(known._parser)
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
