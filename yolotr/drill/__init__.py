"""Fault drills on a real training job (issue #16): `yolotr drill` injects faults from a seed into one job started
through the user's launcher, and checks the end state bit for bit against a run with no faults (drill_cli.py)."""
