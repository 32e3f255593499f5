"""An export is kept only if it computes what the masked model computes, on real inputs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ticketlab.errors import TicketlabError

# Exports sum the same products in another order (CSR kernels, smaller layers): float32
# rounding moves outputs by ~1e-6 of their scale. 1e-4 of the scale leaves a hundredfold
# margin over that and still catches one wrong weight, which moves logits by ~1e-2 or more.
TOLERANCE = 1e-4


@torch.inference_mode()
def max_difference(reference: nn.Module, exported: Callable[[Tensor], Tensor],
                   inputs: Tensor, batch_size: int = 256) -> tuple[float, float]:
    """(max |exported - reference|, max |reference|) over `inputs`, both in eval mode."""
    reference.eval()
    if isinstance(exported, nn.Module):
        exported.eval()
    diff = scale = 0.0
    for batch in inputs.split(batch_size):
        want = reference(batch)
        got = exported(batch)
        if got.shape != want.shape:
            raise TicketlabError(f"the export outputs shape {tuple(got.shape)}, the masked model "
                                 f"{tuple(want.shape)}: this is a bug, please report it")
        diff = max(diff, float((got.float() - want.float()).abs().max()))
        scale = max(scale, float(want.abs().max()))
    return diff, scale


def verify(reference: nn.Module, exported: Callable[[Tensor], Tensor], inputs: Tensor,
           what: str, tolerance: float = TOLERANCE) -> float:
    """Max abs difference of `exported` from `reference` on `inputs`; raises if it is over
    `tolerance` times the outputs' scale (at least 1)."""
    diff, scale = max_difference(reference, exported, inputs)
    bound = tolerance * max(1.0, scale)
    if not diff <= bound:  # NaN fails too
        raise TicketlabError(f"the {what} export differs from the masked model by {diff:.3g} on "
                             f"{len(inputs)} real inputs (allowed {bound:.3g}): nothing was "
                             "written; this is a bug, please report it with the run")
    return diff
