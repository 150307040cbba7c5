"""The drill's verdict: a table of faults injected, recovered and steps lost per kind, the state and ledger checks,
and `drill.json` with all of it (every fault, every attempt) for machines."""

from __future__ import annotations

import json
from pathlib import Path

from yolotr.drill.plan import KINDS

LABELS = {
    "kill_rank": "kill -9 of a rank",
    "kill_during_write": "kill -9 during a checkpoint write",
    "sigterm": "SIGTERM (preemption)",
    "sigint": "Ctrl-C",
    "sigint_twice": "Ctrl-C twice",
    "stop_rank": "SIGSTOP/SIGCONT of a rank",
    "stop_job": "Ctrl-Z and fg of the job",
    "corrupt_checkpoint": "corrupted newest checkpoint",
    "nan": "NaN on one rank",
}


def summarize(records: list[dict]) -> dict[str, dict[str, int]]:
    """{kind: {"planned", "injected", "recovered", "steps_lost"}}, for every kind, and "total"."""
    table = {kind: {"planned": 0, "injected": 0, "recovered": 0, "steps_lost": 0} for kind in (*KINDS, "total")}
    for record in records:
        for row in (table[record["kind"]], table["total"]):
            row["planned"] += 1
            row["injected"] += int(record["injected"])
            row["recovered"] += int(record["injected"] and record["recovered"])
            row["steps_lost"] += record["steps_lost"] if record["injected"] else 0
    return table


def verdict_reasons(report: dict) -> list[str]:
    """Empty when the drill passes; else every reason it does not."""
    reasons = list(report["problems"])
    total = report["table"]["total"]
    if total["injected"] < total["planned"]:
        reasons.append(f"{total['planned'] - total['injected']} of {total['planned']} planned faults were not injected")
    if total["recovered"] < total["injected"]:
        missed = [f"#{r['index'] + 1} {r['kind']} ({r['detail']})" for r in report["faults"]
                  if r["injected"] and not r["recovered"]]
        reasons.append(f"{len(missed)} fault(s) not recovered: " + "; ".join(missed))
    if report["runs_lost"]:
        reasons.append("the faulted run did not complete")
    if report.get("duplicated_steps"):
        steps = report["duplicated_steps"]
        reasons.append(f"metrics.jsonl: {len(steps)} step(s) recorded more than once, e.g. step {steps[0]}")
    state = report["state"]
    if state is None:
        reasons.append("no final checkpoints to compare")
    elif not state["equal"]:
        reasons.append(f"final state differs from the reference in {state['different']} of {state['compared']} "
                       f"entries, first: {state['differences'][0]}")
    ledger = report["ledger"]
    if ledger is None:
        reasons.append("no ledger to audit")
    elif not ledger["ok"]:
        reasons.append(f"ledger: {ledger['lost']} samples lost, {ledger['doubled']} doubled, {ledger['misplaced']} "
                       f"misplaced, {ledger['unreadable']} unreadable lines"
                       + (f"; e.g. {ledger['examples'][0]}" if ledger["examples"] else ""))
    return reasons


def render(report: dict) -> str:
    rows = [("fault", "injected", "recovered", "steps lost")]
    for kind in (*KINDS, "total"):
        row = report["table"][kind]
        if kind != "total" and not row["planned"]:
            continue
        rows.append((LABELS.get(kind, kind), f"{row['injected']}/{row['planned']}", str(row["recovered"]),
                     str(row["steps_lost"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines.insert(-1, lines[1])
    state, ledger = report["state"], report["ledger"]
    lines.append("")
    lines.append(f"runs lost: {report['runs_lost']}   attempts: {len(report['attempts'])}   "
                 f"steps: {report['max_steps']}   wall time: {report['wall_s']:.0f} s")
    if "duplicated_steps" in report:
        lines.append(f"metrics.jsonl: {len(report['duplicated_steps'])} step(s) recorded twice")
    if ledger is not None:
        lines.append(f"samples: {ledger['samples']} trained over {ledger['epochs']} epoch(s), {ledger['lost']} lost, "
                     f"{ledger['doubled']} doubled, {ledger['misplaced']} misplaced (against the reference's ledger)")
    if state is not None:
        lines.append(f"final state: {state['compared']} entries (model, EMA, optimizer, RNG, counters) "
                     + ("bitwise equal to the reference" if state["equal"] else
                        f"{state['different']} differ from the reference, first: {state['differences'][0]}"))
    lines.append("verdict: " + ("PASS" if report["passed"] else "FAIL: " + "; ".join(report["reasons"])))
    return "\n".join(lines)


def write_report(path: Path, report: dict) -> None:
    Path(path).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
