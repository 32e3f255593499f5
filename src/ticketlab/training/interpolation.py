"""Linear interpolation between two trained networks and its error barrier.

Instability analysis (Frankle, Dziugaite, Roy & Carbin 2020, "Linear Mode Connectivity and
the Lottery Ticket Hypothesis"): train two copies of a network with different SGD noise,
evaluate the networks on the straight line between their weights, and measure how far the
error rises above the endpoints' (the error barrier). A low barrier means both copies ended
in one linearly connected region: the network is stable to SGD noise.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ticketlab.errors import TicketlabError
from ticketlab.training.evaluate import evaluate

STABLE_BARRIER = 0.02  # the paper's threshold: a barrier of at most 2 percentage points
BN_BATCH_SIZE = 500  # images per forward pass when batch norm recomputes its statistics


def interpolate(state_a: dict[str, Tensor], state_b: dict[str, Tensor], alpha: float
                ) -> dict[str, Tensor]:
    """(1 - alpha) * a + alpha * b for every floating tensor; integer buffers (batch norm's
    num_batches_tracked) are a's. Exactly a at alpha 0 and b at alpha 1 (`torch.lerp`), and a
    weight that is zero in both is zero at every alpha."""
    if state_a.keys() != state_b.keys():
        only = sorted(state_a.keys() ^ state_b.keys())
        raise TicketlabError(f"cannot interpolate state dicts with different keys ({only[:3]}"
                             f"{' ...' if len(only) > 3 else ''} in one only): interpolate "
                             "two networks of the same architecture")
    out = {}
    for k, a in state_a.items():
        b = state_b[k]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise TicketlabError(f"cannot interpolate {k}: {tuple(a.shape)} {a.dtype} vs "
                                 f"{tuple(b.shape)} {b.dtype}; interpolate two networks of "
                                 "the same architecture")
        out[k] = torch.lerp(a, b.to(a.device), alpha) if a.is_floating_point() else a.clone()
    return out


def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    """The batch-norm layers that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, images: Tensor, batch_size: int = BN_BATCH_SIZE
                         ) -> None:
    """Replaces the running statistics of `model`'s batch norms with those of `images`.

    Interpolated weights make the endpoints' running statistics wrong, so the paper
    recomputes them. Statistics are reset, then accumulated as a cumulative average
    (momentum None) over forward passes in train mode of `batch_size` images: the mean of
    the batches' means and (unbiased) variances, which is the mean over `images` when the
    batches are equal. Each layer's momentum and the model's train/eval mode are restored.
    """
    layers = batch_norms(model)
    momenta = [m.momentum for m in layers]
    was_training = model.training
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)


def error_along_line(model: nn.Module, state_a: dict[str, Tensor], state_b: dict[str, Tensor],
                     x: Tensor, y: Tensor, points: int = 30,
                     recompute_bn: Tensor | Callable[[nn.Module], None] | None = None
                     ) -> list[float]:
    """Classification error (1 - accuracy, a fraction) on (x, y) of `model` loaded with each
    of `points` evenly spaced interpolations, alpha = 0 (a) ... 1 (b) inclusive.

    Tickets need no mask here: a pruned weight is zero in both networks, so it is zero at
    every interpolated point. A model with batch norm recomputes its running statistics at
    each point when `recompute_bn` is given: training images (`recompute_batch_norm`) or a
    callable that does it given the loaded model; without it, the interpolated statistics
    are used. `model`'s own state is restored afterwards.
    """
    if points < 2:
        raise TicketlabError(f"points must be at least 2 (the two ends), not {points}")
    if recompute_bn is not None and not callable(recompute_bn):
        recompute_bn = partial(recompute_batch_norm, images=recompute_bn)
    if not batch_norms(model):
        recompute_bn = None
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    errors = []
    try:
        for i in range(points):
            model.load_state_dict(interpolate(state_a, state_b, i / (points - 1)))
            if recompute_bn is not None:
                recompute_bn(model)
            errors.append(1.0 - evaluate(model, x, y)[1])
    finally:
        model.load_state_dict(original)
    return errors


def barrier(errors: list[float]) -> float:
    """Error barrier height (the paper's instability): the highest error along the line
    above the mean of the two ends' errors. Never negative."""
    if len(errors) < 2:
        raise TicketlabError(f"a barrier needs the errors of at least the two ends, got "
                             f"{len(errors)}")
    return max(errors) - (errors[0] + errors[-1]) / 2


def is_stable(b: float, threshold: float = STABLE_BARRIER) -> bool:
    """Whether a barrier is low enough to call the two networks linearly mode connected."""
    return b <= threshold
