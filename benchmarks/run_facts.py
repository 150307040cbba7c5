"""The facts a GPU check asks of a finished `yolotr train` run, read from its metrics.jsonl: one `ok` or `FAIL` line
each, exit status 1 if any failed (benchmarks/gpu_all.sh, part a).

    python benchmarks/run_facts.py RUN_DIR compiled skip            a compiled run that skipped its NaN step
    python benchmarks/run_facts.py RUN_DIR resume                   a run that resumed from its checkpoint

    compiled   the `compile` event says the fast path trains as configured: no fallback (a healthy GPU machine)
    skip       a `skip` event (the injected NaN step was skipped)
    resume     a `resume` event
    finite     the last train record's loss is finite
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def facts(records: list[dict]) -> dict:
    events = {}
    for record in records:
        if record.get("kind") == "event":
            events.setdefault(record.get("event"), []).append(record)
    trains = [r for r in records if r.get("kind") == "train"]
    compile_event = (events.get("compile") or [None])[-1]  # a resumed run: its own start's

    def compiled():
        if compile_event is None:
            return False, "no compile event"
        fields = {k: compile_event.get(k) for k in ("backend", "compiled", "channels_last", "fallbacks",
                                                      "first_step_s", "compile_s")}
        return compile_event.get("compiled") is True and not compile_event.get("fallbacks"), json.dumps(fields)

    def skip():
        skips = events.get("skip", [])
        return bool(skips), json.dumps(skips[:3])

    def resume():
        resumes = events.get("resume", [])
        return bool(resumes), json.dumps([{k: r.get(k) for k in ("step", "checkpoint")} for r in resumes])

    def finite():
        loss = trains[-1].get("loss") if trains else None
        step = trains[-1].get("step") if trains else None
        return loss is not None and math.isfinite(loss), f"last train record: step {step}, loss {loss}"

    return {"compiled": compiled, "skip": skip, "resume": resume, "finite": finite}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    run_dir, wanted = Path(argv[0]), argv[1:]
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        print(f"FAIL {run_dir}: no metrics.jsonl")
        return 1
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    checks = facts(records)
    failed = 0
    for name in wanted:
        if name not in checks:
            print(f"FAIL {name}: unknown fact (known: {', '.join(checks)})")
            failed += 1
            continue
        ok, detail = checks[name]()
        print(f"{'ok' if ok else 'FAIL'} {name}: {detail}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
