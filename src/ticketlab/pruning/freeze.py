"""Holding pruned weights at frozen, possibly non-zero values while any optimizer trains.

The Mask-0 actions freeze_init and freeze_init_zero_mask keep pruned weights at fixed values
instead of zero. Like `MaskEnforcer`, and for the same reasons, this works around the
optimizer step rather than by reparametrisation: pruned gradients are zeroed before the step
and, after it, w = w * m + frozen restores every pruned weight exactly (weight decay or Adam
state cannot move it).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ticketlab.errors import TicketlabError
from ticketlab.pruning.enforce import Enforcement, MaskEnforcer, install
from ticketlab.pruning.mask import Mask


class FrozenEnforcer(MaskEnforcer):
    """A `MaskEnforcer` whose pruned value is each weight's frozen value, not 0.

    `zero_weights` keeps its name (it restores the pruned entries' value) so a FrozenEnforcer
    drops into any loop that drives a MaskEnforcer.
    """

    def __init__(self, model: nn.Module, mask: Mask, frozen: Mapping[str, Tensor]):
        super().__init__(model, mask)
        params = dict(model.named_parameters())
        names = [k for k, m in mask.items() if not bool(m.all())]  # as MaskEnforcer's
        missing = [k for k in names if k not in frozen]
        if missing:
            raise TicketlabError(f"no frozen values for {missing}: pass the result of a "
                                 "mask-0 action for this mask")
        for k in names:
            if frozen[k].shape != params[k].shape:
                raise TicketlabError(f"frozen values of '{k}' have shape "
                                     f"{tuple(frozen[k].shape)}, the parameter "
                                     f"{tuple(params[k].shape)}: use this model's mask")
        # Zero at kept entries, so w * m + frozen leaves kept weights untouched.
        self.frozen = [frozen[k].detach().to(params[k].device, params[k].dtype) * (1 - m)
                       for k, m in zip(names, self.masks)]

    def zero_weights(self) -> None:
        """Pruned weights back to their frozen values: w = w * m + frozen."""
        if self.weights:
            torch._foreach_mul_(self.weights, self.masks)
            torch._foreach_add_(self.weights, self.frozen)


def enforce_frozen(model: nn.Module, mask: Mask, frozen: Mapping[str, Tensor],
                   optimizer: torch.optim.Optimizer | None = None) -> Enforcement:
    """`enforce_mask` with pruned weights held at `frozen` (a mask-0 action's result).

    Sets the pruned weights now and, with an optimizer, after its every step; the kept
    weights are left as they are (load a mask-1 action's state dict first).
    """
    return install(FrozenEnforcer(model, mask, frozen), optimizer)
