"""`python -m tests.cli.bad_inputs REPORT.jsonl`: docs/reliability.md's table from the messages the test run wrote
(`YOLOTR_BAD_INPUTS_REPORT=REPORT.jsonl pytest tests/cli/test_bad_inputs.py`)."""

import sys
from pathlib import Path

from tests.cli.bad_inputs.common import render_table

print(render_table(Path(sys.argv[1]).read_text().splitlines()))
