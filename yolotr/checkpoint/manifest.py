"""A checkpoint's `manifest.json`, parsed strictly: the commit marker that vouches for every file of the folder.

    {"step": 120, "world_size": 2, "fitness": null,
     "files": {"state/__0_0.distcp": {"size": 6933851, "sha256": "9f…"}, "trainer.json": {...}, ...}}

A manifest is trusted only for what it lists, so one that lists nothing (`{}`), is not an object (`[]`, `null`),
lacks a size or a hash, names a path outside its folder, or leaves a file of the folder unlisted, vouches for nothing:
the checkpoint is damaged, like one whose bytes differ. `parse_manifest` says what is wrong, in words, and never
raises anything but `ManifestError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MANIFEST = "manifest.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """What is wrong with a manifest (the message is the reason a checkpoint is damaged)."""


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    step: int
    world_size: int
    fitness: float | None
    files: dict[str, FileEntry]
    """Path relative to the checkpoint folder (posix, no `..`) → its size and sha256."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_path(name: str) -> None:
    pure = PurePosixPath(name)
    # The canonical form only: "a//b", "./a" or "a/" would name a file the folder listing never matches.
    if not name or pure.is_absolute() or ".." in pure.parts or str(pure) != name or "\\" in name:
        raise ManifestError(f"manifest.json: file path {name!r} is not a plain path inside the checkpoint folder")
    if name == MANIFEST:
        raise ManifestError("manifest.json: lists itself")


def _file_entry(name: str, entry: object) -> FileEntry:
    if not isinstance(entry, dict):
        raise ManifestError(f"manifest.json: entry of {name}: expected an object with size and sha256, "
                            f"got {type(entry).__name__}")
    for key in ("size", "sha256"):
        if key not in entry:
            raise ManifestError(f"manifest.json: entry of {name}: no {key}")
    size, sha256 = entry["size"], entry["sha256"]
    if not _is_int(size) or size < 0:
        raise ManifestError(f"manifest.json: entry of {name}: size must be a byte count, got {size!r}")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ManifestError(f"manifest.json: entry of {name}: sha256 must be 64 hex digits, got {sha256!r}")
    return FileEntry(size, sha256)


def parse_manifest(data: object) -> Manifest:
    """The typed manifest from its parsed json; `ManifestError` naming the first thing that is wrong."""
    if not isinstance(data, dict):
        raise ManifestError(f"manifest.json: expected an object, got {type(data).__name__}")
    missing = [key for key in ("step", "world_size", "files") if key not in data]
    if missing:
        raise ManifestError(f"manifest.json: no {', '.join(missing)}")
    step, world_size, fitness, files = data["step"], data["world_size"], data.get("fitness"), data["files"]
    if not _is_int(step) or step < 0:
        raise ManifestError(f"manifest.json: step must be a step number, got {step!r}")
    if not _is_int(world_size) or world_size < 1:
        raise ManifestError(f"manifest.json: world_size must be a positive integer, got {world_size!r}")
    if fitness is not None and (isinstance(fitness, bool) or not isinstance(fitness, (int, float))):
        raise ManifestError(f"manifest.json: fitness must be a number or null, got {fitness!r}")
    if not isinstance(files, dict) or not files:
        raise ManifestError("manifest.json: files must be a non-empty object of path → {size, sha256}")
    entries = {}
    for name, entry in files.items():
        _check_path(name)
        entries[name] = _file_entry(name, entry)
    return Manifest(step, world_size, fitness, entries)


def read_manifest(folder: Path) -> Manifest:
    """The checkpoint folder's manifest; `ManifestError` when it is missing, not json, or not a manifest."""
    try:
        text = (Path(folder) / MANIFEST).read_text()
    except FileNotFoundError:
        raise ManifestError("no manifest.json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest.json cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"manifest.json is not valid json: {exc}") from None
    manifest = parse_manifest(data)
    match = re.fullmatch(r"step-(\d{8})", Path(folder).name)
    if match and int(match.group(1)) != manifest.step:
        raise ManifestError(f"manifest.json: step {manifest.step}, but the folder is {Path(folder).name}")
    return manifest


def unlisted_or_missing(folder: Path, manifest: Manifest) -> str | None:
    """What differs between the files in the folder and the files the manifest lists, or None."""
    folder = Path(folder)
    on_disk = {str(p.relative_to(folder).as_posix()) for p in folder.rglob("*") if p.is_file()}
    on_disk.discard(MANIFEST)
    missing = sorted(set(manifest.files) - on_disk)
    if missing:
        return f"missing file {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    unlisted = sorted(on_disk - set(manifest.files))
    if unlisted:
        return (f"{unlisted[0]} is not in manifest.json" + (f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1
                                                            else "") + ": the manifest does not vouch for it")
    return None
