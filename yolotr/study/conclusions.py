"""The issue's expected conclusions, checked against the numbers: each one holds, does not hold, or was not run.

Which cells answer which question is fixed here by cell id (the ids of configs/study/stability.yaml); a check whose
cells were not part of the run (`--cells`, a custom study file) says so instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

from yolotr.study.report import CellReport

NAIVE_STRESS = "v5-stress"
YOLOTR_BLOCK_STRESS = "tr-stress"
YOLOTR_FULL_STRESS = "yolotr-stress"
REMEDY_CELLS = ("v5-stress-clip", "v5-stress-xavier", "v5-stress-lrmult", "v5-stress-warmup", "v5-stress-all")
GUARD_CELLS = ("v5-stress-skip", "v5-stress-skiprb", "v5-stress-guard")
INJECTION_CLEAN = "yolotr-2p-clean"
INJECTION_GUARDED = "yolotr-2p-nan"
INJECTION_OTHER_SEED = "yolotr-2p-clean-seed1"
MAP50_BUDGET = 0.01
"""The issue's bound on what injected NaNs may cost with the guard on: 0.01 mAP@0.5, absolute."""


@dataclass(frozen=True)
class Check:
    claim: str
    verdict: str
    """"holds", "does not hold" or "not run"."""
    evidence: str

    def __str__(self) -> str:
        return f"**{self.verdict}**: {self.claim} ({self.evidence})"


def check_conclusions(reports: list[CellReport]) -> list[Check]:
    by_id = {r.cell.id: r for r in reports}
    checks = [
        _naive_goes_nonfinite(by_id.get(NAIVE_STRESS)),
        _yolotr_block_stays_finite(by_id.get(YOLOTR_BLOCK_STRESS), by_id.get(YOLOTR_FULL_STRESS)),
        _injection_costs_little(
            by_id.get(INJECTION_CLEAN), by_id.get(INJECTION_GUARDED), by_id.get(INJECTION_OTHER_SEED)
        ),
    ]
    checks += [_guard_keeps_params_finite(by_id[cell]) for cell in GUARD_CELLS if cell in by_id]
    naive = by_id.get(NAIVE_STRESS)
    checks += [_remedy_effect(naive, by_id[cell]) for cell in REMEDY_CELLS if cell in by_id]
    return checks


def _naive_goes_nonfinite(naive: CellReport | None) -> Check:
    claim = "YOLOv5's block in the naive setting at the stress LR, without a guard, goes non-finite"
    if naive is None:
        return Check(claim, "not run", f"cell {NAIVE_STRESS} missing")
    r = naive.result
    verdict = "holds" if r.nonfinite_steps else "does not hold"
    return Check(claim, verdict, f"{NAIVE_STRESS}: first non-finite step {r.first_nonfinite_step or 'none'}, "
                 f"{r.nonfinite_steps} of {r.steps} steps non-finite, parameters finite at the end: {r.params_finite}")


def _yolotr_block_stays_finite(block_only: CellReport | None, full: CellReport | None) -> Check:
    claim = "yolotr's block at the same setting trains with 0 non-finite (hence 0 skipped) steps"
    if block_only is None and full is None:
        return Check(claim, "not run", f"cells {YOLOTR_BLOCK_STRESS} and {YOLOTR_FULL_STRESS} missing")
    parts, clean = [], True
    for report in (block_only, full):
        if report is not None:
            r = report.result
            clean &= r.nonfinite_steps == 0 and r.skipped_steps == 0 and r.exit_code == 0
            parts.append(f"{report.cell.id}: {r.nonfinite_steps} non-finite, {r.skipped_steps} skipped, "
                         f"final loss {r.final_loss:.3g}")
    return Check(claim, "holds" if clean else "does not hold", "; ".join(parts))


def _guard_keeps_params_finite(guarded: CellReport) -> Check:
    claim = f"{guarded.cell.title}: the naive stress run ends with finite weights and statistics, without any remedy"
    r = guarded.result
    finite = r.params_finite and not r.nonfinite_buffers
    verdict = "holds" if finite and r.exit_code in (0, 3) else "does not hold"
    return Check(claim, verdict, f"{guarded.cell.id}: {r.skipped_steps} skipped, {r.rollbacks} rollbacks, "
                 f"{guarded.outcome}, final loss {r.final_loss:.3g}")


def _injection_costs_little(clean: CellReport | None, injected: CellReport | None,
                            other_seed: CellReport | None) -> Check:
    claim = f"with the guard, injected NaNs cost at most {MAP50_BUDGET} mAP@0.5 against the clean run"
    if clean is None or injected is None:
        return Check(claim, "not run", f"cells {INJECTION_CLEAN} and {INJECTION_GUARDED} needed")
    a, b = clean.result.map50, injected.result.map50
    if a is None or b is None:
        return Check(claim, "does not hold", "a run has no mAP (see its outcome)")
    cost = a - b
    verdict = "holds" if cost <= MAP50_BUDGET and injected.result.params_finite else "does not hold"
    evidence = (f"mAP@0.5 clean {a:.3f}, injected {b:.3f} (cost {cost:+.3f}); "
                f"{injected.result.skipped_steps} steps skipped")
    if other_seed is not None and other_seed.result.map50 is not None:
        # Without this, a cost above the budget cannot be told apart from two clean runs simply landing apart.
        seed_map50 = other_seed.result.map50
        evidence += f"; the clean run with another seed: {seed_map50:.3f} ({seed_map50 - a:+.3f})"
    return Check(claim, verdict, evidence)


def _remedy_effect(naive: CellReport | None, remedy: CellReport) -> Check:
    claim = f"{remedy.cell.title} delays or prevents the naive stress run's first non-finite step"
    r = remedy.result
    if naive is None:
        return Check(claim, "not run", f"cell {NAIVE_STRESS} missing")
    n = naive.result
    if not n.nonfinite_steps:
        return Check(claim, "not run", "the naive stress run never went non-finite: nothing to remedy")
    later = r.first_nonfinite_step is None or r.first_nonfinite_step > (n.first_nonfinite_step or 0)
    verdict = "holds" if later else "does not hold"
    return Check(claim, verdict, f"first non-finite step {r.first_nonfinite_step or 'none'} vs naive "
                 f"{n.first_nonfinite_step}; non-finite steps {r.nonfinite_steps} vs {n.nonfinite_steps}")


__all__ = ["Check", "MAP50_BUDGET", "check_conclusions"]
