"""The sample ledger of the faulted run (`debug.sample_ledger`) audited against the reference's: every sample once
per epoch, none lost, none trained twice, each at the same step on the same rank as in the run with no faults.

A resume already trims the ledger to the steps its checkpoint kept (debug/ledger.py: keep_steps_up_to), so the
samples of steps a killed attempt trained and lost are not in it, and the repeated steps are counted once.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LedgerAudit:
    epochs: int = 0
    samples: int = 0  # lines of the faulted run's ledger: samples trained
    lost: int = 0  # (epoch, key) the reference trained and the faulted run did not
    doubled: int = 0  # extra trainings of one key within one epoch
    misplaced: int = 0  # trained in the same epoch, but at another step or on another rank than in the reference
    unreadable: int = 0  # lines that are not json (cut by a kill and not trimmed by a resume)
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.misplaced or self.unreadable) and self.samples > 0

    def to_json(self) -> dict:
        return {"ok": self.ok, "epochs": self.epochs, "samples": self.samples, "lost": self.lost,
                "doubled": self.doubled, "misplaced": self.misplaced, "unreadable": self.unreadable,
                "examples": self.examples}

    def _example(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)


def _read(path: Path) -> tuple[list[tuple[int, int, int, str]], int]:
    entries, unreadable = [], 0
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            entries.append((int(row["epoch"]), int(row["step"]), int(row["rank"]), str(row["key"])))
        except (ValueError, KeyError, TypeError):
            unreadable += 1
    return entries, unreadable


def audit_ledgers(faulted: Path, reference: Path) -> LedgerAudit:
    ours, unreadable = _read(faulted)
    theirs, _ = _read(reference)
    audit = LedgerAudit(samples=len(ours), unreadable=unreadable, epochs=len({e for e, *_ in ours}))
    per_epoch = Counter((epoch, key) for epoch, _, _, key in ours)
    for (epoch, key), times in sorted(per_epoch.items()):
        if times > 1:
            audit.doubled += times - 1
            audit._example(f"epoch {epoch}: {key} trained {times} times")
    expected = Counter((epoch, key) for epoch, _, _, key in theirs)
    for epoch, key in sorted(expected.keys() - per_epoch.keys()):
        audit.lost += 1
        audit._example(f"epoch {epoch}: {key} never trained (the reference trained it)")
    # Same samples, same places: the multiset of (epoch, step, rank, key) lines against the reference's.
    placed, reference_placed = Counter(ours), Counter(theirs)
    for epoch, step, rank, key in sorted((placed - reference_placed).keys()):
        if per_epoch[(epoch, key)] == 1 and (epoch, key) in expected:
            audit.misplaced += 1
            audit._example(f"epoch {epoch}: {key} at step {step} on rank {rank}, not where the reference trained it")
        elif (epoch, key) not in expected:
            audit.misplaced += 1
            audit._example(f"epoch {epoch}: {key} at step {step}: the reference did not train it in this epoch")
    return audit
