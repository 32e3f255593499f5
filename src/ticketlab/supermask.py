"""Supermasks (Zhou et al. 2019): masks that make an UNTRAINED network accurate.

`evaluate_supermask` scores a mask applied to initial weights (e.g. the large_final_same_sign
mask of a trained copy); `train_supermask` learns a mask by gradient descent on per-weight
scores while every weight stays at its initial value. Neither touches the user's model:
evaluation runs a copy, training runs the model through `torch.func.functional_call` with
weights held outside it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from ticketlab.config import derive_seed
from ticketlab.data.dataset import Dataset
from ticketlab.errors import TicketlabError
from ticketlab.pruning.actions import apply_mask1
from ticketlab.pruning.mask import Mask
from ticketlab.training.evaluate import evaluate


def _state(model: nn.Module, init: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """The weights to use: `init` if given, else a detached copy of the model's own."""
    source = model.state_dict() if init is None else init
    return {k: v.detach().clone() for k, v in source.items()}


def _evaluate_states(model: nn.Module, states: list[dict[str, Tensor]], x: Tensor, y: Tensor,
                     batch_size: int = 2000) -> list[tuple[float, float]]:
    """(loss, accuracy) of `model` with each state loaded into one private copy."""
    clone = copy.deepcopy(model)
    results = []
    for state in states:
        clone.load_state_dict(state)
        results.append(evaluate(clone, x, y, batch_size))
    return results


def evaluate_supermask(model: nn.Module, mask: Mask, x: Tensor, y: Tensor, *,
                       init: Mapping[str, Tensor] | None = None, action: str = "rewind",
                       seed: int = 0, batch_size: int = 2000) -> tuple[float, float]:
    """(loss, accuracy) of the untrained network under `mask`; `model` is left unchanged.

    Weights: `init` (a full state dict; default the model's current one) with pruned weights
    at 0 and kept weights set by Mask-1 action `action`: `rewind` keeps their initial values
    (Zhou's supermask), `signed_constant` keeps only their signs (±std of each tensor).
    """
    mask.check_fits(model)
    state = apply_mask1(action, _state(model, init), mask, seed)
    return _evaluate_states(model, [state], x, y, batch_size)[0]


@dataclass(frozen=True)
class SupermaskMetrics:
    """Accuracies of a learned supermask; the thresholded mask is the one returned."""

    density: float  # of the returned mask, sigmoid(score) > 0.5
    expected_density: float  # mean keep-probability sigmoid(score)
    val_loss: float  # thresholded mask
    val_accuracy: float
    test_accuracy: float
    sampled_test_accuracy: float  # mean over Bernoulli samples of the mask (Zhou's protocol)


def _sample(p: Tensor, generator: torch.Generator) -> Tensor:
    """A Bernoulli(p) sample in the forward pass whose gradient goes straight to p."""
    b = torch.bernoulli(p.detach(), generator=generator)
    return b + (p - p.detach())  # exactly b: p - p.detach() is 0


def _masked(state: dict[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {**state, **{k: state[k] * m for k, m in masks.items()}}


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if not v > 0:
            raise TicketlabError(f"{name} must be positive, got {v}")


def train_supermask(model: nn.Module, data: Dataset, *, steps: int, lr: float = 0.1,
                    batch_size: int = 64, seed: int = 0,
                    init: Mapping[str, Tensor] | None = None,
                    samples: int = 10) -> tuple[Mask, SupermaskMetrics]:
    """Learns a supermask: weights frozen at `init`, one trainable score per prunable weight.

    Each step multiplies every prunable weight by a fresh Bernoulli(sigmoid(score)) sample
    and passes the sample's gradient straight through to the probability; Adam updates the
    scores only (they start at 0, keep-probability 0.5, Zhou's default). Other tensors
    (biases, buffers) stay at `init` (default: the model's current state; pass a
    `signed_constant` state dict for Zhou's signed-constant variant). The model runs in its
    current train/eval mode; buffers such as BatchNorm statistics change only a private copy.

    Returns the deterministic mask sigmoid(score) > 0.5, a plain Mask to save, compare and
    evaluate like any other, with its validation and test accuracy; `sampled_test_accuracy`
    is Zhou's number instead: the mean test accuracy over `samples` sampled masks.
    """
    _check_positive(steps=steps, lr=lr, samples=samples)
    per_epoch = data.iterations_per_epoch(batch_size)
    dense = Mask.dense(model)
    state = {k: v.to(data.device) for k, v in _state(model, init).items()}
    scores = {k: torch.zeros_like(state[k], dtype=torch.float32, requires_grad=True)
              for k in dense}
    optimizer = torch.optim.Adam(scores.values(), lr=lr)
    gen = torch.Generator(data.device).manual_seed(derive_seed(seed, "supermask"))
    order = data.epoch_order(seed, 0)
    for step in range(steps):
        epoch, i = divmod(step, per_epoch)
        if i == 0 and epoch:
            order = data.epoch_order(seed, epoch)
        batch = order[i * batch_size:(i + 1) * batch_size]
        masks = {k: _sample(s.sigmoid(), gen) for k, s in scores.items()}
        logits = functional_call(model, _masked(state, masks), (data.x_train[batch],))
        loss = F.cross_entropy(logits, data.y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return _finish(model, data, dense, state, scores, gen, samples)


@torch.no_grad()
def _finish(model: nn.Module, data: Dataset, dense: Mask, state: dict[str, Tensor],
            scores: dict[str, Tensor], gen: torch.Generator,
            samples: int) -> tuple[Mask, SupermaskMetrics]:
    probs = {k: s.sigmoid() for k, s in scores.items()}
    mask = dense.with_tensors({k: p > 0.5 for k, p in probs.items()})
    thresholded = [_masked(state, mask)]
    [(val_loss, val_acc)] = _evaluate_states(model, thresholded, data.x_val, data.y_val)
    [(_, test_acc)] = _evaluate_states(model, thresholded, data.x_test, data.y_test)
    sampled = [_masked(state, {k: torch.bernoulli(p, generator=gen) for k, p in probs.items()})
               for _ in range(samples)]
    sampled_acc = [acc for _, acc in _evaluate_states(model, sampled, data.x_test, data.y_test)]
    expected = sum(float(p.sum()) for p in probs.values()) / sum(p.numel() for p in probs.values())
    return mask, SupermaskMetrics(mask.density(), expected, val_loss, val_acc, test_acc,
                                  sum(sampled_acc) / samples)
