"""What a model costs to run, counted rather than timed: the same on every machine."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def count_macs(model: nn.Module, example: Tensor) -> int:
    """Multiply-accumulates of one forward call on `example` in the Conv and Linear layers
    (the ideal speed-up of a compact model is the dense model's count over its own)."""
    total = 0

    def hook(module: nn.Module, _: tuple, out: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.modules.conv._ConvNd):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += out.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += out.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return total
