"""Which runs read which cached conversion of a dataset, so that a conversion a run still needs is never deleted.

A run trained on a YOLO / COCO source records the conversion it reads in `RUN/data_conversion.json` (the source, the
fingerprint, the folder and the fingerprint's parts), and the conversion lists the run in `<conversion>/users/`.
Both are written under the cache's lock, before the run reads a shard. A later conversion of the same dataset (its
files edited) deletes an earlier one only when no run folder that still exists records it: a live run, and a
finished or stopped one that `--resume` may continue, keep theirs. A resume finds its conversion through the record,
by fingerprint, even when the source has been edited since.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from yolotr.durable_json import write_json_durably

RUN_RECORD = "data_conversion.json"
USERS = "users"


@dataclass(frozen=True)
class RecordedConversion:
    """What a run folder says it was started on."""

    source: str
    fingerprint: str
    conversion: Path
    parts: dict


def recorded_conversion(run_dir: Path, source: Path) -> RecordedConversion | None:
    """The conversion `run_dir` recorded for `source` (None: no record, an unreadable one, or one of another
    source: then the run is trained on what the source is now, as before records existed)."""
    try:
        doc = json.loads((Path(run_dir) / RUN_RECORD).read_text())
        recorded = RecordedConversion(str(doc["source"]), str(doc["fingerprint"]), Path(doc["conversion"]),
                                      dict(doc.get("parts") or {}))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return recorded if recorded.source == str(Path(source).resolve()) else None


def record_use(run_dir: Path, source: Path, conversion: Path, fingerprint: str, parts: dict) -> None:
    """Marks `conversion` as read by `run_dir` (both sides; call it under the cache's lock)."""
    run_dir = Path(run_dir).resolve()
    users = conversion / USERS
    users.mkdir(exist_ok=True)
    write_json_durably(users / f"{_run_tag(run_dir)}.json", {"run": str(run_dir)})
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_durably(run_dir / RUN_RECORD, {"source": str(Path(source).resolve()), "fingerprint": fingerprint,
                                             "conversion": str(conversion.resolve()), "parts": parts})


def runs_using(conversion: Path, fingerprint: str) -> list[Path]:
    """The run folders that exist and still record `conversion` (of `fingerprint`) as theirs; forgets the others."""
    users = conversion / USERS
    runs = []
    for entry in sorted(users.glob("*.json")) if users.is_dir() else []:
        try:
            run = Path(json.loads(entry.read_text())["run"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge: kept, and so is the conversion
        try:
            doc = json.loads((run / RUN_RECORD).read_text())
        except FileNotFoundError:  # the run folder was deleted
            entry.unlink(missing_ok=True)
            continue
        except (OSError, ValueError):  # unreadable for now: counted as in use, deleting would be the worse mistake
            runs.append(run)
            continue
        if isinstance(doc, dict) and doc.get("fingerprint") == fingerprint:
            runs.append(run)
        else:  # the run now reads another conversion
            entry.unlink(missing_ok=True)
    return runs


def _run_tag(run_dir: Path) -> str:
    return hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]

