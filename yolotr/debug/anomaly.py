"""`debug.anomaly_hooks`: names the first module whose forward output was non-finite on a bad step.

Each check reads a flag from the device (a host sync per module), which is why it is a debug switch. Hooks fire in
execution order, so the first name recorded in a step is where the non-finite values appeared.
"""

from __future__ import annotations

import torch
from torch import nn


def _first_tensor(output):
    if torch.is_tensor(output):
        return output
    if isinstance(output, (list, tuple)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


class AnomalyHooks:
    def __init__(self, model: nn.Module):
        self.first_bad: str | None = None
        for name, module in model.named_modules():
            if name:
                module.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def check(module, inputs, output):
            tensor = _first_tensor(output)
            if self.first_bad is None and tensor is not None and tensor.is_floating_point():
                if not bool(torch.isfinite(tensor).all()):
                    self.first_bad = name

        return check

    def take(self) -> str | None:
        name, self.first_bad = self.first_bad, None
        return name
