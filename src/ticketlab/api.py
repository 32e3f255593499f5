"""Small helpers for users who bring their own model and training loop."""

from __future__ import annotations

import torch
from torch import nn

from ticketlab.pruning.mask import Mask


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's state: keep the one to rewind to (step 0 or k)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def rewind(model: nn.Module, state: dict[str, torch.Tensor], mask: Mask) -> nn.Module:
    """Resets `model` to `state` (weights and buffers, e.g. BatchNorm) and applies `mask`.

    Build a new optimizer afterwards: rewinding restarts the optimizer state.
    """
    model.load_state_dict(state)
    return mask.apply_(model)
