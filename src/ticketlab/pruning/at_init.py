"""Pruning at initialisation (Frankle et al. 2021): scores from the untrained network.

SNIP, GraSP and magnitude score from the initial weights and a few batches; SynFlow needs
no data and prunes iteratively. All follow ticketlab's convention: pruning KEEPS the
highest scores (`prune` removes the lowest), and weights the mask already prunes score
-inf. The model is never modified: scoring runs on a copy with the mask applied, in the
model's current train/eval mode (SynFlow's copy is in eval mode).

`AT_INIT` registers the criteria that score a network (not a pair of weight tensors, as
`criteria.CRITERIA` does), so `find --criterion snip` can use them: an entry is one scoring
function (model, mask, batches, input_shape, density) -> keep-scores and how many training
examples it wants; adding a criterion is one function and one `AT_INIT.add`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ticketlab.errors import TicketlabError
from ticketlab.pruning.density import rates_for_density
from ticketlab.pruning.magnitude import Rates, _check_rate, _lowest, magnitude_scores, prune
from ticketlab.pruning.mask import Mask
from ticketlab.registry import Registry

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


def cut(mask: Mask, scores: dict[str, Tensor], rates: Rates, *, scope: str = "global",
        exclude: tuple[str, ...] = ()) -> Mask:
    """`prune` ranking in double precision: `prune`'s global pool is float32, where SynFlow's
    scores (products over all layers, far beyond float32's range) would round into ties.
    Same rates, scopes, exclusions and tie rule (the earlier position goes first)."""
    double = {k: s.detach().double() for k, s in scores.items()}
    if scope != "global":
        return prune(mask, double, rates, scope=scope, exclude=exclude)
    if not isinstance(rates, float | int):
        raise TicketlabError("global pruning takes one rate, e.g. --rate 0.2")
    _check_rate(float(rates), "pruning rate")
    names = [k for k in mask if mask.groups[k] not in exclude]
    kept = [mask[k].reshape(-1).nonzero().squeeze(1) for k in names]
    pool = torch.cat([double[k].reshape(-1).to(i.device)[i] for k, i in zip(names, kept)])
    chosen = _lowest(pool, round(float(rates) * pool.numel()))
    new = {k: v.clone() for k, v in mask.items()}
    offsets = [0, *torch.tensor([i.numel() for i in kept]).cumsum(0).tolist()]
    for j, (k, idx) in enumerate(zip(names, kept)):
        local = chosen[(chosen >= offsets[j]) & (chosen < offsets[j + 1])] - offsets[j]
        new[k].view(-1)[idx.to(local.device)[local]] = False
    return mask.with_tensors(new)


def mask_from_scores(mask: Mask, scores: dict[str, Tensor], density: float) -> Mask:
    """Keeps the `density` (of all prunable weights) with the highest scores, one global
    ranking over the weights `mask` still keeps (`cut`, in double), so pruned weights stay
    pruned."""
    return cut(mask, scores, rates_for_density(mask, 1.0, density, scope="global"))


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
    return _synflow(model, density, input_shape, rounds, mask)[0]


def synflow_order(model: nn.Module, density: float, input_shape: tuple[int, ...],
                  rounds: int = 100, mask: Mask | None = None) -> dict[str, Tensor]:
    """SynFlow's iterative pruning as one ranking of the weights `mask` keeps (others -inf).

    A weight ranks by the round that removed it (later is higher; `synflow_mask`'s survivors
    highest), then by its score in that round (the survivors: by the last round's). Keeping
    the top `density` of it is `synflow_mask`'s mask, and its lowest are what SynFlow removed
    first (what the invert control keeps). Scores are the ranks 1..n, exact in float64.
    """
    start = Mask.dense(model) if mask is None else mask
    _, when, last = _synflow(model, density, input_shape, rounds, start)
    names = list(start)
    kept = [start[k].reshape(-1).nonzero().squeeze(1).cpu() for k in names]
    when_pool = torch.cat([when[k].reshape(-1)[i] for k, i in zip(names, kept)])
    score_pool = torch.cat([last[k].reshape(-1)[i] for k, i in zip(names, kept)])
    by_score = torch.sort(score_pool, stable=True).indices
    order = by_score[torch.sort(when_pool[by_score], stable=True).indices]
    ranks = torch.empty(order.numel(), dtype=torch.float64)
    ranks[order] = torch.arange(1, order.numel() + 1, dtype=torch.float64)
    out, offset = {}, 0
    for k, i in zip(names, kept):
        full = torch.full((start[k].numel(),), -math.inf, dtype=torch.float64)
        full[i] = ranks[offset:offset + i.numel()]
        offset += i.numel()
        out[k] = full.view(start[k].shape).to(start[k].device)
    return out


def _synflow(model: nn.Module, density: float, input_shape: tuple[int, ...], rounds: int,
             mask: Mask | None) -> tuple[Mask, dict[str, Tensor], dict[str, Tensor]]:
    """SynFlow's rounds: the final mask, each weight's round of removal (rounds + 1 for the
    survivors) and its score in that round (the survivors': the last round's), on the CPU."""
    if rounds < 1:
        raise TicketlabError(f"SynFlow needs at least 1 round (the paper uses 100), got {rounds}")
    mask = Mask.dense(model) if mask is None else mask
    start = mask.density()
    if not 0 < density <= start:
        raise TicketlabError(f"density must be a fraction in (0, {start:.4f}] (the mask's "
                             f"density), got {density}")
    twin, params = _synflow_net(model, mask)
    when = {k: torch.full(m.shape, float(rounds + 1), dtype=torch.float64) for k, m in
            mask.items()}
    last = {k: torch.full(m.shape, -math.inf, dtype=torch.float64) for k, m in mask.items()}
    for r in range(1, rounds + 1):
        scores = _synflow_round(twin, params, mask, tuple(input_shape))
        target = start * (density / start) ** (r / rounds)
        new = mask_from_scores(mask, scores, min(target, mask.density()))
        for k, m in mask.items():
            removed = (m & ~new[k]).cpu()
            when[k][removed] = float(r)
            last[k][removed] = scores[k].detach().cpu()[removed]
        mask = new
    for k, m in mask.items():  # the survivors: the last round's scores
        last[k][m.cpu()] = scores[k].detach().cpu()[m.cpu()]
    return mask, when, last


# ---------------------------------------------------------------------------- registry

Batch = tuple[Tensor, Tensor]
ScoreFn = Callable[[nn.Module, Mask, Sequence[Batch], tuple[int, ...], float], dict[str, Tensor]]


@dataclass(frozen=True)
class AtInit:
    """A criterion that scores a network (at its rewind point) under a mask.

    scores(model, mask, batches, input_shape, density): keep-scores over the mask's tensors,
    pruned entries -inf; `density` is the target, for criteria that reach it by their own
    rule (SynFlow's rounds), ignored by the others. examples(num_classes): how many
    training examples it scores with (0: none, no data drawn); balanced: drawn as evenly
    over the classes as possible. global_only: its ranking is one over all layers (it
    cannot prune each layer by its own rate).
    """

    scores: ScoreFn
    examples: Callable[[int], int]
    doc: str
    balanced: bool = False
    global_only: bool = False


AT_INIT: Registry[AtInit] = Registry("criterion")

GRASP_TEMPERATURE = 200.0
"""The reference GraSP code divides the logits by T=200 before the loss (both passes)."""

SNIP_EXAMPLES = 100
GRASP_EXAMPLES_PER_CLASS = 10


def _grasp_loss(out: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(out / GRASP_TEMPERATURE, y)


AT_INIT.add("snip", AtInit(
    lambda model, mask, batches, shape, density: snip_scores(model, batches, mask),
    lambda classes: SNIP_EXAMPLES,
    f"SNIP (Lee et al. 2019): |θ ⊙ ∂L/∂θ| at the rewind point, on one batch of "
    f"{SNIP_EXAMPLES} training examples"))
AT_INIT.add("grasp", AtInit(
    lambda model, mask, batches, shape, density: grasp_scores(model, batches, mask,
                                                             loss_fn=_grasp_loss),
    lambda classes: GRASP_EXAMPLES_PER_CLASS * classes,
    f"GraSP (Wang et al. 2020): keeps the highest θ ⊙ Hg, on {GRASP_EXAMPLES_PER_CLASS} "
    f"training examples per class, logits / {GRASP_TEMPERATURE:g} (the reference code)",
    balanced=True))
AT_INIT.add("synflow", AtInit(
    lambda model, mask, batches, shape, density: synflow_order(model, density, shape,
                                                               mask=mask),
    lambda classes: 0,
    "SynFlow (Tanaka et al. 2020): data-free, 100 rounds of |θ ⊙ ∂R/∂θ| on |θ|, "
    "float64; global only", global_only=True))


SCORING_CHUNK = 256
"""Examples per forward pass when scoring (gradients are summed over the chunks)."""


def scoring_batches(x: Tensor, y: Tensor, n: int, seed: int, *, balanced: bool = False,
                    num_classes: int | None = None) -> list[Batch]:
    """`n` examples of (x, y) drawn without replacement by `seed`, in nearly equal batches of
    at most `SCORING_CHUNK` (one batch up to that); `balanced`: round-robin over the classes
    in the drawn order, so each class gets n / classes (GraSP's 10 per class)."""
    if n < 1 or n > len(y):
        raise TicketlabError(f"cannot draw {n} scoring examples from {len(y)} training "
                             f"images: choose --criterion-examples between 1 and {len(y)}")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    if balanced:
        labels = y.detach().cpu()[order]
        turn = torch.empty_like(labels)
        for c in range(int(num_classes or int(labels.max()) + 1)):
            at = (labels == c).nonzero().squeeze(1)
            turn[at] = torch.arange(at.numel())
        order = order[torch.sort(turn * len(y) + labels, stable=True).indices]
    idx = order[:n].to(y.device)
    chunks = -(-n // SCORING_CHUNK)
    return list(zip(torch.tensor_split(x[idx], chunks), torch.tensor_split(y[idx], chunks)))


def at_init_scores(name: str, model: nn.Module, mask: Mask, x: Tensor, y: Tensor,
                   num_classes: int, *, seed: int, density: float,
                   examples: int | None = None) -> dict[str, Tensor]:
    """The scores of `AT_INIT` criterion `name` for `model` under `mask`, on examples of the
    training set (x, y) drawn by `seed` (`examples`: how many, default the criterion's).

    `model` is scored as it is (the caller loads the weights to score, the rewind point),
    on its device, in its train/eval mode.
    """
    entry = AT_INIT.get(name)
    n = entry.examples(num_classes) if examples is None else examples
    device = next(model.parameters()).device
    batches = [] if n == 0 else [
        (bx.to(device), by.to(device))
        for bx, by in scoring_batches(x, y, n, seed, balanced=entry.balanced,
                                      num_classes=num_classes)]
    return entry.scores(model, mask, batches, tuple(x.shape[1:]), density)


def check_at_init(name: str, *, scope: str, exclude: Sequence[str] = (),
                  granularity: str = "weight", threshold: float | None = None) -> None:
    """Refuses (one line) the settings an `AT_INIT` criterion cannot run with."""
    if threshold is not None:
        raise TicketlabError(f"--threshold cuts by trained magnitudes, not by {name}'s scores: "
                             "drop --threshold and give densities with --one-shot")
    if granularity != "weight":
        raise TicketlabError(f"criterion {name} scores single weights: use --granularity weight")
    entry = AT_INIT.get(name)
    if entry.global_only and scope != "global":
        raise TicketlabError(f"criterion {name} ranks all layers together (its rounds are "
                             "global): add --scope global")
    if entry.global_only and exclude:
        raise TicketlabError(f"criterion {name} ranks every prunable weight: drop --exclude")
