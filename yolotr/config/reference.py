"""docs/config.md's config reference, generated from the config dataclasses and their field docstrings.

    python -m yolotr.config.reference           # prints the markdown table
    python -m yolotr.config.reference --write   # replaces the table in docs/config.md

tests/engine/test_config.py checks that docs/config.md holds exactly this table, so the reference cannot drift from
the code.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from yolotr.config.run import Config
from yolotr.config.tree import field_docs


def _type_name(tp) -> str:
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))
    return text.replace("typing.", "").replace("|", "or")


def rows(cls: type = Config, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += rows(tp, f"{key}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        doc = docs.get(f.name, "").replace("\n", " ").replace("|", "\\|")
        out.append(f"| `{key}` | {_type_name(f.type)} | `{default!r}` | {' '.join(doc.split())} |")
    return out


def table() -> str:
    return "\n".join(["| key | type | default | meaning |", "|---|---|---|---|", *rows()]) + "\n"


REFERENCE_DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def write_reference(doc: Path = REFERENCE_DOC) -> None:
    """Replace the table in `doc` (everything from its header row to the end of the file) with the current one."""
    text = doc.read_text()
    start = text.index("| key | type | default | meaning |")
    doc.write_text(text[:start] + table())


if __name__ == "__main__":
    import sys

    from yolotr import console

    if sys.argv[1:] == ["--write"]:
        write_reference()
    else:
        console.result(table(), end="")
