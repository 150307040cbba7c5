"""A small json file written so that a reader sees the old one or the whole new one, never a part: a temporary file,
fsync, then an atomic rename. No torch: the run status is written with it on a config error, before torch is
imported, and a launcher may stop the process within a second of its other ranks' exit."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_durably(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # On a full disk the temporary file is left empty or cut: removed, so it neither holds space nor misleads.
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
