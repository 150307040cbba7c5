"""What a command prints because it was asked to: a table, a json object, the files it wrote, a run's summary, and
the one-line error the command line ends with. The only module of yolotr that prints (a test holds it); everything
else a process has to say is a log line (yolotr/log.py), which --quiet and --verbose choose among.

Results go to stdout, so that `yolotr val --json | jq` or `> table.txt` get them and nothing else; --quiet does not
silence them (a command asked for its result).
"""

from __future__ import annotations

import sys


def result(text: str = "", *, end: str = "\n") -> None:
    """A command's result on stdout."""
    print(text, end=end, flush=True)


def error(text: str) -> None:
    """The command line's last word on a failure (`yolotr train: error: ...`), on stderr, at any verbosity."""
    print(text, file=sys.stderr, flush=True)
