"""The catalogue of bad inputs (issue #16): each a broken config, data set, checkpoint, weights file or launch, the
`yolotr` command that meets it, and what the user must get back: the exit code, the words that name the culprit,
and, for a counted skip, the count. tests/cli/test_bad_inputs.py runs them; docs/reliability.md lists them.

Each `prepare` function builds its broken input under its own folder (from the shared `World`: a synthetic set, a
YOLO-format copy of it, a tiny trained run) and returns the command; the strings in `says` are looked for in stderr
(or, for a counted skip, in stdout + stderr), `{here}` standing for the case's folder.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class World:
    """What the cases start from, made once per module (never modified by a case: they copy what they damage)."""

    synth: Path  # a shard set's data.yaml (`yolotr data synth`, 64 px)
    yolo: Path  # the same set as a YOLOv5 folder's data.yaml (`yolotr data export`)
    model: Path  # a tiny yolotr model yaml
    run: Path  # a finished 2-step run with checkpoints step-1 and step-2
    run_config: Path  # the config it ran with


@dataclass
class Prepared:
    argv: list[str]
    kept: list[Path] = field(default_factory=list)
    """Folders whose files must all still be there, byte for byte (moved aside is kept), after the command."""
    check: Callable[[str], None] | None = None
    """A further check on the output (a counted skip: its count in a report)."""
    cleanup: Callable[[], None] | None = None
    """Undoes what the input needed beyond files (a mount)."""
    absent: list[Path] = field(default_factory=list)
    """What the command must not have made (a run folder for a config it refused)."""


@dataclass(frozen=True)
class BadInput:
    id: str
    area: str  # config, data, checkpoint, weights, launch, predict
    what: str  # the bad input, in words (docs/reliability.md)
    prepare: Callable[[World, Path], Prepared]
    code: int
    says: tuple[str, ...]
    kept: str = "nothing is written"  # what is kept, in words


def train_config(world: World, here: Path, **sections) -> Path:
    cfg = yaml.safe_load(world.run_config.read_text())
    cfg["run"]["dir"] = str(here / "run")
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    path = here / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


NO_RUN = "no run folder is made"
STARTED = "the run folder it made holds why it stopped (exit.json)"


def train(world: World, here: Path, *overrides: str, **sections) -> Prepared:
    return Prepared(["train", "--config", str(train_config(world, here, **sections)), *overrides])


def refused_train(world: World, here: Path, *overrides: str, **sections) -> Prepared:
    """A start refused before its run folder is settled: none must be made."""
    prepared = train(world, here, *overrides, **sections)
    prepared.absent = [here / "run"]
    return prepared


def started_train(world: World, here: Path, *overrides: str, **sections) -> Prepared:
    """A start that fails once its run folder exists: the folder must say why."""
    prepared = train(world, here, *overrides, **sections)
    prepared.check = lambda output: _stopped_with(here / "run", 2)
    return prepared


def _stopped_with(run: Path, code: int) -> None:
    status = json.loads((run / "exit.json").read_text())
    assert status["exit_code"] == code and status["reason"], status


def copy_run(world: World, here: Path) -> Path:
    run = here / "run"
    shutil.copytree(world.run, run)
    # The copy's config must point at itself, as the original's does.
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["run"]["dir"] = str(run)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run


def copy_yolo(world: World, here: Path) -> Path:
    root = here / "yolo"
    shutil.copytree(world.yolo.parent, root)
    doc = yaml.safe_load((root / "data.yaml").read_text())
    doc["path"] = str(root)  # `yolotr data export` writes the absolute path of the original
    (root / "data.yaml").write_text(yaml.safe_dump(doc))
    return root


def flip_bytes(path: Path, at: int = 100, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    data[at:at + count] = bytes(b ^ 0xFF for b in data[at:at + count])
    path.write_bytes(bytes(data))


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())



def render_table(report_lines: list[str], width: int = 220) -> str:
    """docs/reliability.md's table from the json lines `YOLOTR_BAD_INPUTS_REPORT` collected: the messages as the
    runs printed them, with the test's temporary folders cut from the paths."""
    rows = ["| # | area | bad input | what yolotr says | exit / skip | what is kept |", "|---:|---|---|---|---|---|"]
    for number, line in enumerate(report_lines, start=1):
        entry = json.loads(line)
        message = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/(test_a_bad_input[^/]+/[^/]+/|bad-inputs\d+/)", "",
                         entry["message"])
        message = message if len(message) <= width else message[: width - 1] + "…"
        code = entry["code"]
        outcome = "0, counted" if code == 0 else str(code)  # a 0 here is always a skip, a drop or a fallback, counted
        cells = [str(number), entry["area"], entry["what"], f"`{message.replace('|', '/')}`", outcome, entry["kept"]]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
