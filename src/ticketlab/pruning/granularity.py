"""Structured pruning: remove whole filters, channels, kernels, rows or columns by group score.

A structured mask is still a weight mask (whole slices False), so enforcement, density,
reports and mask comparison work unchanged. Granularities select the dims that index a group:

- `weight`: every weight is its own group (what `prune` does; `prune_structured` delegates).
- `filter` / `row`: dim 0, an output channel of a Conv2d weight (out, in, k, k) or an output
  neuron of a Linear weight (out, in).
- `channel` / `column`: dim 1, an input channel or an input feature.
- `kernel`: dims 0 and 1, one k x k kernel of a conv weight; it has no meaning on a 2-D
  weight and raises a TicketlabError there.

`filter` and `row` are one granularity under two names (so are `channel` and `column`): on a
Linear weight `filter` prunes rows, on a conv weight `row` prunes filters, so one name prunes
a whole CNN, its convs by filter and its classifier by neuron.

Bias and batch norm. The mask covers weights only, but a filter or neuron removed whole
takes its bias and its batch-norm channel with it: wherever a filter/row mask is enforced
(the Sparsifier, `find --granularity filter`), those entries are zeroed and held at zero too,
so the channel outputs exactly 0 (`pruning.channels` says how). Density counts weights only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from ticketlab.errors import TicketlabError
from ticketlab.pruning.criteria import NEGATIVE_SCORES
from ticketlab.pruning.magnitude import Rates, _check_rate, _lowest, prune
from ticketlab.pruning.mask import Mask

GRANULARITIES = ("weight", "filter", "channel", "kernel", "row", "column")
REDUCTIONS = ("l1", "l2", "mean")


def check_names(granularity: str, reduce: str = "mean") -> None:
    """Refuses an unknown granularity or reduction, naming the known ones."""
    if granularity not in GRANULARITIES:
        raise TicketlabError(f"unknown granularity '{granularity}': choose one of "
                             f"{', '.join(GRANULARITIES)}")
    if reduce not in REDUCTIONS:
        raise TicketlabError(f"unknown reduction '{reduce}': choose one of {', '.join(REDUCTIONS)}")


def group_dims(shape: torch.Size | tuple[int, ...], granularity: str,
               name: str = "the tensor") -> tuple[int, ...]:
    """The dims that index a group of `granularity` in a weight of `shape`."""
    ndim = len(shape)
    check_names(granularity)
    if granularity == "weight":
        return tuple(range(ndim))
    if granularity == "kernel":
        if ndim < 3:
            raise TicketlabError(f"kernel granularity needs a conv weight, but {name} is "
                                 f"{ndim}-D: use row or column for Linear layers")
        return (0, 1)
    if ndim < 2:
        raise TicketlabError(f"{granularity} granularity needs a weight of 2 or more dims, but "
                             f"{name} is {ndim}-D: use weight granularity or exclude it")
    return (0,) if granularity in ("filter", "row") else (1,)


def _as_groups(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    """(number of groups, group size), groups in row-major order over `dims`."""
    rest = [d for d in range(t.dim()) if d not in dims]
    n = math.prod(t.shape[d] for d in dims)
    return t.permute(*dims, *rest).reshape(n, -1)


def group_scores(scores: Tensor, granularity: str, reduce: str = "l1", *,
                 name: str = "the tensor") -> Tensor:
    """One score per group (shape: the group dims, e.g. (out,) for filters).

    l1 / l2: the L1 / L2 norm of the group's scores (with |w| as scores, the group's weight
    norms; meant for non-negative scores, since a norm ignores sign). mean: the average score,
    for any criterion, and comparable across layers whose groups differ in size.
    Entries scoring -inf (pruned, or vetoed by a *_same_sign criterion) are left out: a
    partly pruned group is scored over its other weights, and a group with no finite score
    scores -inf. At `weight` granularity each weight is a group and keeps its own score.
    """
    check_names(granularity, reduce)
    dims = group_dims(scores.shape, granularity, name)
    if granularity == "weight":
        return scores.clone()
    s = _as_groups(scores, dims)
    live = ~torch.isneginf(s)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    if reduce == "l1":
        out = torch.where(live, s.abs(), zero).sum(1)
    elif reduce == "l2":
        out = torch.where(live, s * s, zero).sum(1).sqrt()
    else:
        out = torch.where(live, s, zero).sum(1) / live.sum(1).clamp(min=1)
    out = out.masked_fill(~live.any(1), -math.inf)
    return out.view([scores.shape[d] for d in dims])


def _targets_by_tensor(mask: Mask, targets: Mapping[str, float] | None,
                       exclude: tuple[str, ...]) -> dict[str, float]:
    """Tensor name -> target; a tensor's own name wins over its group's."""
    if not targets:
        return {}
    known = set(mask) | set(mask.groups.values())
    for key, rate in targets.items():
        if key not in known:
            raise TicketlabError(f"targets name '{key}', which is neither a tensor nor a group "
                                 f"of the mask: use one of {sorted(known)}")
        if key in exclude or mask.groups.get(key) in exclude:
            raise TicketlabError(f"targets name '{key}', which exclude leaves unpruned: "
                                 "drop it from targets or from exclude")
        _check_rate(float(rate), f"target of {key}")
    out = {}
    for name in mask:
        if name in targets:
            out[name] = float(targets[name])
        elif mask.groups[name] in targets:
            out[name] = float(targets[mask.groups[name]])
    return out


def prune_structured(mask: Mask, scores: Mapping[str, Tensor], rates: Rates,
                     granularity: str = "filter", reduce: str = "mean", *,
                     scope: str = "layerwise", exclude: tuple[str, ...] = (),
                     targets: Mapping[str, float] | None = None) -> Mask:
    """A new mask with a fraction of the *remaining groups* removed, lowest group scores first.

    A group remains while any of its weights is kept; removing it sets its whole slice False.
    Scores of weights the mask already prunes are ignored (see `group_scores`). Counts are
    exact, round(rate * remaining groups), ties by position as in `prune`.

    rates: one fraction, or {group: fraction} (layer-wise only; groups not named are not
    pruned). targets: {tensor or group name: fraction} overriding rates for those tensors (a
    tensor's name wins over its group); with scope="global" those tensors are pruned to their
    own target and left out of the global ranking. exclude: groups never pruned.

    scope="global" ranks the group scores of all tensors together and removes that fraction
    of the pooled *groups* (not of weights): groups differ in size across layers, so the
    fraction of weights removed follows from which layers lose groups. l1 grows with group
    size, so global l1 prunes layers with small groups first; `mean` compares like with like.
    Global scope never removes a tensor's last group (its best-scoring one is kept): a layer
    with no filter or neuron left cuts the network in two, which no rate asks for.

    At `weight` granularity (no targets) this is `prune` itself; `reduce` is then unused.
    """
    if granularity == "weight" and not targets:
        return prune(mask, scores, rates, scope=scope, exclude=exclude)
    if scope not in ("layerwise", "global"):
        raise TicketlabError(f"unknown scope '{scope}': choose layerwise or global")
    if scope == "global" and not isinstance(rates, float | int):
        raise TicketlabError("global pruning takes one rate, e.g. --rate 0.2")
    override = _targets_by_tensor(mask, targets, exclude)

    def rate_of(name: str) -> float:
        if name in override:
            return override[name]
        if mask.groups[name] in exclude:
            return 0.0
        return float(rates) if isinstance(rates, float | int) else rates.get(mask.groups[name], 0.0)

    new = {k: v.clone() for k, v in mask.items()}
    kept_idx: dict[str, Tensor] = {}  # name -> flat indices of its remaining groups
    pooled: dict[str, Tensor] = {}  # name -> scores of its remaining groups
    dims: dict[str, tuple[int, ...]] = {}
    for name, m in mask.items():
        if mask.groups[name] in exclude and name not in override:
            continue
        dims[name] = group_dims(m.shape, granularity, name)
        s = scores[name].detach().to(m.device).masked_fill(~m, -math.inf)
        g = group_scores(s, granularity, reduce, name=name).reshape(-1)
        kept_idx[name] = _as_groups(m, dims[name]).any(1).nonzero().squeeze(1)
        pooled[name] = g[kept_idx[name]]

    def remove(name: str, local: Tensor) -> None:
        groups = _as_groups(new[name], dims[name]).clone()
        groups[kept_idx[name][local]] = False
        rest = [d for d in range(new[name].dim()) if d not in dims[name]]
        shape = [new[name].shape[d] for d in (*dims[name], *rest)]
        order = (*dims[name], *rest)
        new[name] = groups.view(shape).permute(*[order.index(d) for d in range(len(order))])

    ranked = [k for k in kept_idx if scope == "layerwise" or k in override]
    for name in ranked:
        rate = rate_of(name)
        _check_rate(rate, f"pruning rate of {name}")
        n = round(rate * kept_idx[name].numel())
        if n:
            remove(name, _lowest(pooled[name], n))
    if scope == "global":
        _check_rate(float(rates), "pruning rate")
        names = [k for k in kept_idx if k not in override]
        if names:
            pool = torch.cat([pooled[k].cpu().double() for k in names])
            offsets = torch.tensor([0, *[pooled[k].numel() for k in names]]).cumsum(0)
            protected = 0
            for j in range(len(names)):  # each tensor's best group is never removed
                lo, hi = int(offsets[j]), int(offsets[j + 1])
                if hi > lo:
                    pool[lo + int(pool[lo:hi].argmax())] = math.inf
                    protected += 1
            n = min(round(float(rates) * pool.numel()), pool.numel() - protected)
            chosen = _lowest(pool, n)
            for j, name in enumerate(names):
                lo, hi = int(offsets[j]), int(offsets[j + 1])
                local = chosen[(chosen >= lo) & (chosen < hi)] - lo
                if local.numel():
                    remove(name, local.to(kept_idx[name].device))
    return mask.with_tensors({k: v.contiguous() for k, v in new.items()})


def _remaining_groups(mask: Mask, granularity: str, exclude: tuple[str, ...]) -> int:
    """Groups of the pool (tensors not excluded) that still keep a weight."""
    return sum(int(_as_groups(m, group_dims(m.shape, granularity, name)).any(1).sum())
               for name, m in mask.items() if mask.groups[name] not in exclude)


def prune_structured_to_density(mask: Mask, scores: Mapping[str, Tensor], density: float,
                                granularity: str = "filter", reduce: str = "mean", *,
                                exclude: tuple[str, ...] = ()) -> Mask:
    """Global structured pruning to a *weight* density, for one-shot runs.

    A global rate counts pooled groups, and groups differ in size across layers, so no rate
    computed from counts alone hits a weight density. Removing the n lowest groups of one
    ranking removes more weights as n grows, so the n whose result is closest to `density` is
    found by bisection (ties: fewer groups). The density reached is exact up to one group.
    """
    if not 0 < density <= 1:
        raise TicketlabError(f"density must be a fraction in (0, 1], got {density}")
    if granularity == "weight":
        raise TicketlabError("prune_structured_to_density prunes groups: at weight "
                             "granularity use rates_for_density with prune")
    pool = _remaining_groups(mask, granularity, exclude)

    def cut(n: int) -> Mask:
        return prune_structured(mask, scores, n / pool, granularity, reduce, scope="global",
                                exclude=exclude)

    if density > mask.density():
        raise TicketlabError(f"the mask keeps {mask.density():.4f} already, less than the "
                             f"target density {density}: pruning cannot add weights back")
    if density == mask.density() or pool < 2:
        return mask.with_tensors({k: v.clone() for k, v in mask.items()})
    floor = cut(pool - 1)  # every remaining group of the pool but one removed
    if floor.density() > density:
        raise TicketlabError(f"density {density} is below what global {granularity} pruning "
                             f"can reach ({floor.density():.4f}, one group per layer left, "
                             "excluded layers whole): choose a higher density")
    lo, hi = 0, pool - 1  # cut(lo) is above the target, cut(hi) at or below it
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cut(mid).density() > density else (lo, mid)
    above, below = cut(lo), cut(hi)
    return above if above.density() - density <= density - below.density() else below


def check_structured(mask: Mask, granularity: str, reduce: str, criterion: str,
                     exclude: tuple[str, ...] = ()) -> None:
    """Refuses, before anything trains, a granularity a pruned tensor has no groups for, and
    a norm reduction of a criterion whose scores can be negative (a norm ignores the sign:
    l1 of small_final's -|w| ranks groups exactly as large_final does)."""
    if granularity == "weight":
        return
    for name, m in mask.items():
        group = mask.groups[name]
        if group in exclude:
            continue
        if granularity == "kernel" and m.dim() < 3:
            raise TicketlabError(f"kernel granularity needs conv weights, but {name} (group "
                                 f"'{group}') is {m.dim()}-D: add --exclude {group}, or prune "
                                 "by filter or channel")
        group_dims(m.shape, granularity, name)
    if criterion in NEGATIVE_SCORES and reduce != "mean":
        raise TicketlabError(f"criterion {criterion} scores can be negative and the {reduce} "
                             f"norm ignores sign (it would rank like another criterion): use "
                             "--reduce mean")
