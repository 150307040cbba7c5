"""`yolotr drill --config C [key=value ...] --faults N --seed S --out DIR [--launcher "PREFIX"]`: a fault campaign on
one training job, started through your own launcher, checked bit for bit against a run with no faults.

The launcher is a command prefix to which the drill appends the training arguments (`--config C`, the overrides,
its own settings): the default is `torchrun --standalone --nproc-per-node 2 -m yolotr train`; `bash launch/launch.sh
--procs 2 --` works too. It must not restart the job itself: the drill does that. Exit 0 when the drill passes,
1 when it fails, 2 for bad arguments; the table goes to stdout, everything to DIR/drill.json.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from yolotr import console
from yolotr.drill.plan import KINDS

log = logging.getLogger(__name__)

KIND_NAMES = ",".join(KINDS)


def default_launcher() -> str:
    torchrun = Path(sys.executable).parent / "torchrun"
    return f"{torchrun if torchrun.exists() else 'torchrun'} --standalone --nproc-per-node 2 -m yolotr train"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="training config yaml; defaults when omitted")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides for both runs")
    parser.add_argument("--faults", type=int, default=10, help="how many faults to inject (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault plan: kinds, steps, ranks (default 0)")
    parser.add_argument("--out", required=True, help="a new folder for the two runs, the logs and drill.json")
    parser.add_argument("--launcher", default=None,
                        help="command prefix that starts training, to which the training arguments are appended "
                             "(default: torchrun --standalone --nproc-per-node 2 -m yolotr train)")
    parser.add_argument("--kinds", default=KIND_NAMES, help=f"fault kinds to draw from, comma-separated ({KIND_NAMES})")
    parser.add_argument("--steps", type=int, default=None,
                        help="train.max_steps of both runs (default: the config's, else just long enough)")
    parser.add_argument("--reference-override", action="append", default=[], metavar="key.path=value",
                        help="an override for the reference run only, after the drill's own (to check that the "
                             "drill detects a difference)")
    parser.add_argument("--stall-timeout", type=float, default=300.0,
                        help="seconds without a new step after which an attempt counts as hung (default 300)")


def run(args: argparse.Namespace) -> int:
    from yolotr.drill.campaign import Campaign, DrillOptions
    from yolotr.drill.compare import compare_checkpoints
    from yolotr.drill.ledger_audit import audit_ledgers
    from yolotr.drill.report import render, summarize, verdict_reasons, write_report
    from yolotr.drill.run_folder import RunFolder
    from yolotr.errors import UsageError

    if args.faults < 0:
        raise UsageError(f"--faults must be >= 0, got {args.faults}")
    started = time.monotonic()
    out = Path(args.out).resolve()
    options = DrillOptions(config=args.config, overrides=list(args.overrides), faults=args.faults, seed=args.seed,
                           out=out, launcher=shlex.split(args.launcher or default_launcher()),
                           kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()), steps=args.steps,
                           reference_overrides=list(args.reference_override), stall_timeout=args.stall_timeout)
    campaign = Campaign(options)
    out.mkdir(parents=True, exist_ok=True)
    log.info("drill: %d faults over %d steps, seed %d: the reference run first", args.faults, campaign.max_steps,
             args.seed)
    reference = campaign.run_reference()
    faulted = None
    if reference.completed:
        log.info("drill: reference done; the faulted run (%d+ attempts)", len(campaign.plan.ending) + 1)
        faulted = campaign.run_faulted()
        campaign.judge_nans(RunFolder(out / "faulted" / "run"))

    state = ledger = None
    final = f"step-{campaign.max_steps:08d}"
    ours, theirs = out / "faulted" / "run", out / "reference" / "run"
    if faulted is not None and faulted.completed and (theirs / "checkpoints" / final).is_dir():
        state = compare_checkpoints(ours / "checkpoints" / final, theirs / "checkpoints" / final).to_json()
        ledger = audit_ledgers(ours / "ledger.jsonl", theirs / "ledger.jsonl").to_json()
    duplicated = RunFolder(ours).duplicated_steps() if faulted is not None else []
    records = [campaign.records[i].to_json() for i in sorted(campaign.records)]
    report = {
        "seed": args.seed, "faults_requested": args.faults, "max_steps": campaign.max_steps,
        "checkpoint_every": campaign.checkpoint_every, "world_size": campaign.world_size,
        "launcher": options.launcher, "config": args.config, "overrides": options.overrides,
        "reference_overrides": options.reference_overrides,
        "faults": records, "table": summarize(records),
        "attempts": {"reference": [a.to_json() for a in reference.attempts],
                     "faulted": [a.to_json() for a in faulted.attempts] if faulted else []},
        "runs_lost": int(faulted is None or not faulted.completed),
        "problems": [*reference.problems, *(faulted.problems if faulted else [])],
        "state": state, "ledger": ledger, "duplicated_steps": duplicated,
    }
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["reasons"] = verdict_reasons(report)
    report["passed"] = not report["reasons"]
    report["verdict"] = "pass" if report["passed"] else "fail"
    write_report(out / "drill.json", report)
    console.result(render({**report, "attempts": report["attempts"]["faulted"]}))
    return 0 if report["passed"] else 1
