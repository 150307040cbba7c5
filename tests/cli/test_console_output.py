"""What yolotr says goes two ways: a command's results through yolotr/console.py (stdout), everything else through
the `yolotr` logger, whose level --quiet and --verbose choose (yolotr/log.py). No module prints on its own."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import yolotr

ROOT = Path(yolotr.__file__).parent
REPO = ROOT.parent
# The one module that writes to stdout and stderr itself: a command's results, and the CLI's last line on a failure.
CONSOLE_WRITERS = {ROOT / "console.py"}


def _direct_output(tree: ast.AST) -> list[int]:
    """Lines of `print(...)` calls and of `sys.stdout.write` / `sys.stderr.write` calls."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "print":
            lines.append(node.lineno)
        elif (isinstance(func, ast.Attribute) and func.attr in ("write", "writelines")
              and isinstance(func.value, ast.Attribute) and func.value.attr in ("stdout", "stderr")
              and isinstance(func.value.value, ast.Name) and func.value.value.id == "sys"):
            lines.append(node.lineno)
    return lines


def test_no_module_prints_except_the_console_writer():
    found = [f"{path.relative_to(REPO)}:{line}" for path in sorted(ROOT.rglob("*.py")) if path not in CONSOLE_WRITERS
             for line in _direct_output(ast.parse(path.read_text(), str(path)))]
    assert not found, "print through yolotr.console (a command's results) or a logger (everything else): " + ", ".join(found)


def test_the_check_finds_a_print_and_a_stderr_write():
    source = "import sys\nprint('x')\nsys.stderr.write('y')\nlog.info('z')\nfile.write('w')\n"
    assert _direct_output(ast.parse(source)) == [2, 3]


def _yolotr(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "RANK"}
    return subprocess.run([sys.executable, "-m", "yolotr", *args], capture_output=True, text=True, cwd=REPO,
                          env={**env, "OMP_NUM_THREADS": "1"}, timeout=120, check=True)


def test_quiet_silences_info_lines_and_verbose_shows_debug_lines_and_neither_touches_the_result(tmp_path):
    tiny = ["--train", "2", "--val", "1", "--imgsz", "64"]
    normal = _yolotr("data", "synth", "--out", str(tmp_path / "a"), *tiny)
    quiet = _yolotr("-q", "data", "synth", "--out", str(tmp_path / "b"), *tiny)  # before the command
    verbose = _yolotr("data", "synth", "--out", str(tmp_path / "c"), "--verbose", *tiny)  # among the options

    assert "[yolotr] data: drawing 2 train images of 64 px" in normal.stderr
    assert "debug:" not in normal.stderr
    assert quiet.stderr == ""
    assert "[yolotr] data: drawing 2 train images" in verbose.stderr
    assert "[yolotr] debug: shards: wrote " in verbose.stderr and "shard-000000.tar: 2 samples" in verbose.stderr
    for result in (normal, quiet, verbose):
        assert result.stdout.startswith("wrote 2 train and 1 val images of 4 classes to ")


def test_quiet_and_verbose_together_are_refused(tmp_path):
    result = subprocess.run([sys.executable, "-m", "yolotr", "data", "synth", "--out", str(tmp_path), "-q", "-v"],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
