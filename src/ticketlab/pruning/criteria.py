"""Mask criteria (Zhou et al. 2019): which weights to keep, scored from initial and final values.

A criterion maps (w_init, w_final) to scores of the same shape; pruning keeps the HIGHEST
scores (`prune` removes the lowest, ties by position). Every criterion is one function
registered in `CRITERIA` by `@criterion`; `criterion_scores` feeds it only the weights the
mask still keeps (flattened), so rank-based criteria rank among the remaining weights, as
the reference code's percentiles do, and already-pruned entries score -inf.

The course project's "LF mask" is not a ranking but a threshold: see `threshold_mask`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

import torch
from torch import Tensor

from ticketlab.errors import TicketlabError
from ticketlab.pruning.at_init import AT_INIT
from ticketlab.pruning.magnitude import Rates, prune
from ticketlab.pruning.mask import Mask
from ticketlab.registry import Registry


class Criterion(Protocol):
    def __call__(self, w_init: Tensor, w_final: Tensor, *,
                 generator: torch.Generator | None = None) -> Tensor: ...


CRITERIA: Registry[Criterion] = Registry("criterion")


def criterion(fn: Criterion) -> Criterion:
    """Registers `fn` in `CRITERIA` under its function name."""
    return CRITERIA.add(fn.__name__, fn)


def _rank_fraction(v: Tensor) -> Tensor:
    """(rank + 1) / n in (0, 1], ascending, ties by position: comparable across tensors."""
    flat = v.reshape(-1)
    order = torch.sort(flat, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(flat.numel(), device=flat.device)
    return ((ranks + 1).double() / flat.numel()).view(v.shape)


def _both(a: Tensor, b: Tensor) -> Tensor:
    """Keeping the top-k of min(rank(a), rank(b)) keeps what BOTH rankings keep.

    {min(r_a, r_b) >= t} = {r_a >= t} ∩ {r_b >= t}: every threshold on the score is the
    intersection of the two top-sets at one common rank threshold t (Zhou's reference code
    searches for that common percentile by bisection). Ranks are distinct (equal values go
    by position), so the top-k by this score is exactly such an intersection whenever one has
    k weights; otherwise k falls between two consecutive intersections, which differ by the
    two weights that tie on the score (one at rank t in each ranking), and `prune` drops the
    earlier one by position.
    """
    return torch.minimum(_rank_fraction(a), _rank_fraction(b))


@criterion
def large_final(w_init: Tensor, w_final: Tensor, *,
                generator: torch.Generator | None = None) -> Tensor:
    """|w_f|: magnitude pruning, what IMP uses (the default)."""
    return w_final.abs()


@criterion
def small_final(w_init: Tensor, w_final: Tensor, *,
                generator: torch.Generator | None = None) -> Tensor:
    """-|w_f|: keeps the smallest trained weights (Zhou et al.'s control)."""
    return -w_final.abs()


def large_init(w_init: Tensor, w_final: Tensor, *,
               generator: torch.Generator | None = None) -> Tensor:
    """|w_i|: keeps the largest initial weights (alias magnitude_init, Frankle et al. 2021)."""
    return w_init.abs()


# Magnitude at initialisation (Frankle et al. 2021's baseline) is this mask: |w| at the
# rewind point, among the weights the parent keeps. One name per mask, so one run.
CRITERIA.add("large_init", large_init, aliases=("magnitude_init",))


@criterion
def small_init(w_init: Tensor, w_final: Tensor, *,
               generator: torch.Generator | None = None) -> Tensor:
    """-|w_i|: keeps the smallest initial weights."""
    return -w_init.abs()


@criterion
def large_init_large_final(w_init: Tensor, w_final: Tensor, *,
                           generator: torch.Generator | None = None) -> Tensor:
    """Kept by both the large_init and the large_final mask (see `_both`)."""
    return _both(w_init.abs(), w_final.abs())


@criterion
def small_init_small_final(w_init: Tensor, w_final: Tensor, *,
                           generator: torch.Generator | None = None) -> Tensor:
    """Kept by both the small_init and the small_final mask (see `_both`)."""
    return _both(-w_init.abs(), -w_final.abs())


@criterion
def magnitude_increase(w_init: Tensor, w_final: Tensor, *,
                       generator: torch.Generator | None = None) -> Tensor:
    """|w_f| - |w_i|: keeps the weights that grew most in training."""
    return w_final.abs() - w_init.abs()


@criterion
def movement(w_init: Tensor, w_final: Tensor, *,
             generator: torch.Generator | None = None) -> Tensor:
    """|w_f - w_i|: keeps the weights that moved most in training."""
    return (w_final - w_init).abs()


@criterion
def random(w_init: Tensor, w_final: Tensor, *,
           generator: torch.Generator | None = None) -> Tensor:
    """Uniform scores from `generator` (a CPU generator; None uses the global RNG)."""
    return torch.rand(w_final.shape, generator=generator,
                      dtype=torch.float64).to(w_final.device)


def _same_sign(base: Criterion) -> Criterion:
    def same_sign(w_init: Tensor, w_final: Tensor, *,
                  generator: torch.Generator | None = None) -> Tensor:
        scores = base(w_init, w_final, generator=generator)
        flipped = torch.sign(w_init) != torch.sign(w_final)
        return scores.masked_fill(flipped, -math.inf)
    return same_sign


SAME_SIGN_BASES = ("large_final", "large_init", "large_init_large_final",
                   "magnitude_increase", "random")
"""Criteria with a `_same_sign` variant: weights whose sign flipped score -inf.

Zhou's supermask keeps weights at their initial value, so a weight that learned the opposite
sign is harmful there; the filter makes sense for criteria that keep weights because they
are (or became) large. It is left out of small_* (they keep weights training pushed towards
zero, whose signs carry nothing) and of movement (a sign flip is a large movement, so the
filter would contradict the criterion). random_same_sign is the control that separates the
effect of the sign filter from that of magnitude.

The -inf weights are pruned first, ties by position. If fewer same-sign weights remain than
the count to keep, some sign-flipped weights are kept (the last ones by position): prune to a
density at most the same-sign fraction to keep only agreeing signs.
"""

for _base in SAME_SIGN_BASES:
    CRITERIA.add(f"{_base}_same_sign", _same_sign(CRITERIA.get(_base)),
                 f"{_base}, weights whose sign flipped in training pruned first")


NEGATIVE_SCORES = frozenset({"small_final", "small_init", "magnitude_increase",
                             "magnitude_increase_same_sign"})
"""Criteria whose finite scores can be negative: a group's score must then be their mean,
not a norm (`pruning.granularity.group_scores`)."""


def get_criterion(name: str) -> Criterion:
    return CRITERIA.get(name)


def criterion_names() -> list[str]:
    """What `--criterion` takes: the (w_init, w_final) criteria, then those that score the
    network at its rewind point (`at_init.AT_INIT`: SNIP, GraSP, SynFlow)."""
    return [*CRITERIA.names(), *AT_INIT.names()]


def canonical_criterion(name: str) -> str:
    """The registered spelling of a criterion of either registry; one message otherwise."""
    for registry in (CRITERIA, AT_INIT):
        if name in registry:
            return registry.canonical(name)
    raise TicketlabError(f"unknown criterion '{name}': choose one of "
                         f"{', '.join(criterion_names())}")


def criterion_scores(name: str, init: Mapping[str, Tensor], final: Mapping[str, Tensor],
                     mask: Mask, seed: int = 0) -> dict[str, Tensor]:
    """Scores of criterion `name` for every tensor of `mask`; pruned entries score -inf.

    Only the kept weights are scored, so ranks are among the remaining weights. `seed` feeds
    the random criteria (one CPU generator, tensors in mask order).
    """
    fn = get_criterion(name)
    generator = torch.Generator().manual_seed(seed)
    scores = {}
    for k, m in mask.items():
        w_f = final[k].detach()
        w_i = init[k].detach().to(w_f.device)
        kept = m.to(w_f.device).reshape(-1).nonzero().squeeze(1)
        s = fn(w_i.reshape(-1)[kept], w_f.reshape(-1)[kept], generator=generator)
        full = torch.full((m.numel(),), -math.inf, dtype=s.dtype, device=s.device)
        full[kept] = s
        scores[k] = full.view(m.shape)
    return scores


def prune_by_criterion(name: str, init: Mapping[str, Tensor], final: Mapping[str, Tensor],
                       mask: Mask, rates: Rates, *, scope: str = "layerwise",
                       exclude: tuple[str, ...] = (), seed: int = 0) -> Mask:
    """`prune` with the scores of criterion `name` (see `prune` for rates, scope, exclude).

    With scope="global", magnitude scores compare raw values across tensors while rank-based
    ones (large_init_large_final, small_init_small_final) compare fractions of each tensor.
    """
    scores = criterion_scores(name, init, final, mask, seed)
    return prune(mask, scores, rates, scope=scope, exclude=exclude)


def check_alpha(alpha: float) -> None:
    """The threshold mask's alpha: a finite number >= 0 (one place for the message)."""
    if not (math.isfinite(alpha) and alpha >= 0):
        raise TicketlabError(f"threshold alpha must be a finite number >= 0 (the course project "
                             f"uses 1; 0 to 2 is sensible), got {alpha}")


def threshold_mask(final: Mapping[str, Tensor], mask: Mask, alpha: float) -> Mask:
    """The course project's LF mask: keep w where |w_f| > mean(|w|) + alpha * std(w).

    One global threshold over all prunable final weights the mask keeps (the concatenation
    of its tensors), as the method is stated; the notebook's code differs (mean of w, not
    |w|). std is the population std (numpy's default, which the notebook uses). The density
    is implied by alpha, not chosen: the caller reports `mask.density()` of the result.
    """
    check_alpha(alpha)
    values = torch.cat([final[k].detach()[m.to(final[k].device)].double()
                        for k, m in mask.items()])
    if values.numel() == 0:
        raise TicketlabError("the mask keeps no weights: there is nothing to threshold")
    threshold = values.abs().mean() + alpha * values.std(correction=0)
    new = {k: m & (final[k].detach().double().abs() > threshold).to(m.device)
           for k, m in mask.items()}
    return mask.with_tensors(new)
