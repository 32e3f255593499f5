"""Pruning by scores: remove a fraction of the *remaining* weights, lowest scores first.

Counts are exact (round(rate * remaining) per tensor, or over the pool for global pruning)
and ties are broken deterministically: among equal scores, the weight that comes first
(in parameter order, then in flattened order) is pruned first. Magnitude pruning is the
score |w| of the trained weights; other criteria only supply other scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ticketlab.errors import TicketlabError
from ticketlab.pruning.mask import Mask

Rates = float | Mapping[str, float]


def _lowest(scores: Tensor, n: int) -> Tensor:
    """Positions of the n lowest scores; a stable sort breaks ties by position."""
    return torch.sort(scores, stable=True).indices[:n]


def _check_rate(rate: float, what: str) -> None:
    if not 0 <= rate < 1:
        raise TicketlabError(f"{what} must be a fraction in [0, 1), got {rate}")


def prune(mask: Mask, scores: Mapping[str, Tensor], rates: Rates, *,
          scope: str = "layerwise", exclude: tuple[str, ...] = ()) -> Mask:
    """A new mask with a fraction of `mask`'s kept weights removed, lowest scores first.

    rates: one fraction for every group, or {group: fraction} (layer-wise only; groups not
    named are not pruned). scope: `layerwise` (each tensor loses its own fraction) or
    `global` (one ranking over all tensors). exclude: groups never pruned, e.g. ("output",).
    """
    def rate_of(name: str) -> float:
        group = mask.groups[name]
        if group in exclude:
            return 0.0
        return rates if isinstance(rates, float | int) else rates.get(group, 0.0)

    new = {k: v.clone() for k, v in mask.items()}
    if scope == "layerwise":
        for name, m in new.items():
            rate = float(rate_of(name))
            _check_rate(rate, f"pruning rate of {name}")
            flat = m.view(-1)
            kept = flat.nonzero().squeeze(1)
            n = round(rate * kept.numel())
            if n:
                s = scores[name].reshape(-1).to(kept.device)[kept]
                flat[kept[_lowest(s, n)]] = False
    elif scope == "global":
        if not isinstance(rates, float | int):
            raise TicketlabError("global pruning takes one rate, e.g. --rate 0.2")
        _check_rate(float(rates), "pruning rate")
        names = [k for k in new if mask.groups[k] not in exclude]
        kept = [new[k].view(-1).nonzero().squeeze(1) for k in names]
        pool = torch.cat([scores[k].reshape(-1).to(i.device)[i].float()
                          for k, i in zip(names, kept)])
        n = round(float(rates) * pool.numel())
        chosen = _lowest(pool, n)
        offsets = torch.tensor([0, *[i.numel() for i in kept]]).cumsum(0)
        for j, (k, idx) in enumerate(zip(names, kept)):
            lo, hi = int(offsets[j]), int(offsets[j + 1])
            local = chosen[(chosen >= lo) & (chosen < hi)] - lo
            new[k].view(-1)[idx[local]] = False
    else:
        raise TicketlabError(f"unknown scope '{scope}': choose layerwise or global")
    return mask.with_tensors(new)


def _weights(source: nn.Module | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    if isinstance(source, nn.Module):
        return dict(source.named_parameters())
    return source


def magnitude_scores(weights: nn.Module | Mapping[str, Tensor], mask: Mask) -> dict[str, Tensor]:
    w = _weights(weights)
    return {k: w[k].detach().abs() for k in mask}


def prune_magnitude(weights: nn.Module | Mapping[str, Tensor], mask: Mask, rates: Rates = 0.2,
                    *, scope: str = "layerwise", exclude: tuple[str, ...] = ()) -> Mask:
    """Iterative magnitude pruning's step: drop the smallest trained weights still kept.

    >>> mask = prune_magnitude(model, mask, {"fc": 0.2, "output": 0.1})  # the paper's LeNet
    """
    return prune(mask, magnitude_scores(weights, mask), rates, scope=scope, exclude=exclude)
