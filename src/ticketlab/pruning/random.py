"""Random masks for the random-pruning control."""

from __future__ import annotations

import math

import torch

from ticketlab.pruning.granularity import group_dims
from ticketlab.pruning.mask import Mask


def random_like(mask: Mask, seed: int, granularity: str = "weight") -> Mask:
    """A uniformly random mask with `mask`'s structure: per tensor, as many kept weights
    (`weight`) or as many removed groups (any other granularity) as `mask`.

    A structured control must remove whole filters / neurons too, or it would test a
    different kind of sparsity than the ticket. At a structured granularity the groups of each
    tensor are permuted uniformly at random, each carrying its own pattern: removed groups
    land on a uniformly random set of the same size (so the weight count is kept as well),
    and a partly pruned group stays partly pruned. Tensors the mask leaves whole (excluded
    layers) or empties stay as they are. `weight` draws kept positions as before.
    """
    if granularity != "weight":
        return _random_groups(mask, seed, granularity)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, m in mask.items():
        kept = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=gen)[:kept]] = True
        tensors[name] = flat.view(m.shape).to(m.device)
    return mask.with_tensors(tensors)


def _random_groups(mask: Mask, seed: int, granularity: str) -> Mask:
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, m in mask.items():
        if bool(m.all()) or not bool(m.any()):  # nothing to move (and maybe no groups: kernel)
            tensors[name] = m.clone()
            continue
        dims = group_dims(m.shape, granularity, name)
        rest = [d for d in range(m.dim()) if d not in dims]
        order = (*dims, *rest)
        groups = m.cpu().permute(*order).reshape(math.prod(m.shape[d] for d in dims), -1)
        shuffled = groups[torch.randperm(groups.shape[0], generator=gen)]
        shape = [m.shape[d] for d in order]
        back = [order.index(d) for d in range(m.dim())]
        tensors[name] = shuffled.view(shape).permute(*back).contiguous().to(m.device)
    return mask.with_tensors(tensors)
