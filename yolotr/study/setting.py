"""What a cell trained, described from its resolved config.yaml (not from the study file's intentions).

The table's setting columns come from here, so a bundle that did not take effect would show in the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

BLOCK_NAMES = {"C3TRv5": "C3TRv5 (YOLOv5)", "C3TR": "C3TR (yolotr)"}


@dataclass(frozen=True)
class Setting:
    block: str
    """Transformer block of the model yaml: C3TRv5 (YOLOv5's own) or C3TR (yolotr's)."""
    xavier_init: bool
    qk_norm: bool
    layer_scale: float
    max_norm: float
    """Gradient clip; 0 = none."""
    transformer_lr_mult: float
    warmup_steps: int
    """Warmup length in steps as the trainer computes it (0 = none)."""
    cosine: bool
    """LR decays along a cosine to lr0·lrf (false with lrf 1: constant)."""
    lr0: float
    optimizer: str
    precision: str
    guard: bool
    nan_rate: float
    """Injected NaN-loss probability per (step, rank)."""

    @property
    def remedies(self) -> list[str]:
        """The article's remedies that are on, in the study's order."""
        on = []
        if self.max_norm > 0:
            on.append(f"clip {self.max_norm:g}")
        if self.xavier_init:
            on.append("Xavier")
        if self.transformer_lr_mult != 1.0:
            on.append(f"T-LR ×{self.transformer_lr_mult:g}")
        if self.warmup_steps > 0 or self.cosine:
            on.append(f"warmup {self.warmup_steps} + cos" if self.cosine else f"warmup {self.warmup_steps}")
        return on


def describe(run_dir: str | Path, steps_per_epoch: int | None = None) -> Setting | None:
    """The setting of a run folder's config.yaml; None when the run never wrote one."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return None
    cfg = yaml.safe_load(path.read_text())
    model_yaml = yaml.safe_load(Path(cfg["model"]).read_text())
    block = _transformer_block(model_yaml)
    overrides = {key: value for key, value in (cfg.get("transformer") or {}).items() if value is not None}
    switches = {**(model_yaml.get("transformer") or {}), **overrides}  # a None override keeps the yaml's value
    xavier = switches.get("xavier_init")
    train, guard = cfg["train"], cfg["guard"]
    warmup = 0
    if train["warmup_epochs"] > 0:
        warmup = max(round(train["warmup_epochs"] * (steps_per_epoch or 0)), train["warmup_steps_min"])
    return Setting(
        block=BLOCK_NAMES.get(block, block),
        xavier_init=(block == "C3TR") if xavier is None else bool(xavier),  # None: each block's own default
        qk_norm=bool(switches.get("qk_norm", False)) and block == "C3TR",
        layer_scale=float(switches.get("layer_scale", 0.0)),
        max_norm=float(guard["max_norm"]),
        transformer_lr_mult=float(train["transformer_lr_mult"]),
        warmup_steps=warmup,
        cosine=bool(train["cos_lr"]) and train["lrf"] < 1.0,
        lr0=float(train["lr0"]),
        optimizer=train["optimizer"],
        precision=train["precision"],
        guard=bool(guard["enabled"]),
        nan_rate=float(cfg["faults"]["random_nan_rate"]),
    )


def _transformer_block(model_yaml: dict) -> str:
    modules = {layer[2] for part in ("backbone", "head") for layer in model_yaml.get(part, [])}
    found = [name for name in ("C3TRv5", "C3TR") if name in modules]
    return found[0] if found else "none"


__all__ = ["BLOCK_NAMES", "Setting", "describe"]
