"""The ledger audit: a sample trained twice, one never trained, one trained elsewhere, each counted and named."""

import json

from yolotr.drill.ledger_audit import audit_ledgers


def _ledger(path, rows):
    path.write_text("".join(json.dumps({"epoch": e, "step": s, "rank": r, "key": k}) + "\n" for e, s, r, k in rows))
    return path


REFERENCE = [(0, 1, 0, "a"), (0, 1, 1, "b"), (0, 2, 0, "c"), (0, 2, 1, "d"), (1, 3, 0, "b"), (1, 3, 1, "a")]


def test_the_same_ledger_passes(tmp_path):
    audit = audit_ledgers(_ledger(tmp_path / "f", REFERENCE), _ledger(tmp_path / "r", REFERENCE))
    assert audit.ok and (audit.samples, audit.epochs) == (6, 2)


def test_doubled_lost_and_misplaced_samples_are_each_counted(tmp_path):
    faulted = [(0, 1, 0, "a"), (0, 1, 1, "b"), (0, 2, 0, "c"), (0, 2, 1, "a"),  # d lost, a doubled
               (1, 3, 1, "b"), (1, 3, 0, "a"),  # b and a on swapped ranks
               "not json"]
    path = tmp_path / "f"
    _ledger(path, faulted[:-1])
    path.write_text(path.read_text() + '{"epoch": 1, "st')  # a line cut by a kill
    audit = audit_ledgers(path, _ledger(tmp_path / "r", REFERENCE))
    assert not audit.ok
    assert (audit.doubled, audit.lost, audit.misplaced, audit.unreadable) == (1, 1, 2, 1)
    assert any("epoch 0: d never trained" in e for e in audit.examples)
    assert any("a trained 2 times" in e for e in audit.examples)
