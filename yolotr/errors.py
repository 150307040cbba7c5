"""The errors a user can act on, at the bottom of the package so that every layer may raise them.

Library code raises them with a message that names the file, key or sample; only the CLI (`yolotr.cli`) turns
them into one line on stderr and an exit code, so that an API user gets a typed exception instead of an exit.
"""

from __future__ import annotations


class YolotrError(Exception):
    """A failure with a message meant for the user, not a traceback: a runtime failure (exit code 1)."""

    exit_code: int = 1


class UsageError(YolotrError):
    """Bad arguments, configuration or input named on the command line (exit code 2, as argparse uses)."""

    exit_code = 2
