"""The study's outputs: a markdown table (for the README), the same numbers as csv, and the loss-curve plot."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from yolotr.study.matrix import Cell
from yolotr.study.results import RunResult
from yolotr.study.runner import CellProcess
from yolotr.study.setting import Setting

ROLLBACK_COLOR = "tab:purple"
SMOOTH_STEPS = 5
_OPTIMIZERS = {"sgd": "SGD", "adamw": "AdamW"}


@dataclass
class CellReport:
    """Everything known about one cell after it ran."""

    cell: Cell
    setting: Setting | None
    result: RunResult
    process: CellProcess

    @property
    def outcome(self) -> str:
        outcome = self._run_outcome()
        r = self.result
        if r.params_finite and r.nonfinite_buffers:
            names = dict.fromkeys(_short(b) for b in r.nonfinite_buffers)  # model and EMA name the same layers
            outcome += f"; non-finite BatchNorm statistics: {', '.join(names)}"
        if r.quarantined:
            outcome += f"; {r.quarantined} train images quarantined"
        if self.result.exit_code is not None and self.process.returncode not in (0, self.result.exit_code):
            # exit.json was written, then a process died on its way out (seen: a rank aborting at interpreter exit).
            outcome += f"; launcher exit {self.process.returncode}, see runs/{self.cell.id}.log"
        return outcome

    def _run_outcome(self) -> str:
        r, p = self.result, self.process
        if p.timed_out:
            return "timed out"
        if r.exit_code is None:
            return f"crashed (exit {p.returncode}, see runs/{self.cell.id}.log)"
        if r.exit_code == 3:
            return "stopped: rollback budget spent (exit 3)"
        if r.exit_code != 0:
            return f"exit {r.exit_code}: {r.reason}"
        if r.params_finite is False:
            return "diverged: non-finite weights"
        if r.nonfinite_steps:
            return "completed, NaN steps skipped" if r.skipped_steps else "completed, NaN steps applied"
        return "completed"


COLUMNS = [
    # (markdown header, value). The csv holds more: every setting field and the raw, unrounded numbers.
    ("cell", lambda c: f"`{c.cell.id}`"),
    ("block", lambda c: c.setting.block if c.setting else "?"),
    ("remedies", lambda c: (", ".join(c.setting.remedies) or "none") if c.setting else "?"),
    ("guard", lambda c: ("on" if c.setting.guard else "off") if c.setting else "?"),
    ("injected NaN", lambda c: _injection(c)),
    ("optimizer, lr0", lambda c: _optimizer(c.setting)),
    ("first non-finite step", lambda c: str(c.result.first_nonfinite_step or "none")),
    ("non-finite steps", lambda c: str(c.result.nonfinite_steps)),
    ("skipped", lambda c: str(c.result.skipped_steps)),
    ("rollbacks", lambda c: str(c.result.rollbacks)),
    ("final loss", lambda c: _number(c.result.final_loss, 3)),
    ("mAP@0.5", lambda c: _number(c.result.map50, 3)),
    ("mAP@0.5:0.95", lambda c: _number(c.result.map, 3)),
    ("wall time", lambda c: f"{c.process.wall_s:.0f} s"),
    ("outcome", lambda c: c.outcome),
]


def markdown_table(reports: list[CellReport]) -> str:
    header = "| " + " | ".join(title for title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = ["| " + " | ".join(value(report) for _, value in COLUMNS) + " |" for report in reports]
    return "\n".join([header, rule, *rows])


def write_markdown(path: Path, reports: list[CellReport], *, command: str, profile_text: str, notes: list[str]) -> None:
    lines = [
        "# Stability study",
        "",
        f"Reproduce: `{command}`",
        "",
        profile_text,
        "",
        markdown_table(reports),
        "",
        "Cells:",
        "",
        *(f"- `{r.cell.id}` ({r.cell.group}): {r.cell.title}" for r in reports),
    ]
    if notes:
        lines += ["", "Checks of the expected conclusions:", "", *(f"- {note}" for note in notes)]
    path.write_text("\n".join(lines) + "\n")


def write_csv(path: Path, reports: list[CellReport]) -> None:
    """Raw numbers (no rounding, NaN as `nan`) plus every setting field, one row per cell."""
    setting_fields = list(Setting.__dataclass_fields__)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["cell", "group", "title", "world_size", *setting_fields, "first_nonfinite_step",
                         "nonfinite_steps", "skipped_steps", "rollbacks", "final_loss", "map50", "map", "wall_s",
                         "exit_code", "params_finite", "nonfinite_buffers", "quarantined", "outcome"])
        for c in reports:
            r = c.result
            settings = [getattr(c.setting, name) if c.setting else "" for name in setting_fields]
            writer.writerow([c.cell.id, c.cell.group, c.cell.title, r.world_size, *settings,
                             r.first_nonfinite_step if r.first_nonfinite_step is not None else "", r.nonfinite_steps,
                             r.skipped_steps, r.rollbacks, r.final_loss, _raw(r.map50), _raw(r.map),
                             round(c.process.wall_s, 1), _raw(r.exit_code), _raw(r.params_finite),
                             " ".join(r.nonfinite_buffers), r.quarantined, c.outcome])


def plot_curves(path: Path, reports: list[CellReport]) -> None:
    """One panel per group: each cell's train loss per step (mean of SMOOTH_STEPS finite steps, log scale), and
    along the top one row of ticks per cell, in its colour, at its non-finite steps (▼: rollbacks)."""
    groups = list(dict.fromkeys(r.cell.group for r in reports))
    cols = 2 if len(groups) > 1 else 1
    rows = math.ceil(len(groups) / cols)
    figure = Figure(figsize=(7.5 * cols, 4.5 * rows), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax, group in zip(axes, groups):
        members = [r for r in reports if r.cell.group == group]
        for lane, report in enumerate(members):
            steps, losses = _smoothed(report.result.curve)
            (line,) = ax.plot(steps, losses, linewidth=1.2, label=report.cell.id)
            # A non-finite step has no loss to draw: it gets a tick in a row of its own near the top of the panel.
            lane_y = 0.97 - 0.04 * lane
            bad = report.result.nonfinite
            ax.plot(bad, [lane_y] * len(bad), linestyle="none", marker="|", markersize=8, color=line.get_color(),
                    transform=ax.get_xaxis_transform())
            rollbacks = report.result.rollback_steps
            ax.plot(rollbacks, [lane_y] * len(rollbacks), linestyle="none", marker="v", markersize=7,
                    color=ROLLBACK_COLOR, transform=ax.get_xaxis_transform())
        ax.set_yscale("log")
        ax.set_title(group)
        ax.set_xlabel("step  (ticks along the top: non-finite steps, one row per cell; ▼ rollback)")
        ax.set_ylabel(f"train loss, mean of {SMOOTH_STEPS} steps")
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(alpha=0.3)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    figure.savefig(path, dpi=110)


def _smoothed(curve: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    """Trailing mean over the last SMOOTH_STEPS finite losses (single steps swing by ±50 % on the synthetic set)."""
    finite = [(step, loss) for step, loss in curve if math.isfinite(loss) and loss > 0]
    steps, means = [], []
    for i, (step, _) in enumerate(finite):
        window = [loss for _, loss in finite[max(0, i - SMOOTH_STEPS + 1) : i + 1]]
        steps.append(step)
        means.append(sum(window) / len(window))
    return steps, means


def _optimizer(setting: Setting | None) -> str:
    if setting is None:
        return "?"
    return f"{_OPTIMIZERS.get(setting.optimizer, setting.optimizer)} {setting.lr0:g}"


def _injection(c: CellReport) -> str:
    if c.setting is None:
        return "?"
    ranks = c.result.world_size or c.cell.procs
    if c.setting.nan_rate == 0:
        return f"none ({ranks} rank{'s' if ranks > 1 else ''})"
    return f"{c.setting.nan_rate:.0%} of (step, rank), {ranks} ranks"


def _short(buffer: str) -> str:
    """`model.model.8.cv3.bn.running_var` → `model.8.cv3.bn.running_var`: the EMA and the model name the same layer."""
    return buffer.split(".", 1)[1]


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return "NaN" if not math.isfinite(value) else f"{value:.{digits}f}"


def _raw(value) -> str:
    return "" if value is None else str(value)


__all__ = ["COLUMNS", "CellReport", "markdown_table", "plot_curves", "write_csv", "write_markdown"]
