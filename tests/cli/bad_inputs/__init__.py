"""The catalogue of bad inputs of issue #16, by area; tests/cli/test_bad_inputs.py runs every case and
docs/reliability.md lists them (`python -m tests.cli.bad_inputs REPORT.jsonl` renders its table)."""

from tests.cli.bad_inputs.checkpoint_cases import CHECKPOINTS
from tests.cli.bad_inputs.common import REPO, BadInput, World
from tests.cli.bad_inputs.config_cases import CONFIG
from tests.cli.bad_inputs.data_cases import DATA, YOLO
from tests.cli.bad_inputs.launch_cases import LAUNCH
from tests.cli.bad_inputs.names_cases import NAMES

CASES: list[BadInput] = CONFIG + DATA + YOLO + CHECKPOINTS + LAUNCH + NAMES

__all__ = ["CASES", "REPO", "BadInput", "World"]
