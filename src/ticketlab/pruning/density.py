"""One-shot pruning: the rates that take a mask to a target density in one step.

Layer-wise, the paper's per-group rates keep their meaning: one-shot pruning to density d
removes from each group what `t` rounds of iterative pruning would, (1 - rate)^t, with the
real number t chosen so the overall density is d. So one-shot pruning to the density of
iterative level n prunes every layer exactly as n rounds do (the paper's Figure 1
comparison), and a single rate for all groups gives every layer the same density.
"""

from __future__ import annotations

import math

from ticketlab.errors import TicketlabError
from ticketlab.pruning.magnitude import Rates
from ticketlab.pruning.mask import Mask


def rates_for_density(mask: Mask, rates: Rates, density: float, *, scope: str = "layerwise",
                      exclude: tuple[str, ...] = ()) -> Rates:
    """What to pass to `prune(mask, scores, ...)` to leave `density` of all prunable weights."""
    if not 0 < density <= 1:
        raise TicketlabError(f"density must be a fraction in (0, 1], got {density}")
    counts = mask.counts()  # name -> (kept, total)
    total = sum(t for _, t in counts.values())
    target = density * total
    kept_now = sum(k for k, _ in counts.values())
    if target > kept_now:
        raise TicketlabError(f"the mask keeps {kept_now / total:.4f} already, less than the "
                             f"target density {density}: pruning cannot add weights back")

    def rate_of(group: str) -> float:
        if group in exclude:
            return 0.0
        return float(rates if isinstance(rates, float | int) else rates.get(group, 0.0))

    def group_rate(name: str) -> float:
        return rate_of(mask.groups[name])

    fixed = sum(k for name, (k, _) in counts.items() if group_rate(name) == 0)
    if target < fixed:
        raise TicketlabError(f"density {density} is below what the unpruned groups keep "
                             f"({fixed / total:.4f}): prune more groups or choose a higher "
                             "density")
    if scope == "global":
        pool = kept_now - fixed
        return 0.0 if pool == 0 else (kept_now - target) / pool

    def kept_after(t: float) -> float:
        return sum(k * (1 - group_rate(name)) ** t for name, (k, _) in counts.items())

    lo, hi = 0.0, 1.0
    while kept_after(hi) > target and hi < 1e6:
        hi *= 2
    for _ in range(200):  # bisection: kept_after decreases in t
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept_after(mid) > target else (lo, mid)
    t = (lo + hi) / 2
    below_one = math.nextafter(1.0, 0.0)  # `prune` takes rates in [0, 1)
    return {g: min(1 - (1 - rate_of(g)) ** t, below_one)
            for g in dict.fromkeys(mask.groups.values()) if rate_of(g) > 0}
