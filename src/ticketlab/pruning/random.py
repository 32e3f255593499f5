"""Random masks for the random-pruning control."""

from __future__ import annotations

import torch

from ticketlab.pruning.mask import Mask


def random_like(mask: Mask, seed: int) -> Mask:
    """A uniformly random mask keeping exactly as many weights per tensor as `mask`."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, m in mask.items():
        kept = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=gen)[:kept]] = True
        tensors[name] = flat.view(m.shape).to(m.device)
    return mask.with_tensors(tensors)
