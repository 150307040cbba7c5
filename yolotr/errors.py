"""Errors meant for the user, and the exit codes they map to. The bottom layer: every package may raise these.

Library code raises a `YolotrError` (or a subclass) whose message says what is wrong and names the file, key or
sample; only the command line (`yolotr.cli`) turns it into one line on stderr and the exit code. The codes are
documented here once; the launchers read them (see launch/ and slurm/) and `exit.json` in the run folder holds them.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
"""A runtime failure (a crash, a lost node): a retry may succeed."""
EXIT_USAGE = 2
"""Bad config, arguments or input files: the same command fails again until the input is fixed."""
EXIT_DIVERGED = 3
"""Training diverged after the guard's rollback budget (guard.max_rollbacks): a retry diverges again."""
EXIT_DATA = 4
"""More corrupt samples than train.max_data_error_fraction allows: fix the data."""
EXIT_NO_VALID_CHECKPOINT = 5
"""A run to continue has checkpoints and none verifies: start a new run or resume a checkpoint you trust."""
EXIT_STORAGE = 74
"""The run folder cannot be written (disk full, read-only, gone; EX_IOERR): free space or fix the folder first."""
EXIT_PREEMPTED = 75
"""Preempted, checkpoint written (EX_TEMPFAIL): requeue, or continue with `yolotr train --resume RUN`."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C (128 + SIGINT, the shell's convention): after one, at a step with its checkpoint written; after
two, at once with the checkpoints committed before. Never retried: the user asked for the stop."""

RETRYABLE = (EXIT_FAILURE, EXIT_PREEMPTED)
"""The exits a launcher retries (and a process killed by a signal): the others fail the same way again. The shell
launchers hold the same list (launch/launcher_env.sh: retryable); a test keeps them equal."""


class YolotrError(Exception):
    """A failure the user can act on; the message is the whole story (no traceback is printed for it)."""

    exit_code: int = EXIT_FAILURE


class UsageError(YolotrError, ValueError):
    """Input that cannot be used as given: arguments, config values, files the user pointed at."""

    exit_code = EXIT_USAGE
