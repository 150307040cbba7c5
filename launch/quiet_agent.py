"""Runs `accelerate launch` or `torchrun` in this process, as their own commands would, with one difference: when
the first worker to fail exited with one of yolotr's own codes (yolotr/errors.py: EXPLAINED, e.g. 2 for a bad config
key), that worker has already said why in one line, so torch's elastic agent's report of it (its "failed (exitcode:
N)" log line and the ChildFailedError traceback) is left out, and the launcher exits with the worker's code instead
of 1. A crash (exit 1, a signal) keeps the full report.

    python launch/quiet_agent.py accelerate launch ARGS...
    python launch/quiet_agent.py torchrun ARGS...

Used by launch/launcher_env.sh (run_launcher); a plain `accelerate launch` still prints torch's report.
"""

from __future__ import annotations

import logging
import re
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from yolotr.errors import EXPLAINED

# torch's agent logs "failed (exitcode: 2) local_rank: 0 (pid: ...) of binary: ..." before raising ChildFailedError.
_FAILED = re.compile(r"failed \(exitcode: (-?\d+)\)")
AGENT_LOGGER = "torch.distributed.elastic.multiprocessing.api"


class _ExplainedFailures(logging.Filter):
    """Drops the agent's line about a worker that exited with one of yolotr's own codes."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = _FAILED.search(record.getMessage())
        return not (found and int(found.group(1)) in EXPLAINED)


def _launcher_main(argv: list[str]):
    """The launcher's entry point, and the argv it expects."""
    if argv[:1] == ["torchrun"]:
        from torch.distributed.run import main

        return main, argv
    if argv[:2] == ["accelerate", "launch"]:
        from accelerate.commands.accelerate_cli import main

        return main, argv
    sys.exit(f"quiet_agent.py: expected 'accelerate launch ...' or 'torchrun ...', got {' '.join(argv[:2])!r}")


def main() -> int:
    entry, argv = _launcher_main(sys.argv[1:])
    sys.argv = argv
    logging.getLogger(AGENT_LOGGER).addFilter(_ExplainedFailures())
    try:
        entry()
    except ChildFailedError as failure:
        _, first = failure.get_first_failure()
        if first.exitcode not in EXPLAINED:
            raise
        return first.exitcode
    return 0


if __name__ == "__main__":
    sys.exit(main())
