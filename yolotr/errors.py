"""Errors meant for the user, and the exit codes they map to. The bottom layer: every package may raise these.

Library code raises a `YolotrError` (or a subclass) whose message says what is wrong and names the file, key or
sample; only the command line (`yolotr.cli`) turns it into one line on stderr and the exit code. The codes are
documented here once; the launchers read them (see launch/ and slurm/) and `exit.json` in the run folder holds them.
"""

from __future__ import annotations

import errno
import os

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
"""Preempted, checkpoint written (EX_TEMPFAIL): requeue and run the same command again."""

EXPLAINED = (EXIT_USAGE, EXIT_DIVERGED, EXIT_DATA, EXIT_NO_VALID_CHECKPOINT, EXIT_STORAGE, EXIT_PREEMPTED)
"""The exits yolotr chooses itself, after saying why in its own line: a launcher's report of them (torch's
ChildFailedError traceback) adds nothing, and launch/quiet_agent.py leaves it out."""
RETRYABLE = (EXIT_FAILURE, EXIT_PREEMPTED)
"""The exits a launcher retries (and a process killed by a signal): the others fail the same way again. The shell
launchers hold the same list (launch/launcher_env.sh: retryable); a test keeps them equal."""


class YolotrError(Exception):
    """A failure the user can act on; the message is the whole story (no traceback is printed for it)."""

    exit_code: int = EXIT_FAILURE
    same_on_every_rank: bool = False
    """Every rank of a node meets it alike (a config value): the command line lets local rank 0 alone say it, so that
    a launcher's N ranks print one line, not N."""


class UsageError(YolotrError, ValueError):
    """Input that cannot be used as given: arguments, config values, files the user pointed at."""

    exit_code = EXIT_USAGE


STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})
"""The errors of a file system that cannot take a write (full, over quota, read-only, failing): the same write fails
again until someone frees space or fixes the folder."""
_STORAGE_WORDS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EIO: "input/output error"}


class StorageError(YolotrError):
    """The run folder, or a file in it, cannot be written (disk full, read-only, quota): EXIT_STORAGE, which
    launchers do not retry."""

    exit_code = EXIT_STORAGE

    @classmethod
    def writing(cls, path: str | os.PathLike, error: OSError) -> StorageError | None:
        """The error for a write of `path` that failed with `error`, naming the file, when the storage is the cause;
        None for any other OSError (a bug, a missing folder), which stays what it is."""
        if error.errno not in STORAGE_ERRNOS:
            return None
        return cls(f"{_STORAGE_WORDS[error.errno]} writing {path}: free space or fix the folder, then run the same "
                   "command again to resume")
