"""yolotr's console log: its messages go through the standard `logging` module, under the `yolotr` logger.

- **Levels.** Info by default; `--quiet` keeps warnings and errors only, `--verbose` adds debug lines (the CLI calls
  `set_verbosity`). API users set the same (`yolotr.log.set_verbosity("quiet")`), or the level of
  `logging.getLogger("yolotr")` directly. Progress bars and progress lines are info: `--quiet` has none.
- **Ranks.** Info and debug lines come from rank 0 only (the launcher's `RANK`), so that 8 ranks do not say the same
  thing 8 times; warnings and errors come from every rank and name it, since what one rank meets (a corrupt sample,
  a full /dev/shm) the others may not. A line that every rank must say at any level passes `extra=EVERY_RANK`.
- **Where.** One handler on the `yolotr` logger writes `[yolotr] message`, `[yolotr] warning: message`,
  `[yolotr rank 1] warning: message` to stderr: the stderr of the moment, so a redirect or pytest's capture sees them.
  The logger does not propagate to the root logger, whose handlers (an application's basicConfig) would print each
  line twice.

What a command was asked for (a table, a json object, the files it wrote) is not a log line: yolotr/console.py.
"""

from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "yolotr"
EVERY_RANK = {"every_rank": True}
"""`log.info(..., extra=EVERY_RANK)`: said by every rank, not only rank 0 (e.g. the rank that converts a dataset)."""
VERBOSITY = {"quiet": logging.WARNING, "normal": logging.INFO, "verbose": logging.DEBUG}


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class RankFilter(logging.Filter):
    """Info and debug from rank 0 only; warnings, errors and EVERY_RANK lines from every rank."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno >= logging.WARNING or getattr(record, "every_rank", False)
                or _env_int("RANK", 0) == 0)


class ConsoleFormatter(logging.Formatter):
    """`[yolotr] message` for info; other levels say theirs; a line any rank may say names the rank (when there are
    several)."""

    def format(self, record: logging.LogRecord) -> str:
        any_rank = record.levelno >= logging.WARNING or getattr(record, "every_rank", False)
        who = f"yolotr rank {_env_int('RANK', 0)}" if any_rank and _env_int("WORLD_SIZE", 1) > 1 else "yolotr"
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        text = f"[{who}] {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class StderrHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is when a line is written, not as it was when the handler was made."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D102 - logging.StreamHandler's attribute
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def install() -> logging.Logger:
    """The `yolotr` logger with its one stderr handler (idempotent; done when yolotr is imported)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(handler, StderrHandler) for handler in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(ConsoleFormatter())
        handler.addFilter(RankFilter())
        logger.addHandler(handler)
        logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return logger


def set_verbosity(verbosity: str) -> None:
    """`quiet` (warnings and errors), `normal` (info too) or `verbose` (debug too)."""
    if verbosity not in VERBOSITY:
        raise ValueError(f"verbosity must be one of {', '.join(VERBOSITY)}, got {verbosity!r}")
    install().setLevel(VERBOSITY[verbosity])


def shows_info() -> bool:
    """Whether info lines are shown (not --quiet): progress bars and progress lines follow it."""
    return logging.getLogger(LOGGER_NAME).isEnabledFor(logging.INFO)


def progress_bar_wanted() -> bool:
    """A progress bar: at the info level, and only on a terminal (a log file would fill with carriage returns)."""
    return shows_info() and sys.stderr.isatty()
