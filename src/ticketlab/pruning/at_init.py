"""Pruning at initialisation (Frankle et al. 2021): scores from the untrained network.

SNIP, GraSP and magnitude score from the initial weights and a few batches; SynFlow needs
no data and prunes iteratively. All follow ticketlab's convention: pruning KEEPS the
highest scores (`prune` removes the lowest), and weights the mask already prunes score
-inf. The model is never modified: scoring runs on a copy with the mask applied, in the
model's current train/eval mode (SynFlow's copy is in eval mode).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ticketlab.errors import TicketlabError
from ticketlab.pruning.density import rates_for_density
from ticketlab.pruning.magnitude import magnitude_scores, prune
from ticketlab.pruning.mask import Mask

Batches = Iterable[tuple[Tensor, Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]


def _masked_copy(model: nn.Module, mask: Mask | None) -> tuple[nn.Module, Mask, list[Tensor]]:
    """A copy of `model` with `mask` applied, the mask, and the copy's masked parameters."""
    mask = Mask.dense(model) if mask is None else mask
    mask.check_fits(model)
    twin = mask.apply_(copy.deepcopy(model))
    params = dict(twin.named_parameters())
    return twin, mask, [params[k] for k in mask]


def _restrict(scores: dict[str, Tensor], mask: Mask) -> dict[str, Tensor]:
    """Pruned weights score -inf, so no ranking can keep them."""
    return {k: s.detach().masked_fill(~mask[k].to(s.device), -math.inf)
            for k, s in scores.items()}


def _gradient(model: nn.Module, params: list[Tensor], batches: Batches,
              loss_fn: LossFn) -> list[Tensor]:
    """∂L/∂θ summed over the batches (one backward pass per batch)."""
    total = [torch.zeros_like(p) for p in params]
    seen = False
    for x, y in batches:
        grads = torch.autograd.grad(loss_fn(model(x), y), params)
        total = [t + g for t, g in zip(total, grads)]
        seen = True
    if not seen:
        raise TicketlabError("no batches to score with: pass at least one (x, y) batch")
    return total


def snip_scores(model: nn.Module, batches: Batches, mask: Mask | None = None,
                loss_fn: LossFn = F.cross_entropy) -> dict[str, Tensor]:
    """SNIP (Lee et al. 2019): |θ ⊙ ∂L/∂θ|, the gradient summed over `batches` of (x, y)."""
    twin, mask, params = _masked_copy(model, mask)
    grads = _gradient(twin, params, batches, loss_fn)
    return _restrict({k: (p * g).abs() for k, p, g in zip(mask, params, grads)}, mask)


def grasp_scores(model: nn.Module, batches: Batches, mask: Mask | None = None,
                 loss_fn: LossFn = F.cross_entropy) -> dict[str, Tensor]:
    """GraSP (Wang et al. 2020) as a KEEP-score: θ ⊙ Hg, i.e. minus the paper's S = -θ ⊙ Hg.

    The paper removes the weights with the highest S; keeping the highest θ ⊙ Hg is the
    same mask. g = ∂L/∂θ summed over `batches`; Hg = Σ_b ∂(∂L_b/∂θ · g)/∂θ by double
    backprop (g held constant). The reference code divides the logits by a temperature
    (200): pass `loss_fn=lambda out, y: F.cross_entropy(out / 200, y)` for that.
    """
    batches = list(batches)
    twin, mask, params = _masked_copy(model, mask)
    g = _gradient(twin, params, batches, loss_fn)
    hg = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        grads = torch.autograd.grad(loss_fn(twin(x), y), params, create_graph=True)
        dot = sum((gb * gc).sum() for gb, gc in zip(grads, g))
        hg = [h + d for h, d in zip(hg, torch.autograd.grad(dot, params))]
    return _restrict({k: p * h for k, p, h in zip(mask, params, hg)}, mask)


def magnitude_init_scores(model: nn.Module, mask: Mask | None = None) -> dict[str, Tensor]:
    """|θ| at initialisation (Frankle et al. 2021's magnitude-at-init baseline)."""
    mask = Mask.dense(model) if mask is None else mask
    return _restrict(magnitude_scores(model, mask), mask)


def mask_from_scores(mask: Mask, scores: dict[str, Tensor], density: float) -> Mask:
    """Keeps the `density` (of all prunable weights) with the highest scores, one global
    ranking over the weights `mask` still keeps: `prune`, so pruned weights stay pruned.

    Scores are divided by their largest magnitude first (in double): `prune` ranks in
    float32, and SynFlow's double-precision scores can lie beyond its range.
    """
    kept = [s.detach().double()[mask[k].to(s.device)] for k, s in scores.items()]
    top = max((float(v.abs().max()) for v in kept if v.numel()), default=0.0)
    scale = top if math.isfinite(top) and top > 0 else 1.0
    rate = rates_for_density(mask, 1.0, density, scope="global")
    return prune(mask, {k: s.detach().double() / scale for k, s in scores.items()},
                 rate, scope="global")


def _synflow_net(model: nn.Module, mask: Mask) -> tuple[nn.Module, list[Tensor]]:
    """A double-precision copy with every parameter replaced by |θ|, in eval mode."""
    twin = _masked_copy(model, mask)[0].double().eval()
    with torch.no_grad():
        for p in twin.parameters():
            p.abs_()
    params = dict(twin.named_parameters())
    return twin, [params[k] for k in mask]


def _synflow_round(twin: nn.Module, params: list[Tensor], mask: Mask,
                   input_shape: tuple[int, ...]) -> dict[str, Tensor]:
    mask.apply_(twin)
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=params[0].device)
    grads = torch.autograd.grad(twin(ones).sum(), params)
    return _restrict({k: (p * g).abs() for k, p, g in zip(mask, params, grads)}, mask)


def synflow_scores(model: nn.Module, input_shape: tuple[int, ...],
                   mask: Mask | None = None) -> dict[str, Tensor]:
    """SynFlow's score for one round: |θ ⊙ ∂R/∂θ|, R the sum of the output of the network
    with |θ| everywhere on an all-ones input (batch of 1, float64 against overflow)."""
    mask = Mask.dense(model) if mask is None else mask
    twin, params = _synflow_net(model, mask)
    return _synflow_round(twin, params, mask, tuple(input_shape))


def synflow_mask(model: nn.Module, density: float, input_shape: tuple[int, ...],
                 rounds: int = 100, mask: Mask | None = None) -> Mask:
    """SynFlow (Tanaka et al. 2020): iterative, data-free pruning to `density`.

    Round r of `rounds` prunes globally to d0 * (density / d0)^(r / rounds) (d0 the starting
    density: 1 for a dense model, the paper's exponential schedule), rescoring with the
    current mask each round. The network is evaluated in double precision: R is a product
    over all layers and overflows or underflows float32 on deep nets (the reference code has
    a double-precision option for this). Only parameters are made positive; at
    initialisation batch-norm buffers are mean 0, variance 1 anyway.
    """
    if rounds < 1:
        raise TicketlabError(f"SynFlow needs at least 1 round (the paper uses 100), got {rounds}")
    mask = Mask.dense(model) if mask is None else mask
    start = mask.density()
    if not 0 < density <= start:
        raise TicketlabError(f"density must be a fraction in (0, {start:.4f}] (the mask's "
                             f"density), got {density}")
    twin, params = _synflow_net(model, mask)
    for r in range(1, rounds + 1):
        scores = _synflow_round(twin, params, mask, tuple(input_shape))
        target = start * (density / start) ** (r / rounds)
        mask = mask_from_scores(mask, scores, min(target, mask.density()))
    return mask
