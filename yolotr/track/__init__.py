"""Run tracking: `metrics.jsonl` (the source of truth), the W&B logger and reader, the end-of-run summary."""
