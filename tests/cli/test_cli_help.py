"""The command tree: every command and group answers --help without importing torch; options may stand anywhere
among train's `key=value` overrides."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from yolotr.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[2]

# Runs every `--help` in one fresh interpreter and reports, per command, its exit code, the start of its output and
# whether torch had been imported by then.
WALK_HELP = """
import contextlib, io, json, sys
from yolotr.cli import COMMANDS, main
paths = [[]] + sorted({path[:1] for path, _, _ in COMMANDS}) + [list(path) for path, _, _ in COMMANDS if len(path) > 1]
report = []
for path in paths:
    out = io.StringIO()
    code = None
    with contextlib.redirect_stdout(out):
        try:
            main([*path, "--help"])
        except SystemExit as exit:
            code = exit.code
    report.append({"path": list(path), "code": code, "help": out.getvalue(), "torch": "torch" in sys.modules})
print(json.dumps(report))
"""


def test_every_command_and_group_answers_help_with_exit_0_and_without_importing_torch():
    result = subprocess.run([sys.executable, "-c", WALK_HELP], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr

    report = json.loads(result.stdout)

    walked = {tuple(entry["path"]) for entry in report}
    assert {path for path, _, _ in COMMANDS} <= walked and ("data",) in walked and () in walked
    for entry in report:
        name = " ".join(["yolotr", *entry["path"]])
        assert entry["code"] == 0, f"{name} --help exited {entry['code']}"
        assert entry["help"].startswith(f"usage: {name} "), entry["help"][:200]
        assert not entry["torch"], f"{name} --help imported torch"


def test_every_option_of_every_command_has_a_description():
    from yolotr.cli import build_parser

    _, commands = build_parser()
    for path, (parser, _) in commands.items():
        for action in parser._actions:
            if action.help is None and action.dest != "help":
                pytest.fail(f"yolotr {' '.join(path)} {'/'.join(action.option_strings) or action.dest}: no help")


def test_train_accepts_options_between_and_after_its_overrides(tmp_path, capsys):
    data = tmp_path / "data.yaml"
    data.write_text("train: t\nval: v\nnames: [a]\n")  # --print-config checks that the file exists, not its splits

    code = main(["train", "--config", "configs/train/demo.yaml", "model=configs/models/yolotr-n.yaml",
                 "--resume", "none", f"data={data}", f"run.dir={tmp_path / 'r'}", "--print-config", "train.epochs=2"])

    printed = capsys.readouterr().out
    assert code == 0
    assert "model: configs/models/yolotr-n.yaml" in printed and "epochs: 2" in printed and "resume: none" in printed
    assert not (tmp_path / "r").exists()


def test_an_unknown_option_is_answered_with_trains_own_usage(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--config", "configs/train/demo.yaml", "model=M", "--resume", "none", "data=D", "--bogus"])

    err = capsys.readouterr().err
    assert exit.value.code == 2
    assert err.startswith("usage: yolotr train ") and "unrecognized arguments: --bogus" in err


def test_a_group_without_a_subcommand_names_what_is_missing(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["data"])

    assert exit.value.code == 2
    assert "usage: yolotr data" in capsys.readouterr().err


def test_a_config_error_is_answered_without_importing_torch():
    probe = ("import sys; from yolotr.cli import main; code = main(['train', 'train.lr=1']); "
             "print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)

    assert result.stdout.split() == ["2", "False"], result.stderr
    assert "config key 'train.lr'" in result.stderr and "did you mean" in result.stderr
