"""Mask actions (Zhou et al. 2019): what kept weights start from, what pruned weights become.

Mask-1 actions return a full state dict to load before retraining: the masked tensors hold
the action's values at kept entries and 0 at pruned ones; every other tensor (biases,
buffers) is copied from `init`, so actions differ only where the ablation says they do.
Mask-0 actions return, per masked tensor, the value each pruned weight is frozen at (0 at
kept entries); `FrozenEnforcer` (pruning/freeze.py) holds them there during training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

import torch
from torch import Tensor

from ticketlab.errors import TicketlabError
from ticketlab.pruning.mask import Mask


class Mask1Action(Protocol):
    """Signature of a Mask-1 action; `fresh` is a second initialisation (only reinit uses it)."""

    def __call__(self, init: Mapping[str, Tensor], mask: Mask, seed: int, *,
                 fresh: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]: ...


Mask0Action = Callable[[Mapping[str, Tensor], Mapping[str, Tensor], Mask], dict[str, Tensor]]

MASK1_ACTIONS: dict[str, Mask1Action] = {}
MASK0_ACTIONS: dict[str, Mask0Action] = {}

T = TypeVar("T")


def _registered(registry: dict[str, T], name: str, what: str) -> T:
    if name not in registry:
        raise TicketlabError(f"unknown {what} '{name}': choose one of {', '.join(registry)}")
    return registry[name]


def _with_kept(init: Mapping[str, Tensor], mask: Mask,
               kept_values: Callable[[str, Tensor, Tensor], Tensor]) -> dict[str, Tensor]:
    """init's state with each masked tensor set to kept_values(name, w_init, m) where kept
    and 0 where pruned."""
    state = {k: v.detach().clone() for k, v in init.items()}
    for k, m in mask.items():
        m = m.to(state[k].device)
        state[k] = torch.where(m, kept_values(k, state[k], m), 0.0)
    return state


def mask1_action(fn: Mask1Action) -> Mask1Action:
    """Registers a Mask-1 action in `MASK1_ACTIONS` under its function name."""
    MASK1_ACTIONS[fn.__name__] = fn
    return fn


def mask0_action(fn: Mask0Action) -> Mask0Action:
    """Registers a Mask-0 action in `MASK0_ACTIONS` under its function name."""
    MASK0_ACTIONS[fn.__name__] = fn
    return fn


def _std(w: Tensor) -> Tensor:
    """The tensor's initialisation scale: std over all its initial values (population)."""
    return w.double().std(correction=0).to(w.dtype)


@mask1_action
def rewind(init: Mapping[str, Tensor], mask: Mask, seed: int, *,
           fresh: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Kept weights at their initial values: the lottery ticket."""
    return _with_kept(init, mask, lambda k, w, m: w)


@mask1_action
def reinit(init: Mapping[str, Tensor], mask: Mask, seed: int, *,
           fresh: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Kept weights from `fresh`, another draw of the same initialisation (the control).

    Take `fresh` from e.g. `build_model(..., seed=other).state_dict()`: the model's own
    initialiser is the only faithful way to draw "like the original".
    """
    if fresh is None:
        raise TicketlabError("the reinit action needs fresh initial weights: pass fresh= "
                             "the state dict of the same model built with another seed")
    return _with_kept(init, mask, lambda k, w, m: fresh[k].detach().to(w.device, w.dtype))


@mask1_action
def reshuffle(init: Mapping[str, Tensor], mask: Mask, seed: int, *,
              fresh: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The kept initial values permuted within each tensor: same distribution, new places."""
    gen = torch.Generator().manual_seed(seed)

    def shuffled(k: str, w: Tensor, m: Tensor) -> Tensor:
        values = w[m]
        out = torch.zeros_like(w)
        out[m] = values[torch.randperm(values.numel(), generator=gen).to(w.device)]
        return out
    return _with_kept(init, mask, shuffled)


@mask1_action
def signed_constant(init: Mapping[str, Tensor], mask: Mask, seed: int, *,
                    fresh: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """sign(w_i) * std of the tensor's initial values: only the original signs survive."""
    return _with_kept(init, mask, lambda k, w, m: torch.sign(w) * _std(w))


@mask1_action
def random_signed_constant(init: Mapping[str, Tensor], mask: Mask, seed: int, *,
                           fresh: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """±std with random signs: the control showing that the original signs matter."""
    gen = torch.Generator().manual_seed(seed)

    def random_sign(k: str, w: Tensor, m: Tensor) -> Tensor:
        signs = torch.randint(0, 2, w.shape, generator=gen).to(w.device, w.dtype) * 2 - 1
        return signs * _std(w)
    return _with_kept(init, mask, random_sign)


def apply_mask1(name: str, init: Mapping[str, Tensor], mask: Mask, seed: int = 0, *,
                fresh: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The state dict Mask-1 action `name` gives the kept weights (pruned ones at 0)."""
    action = _registered(MASK1_ACTIONS, name, "mask-1 action")
    return action(init, mask, seed, fresh=fresh)


@mask0_action
def zero(init: Mapping[str, Tensor], final: Mapping[str, Tensor], mask: Mask
         ) -> dict[str, Tensor]:
    """Pruned weights are 0: the lottery ticket."""
    return {k: torch.zeros_like(init[k].detach()) for k in mask}


@mask0_action
def freeze_init(init: Mapping[str, Tensor], final: Mapping[str, Tensor], mask: Mask
                ) -> dict[str, Tensor]:
    """Pruned weights keep their initial values and are never trained."""
    return {k: init[k].detach() * ~m.to(init[k].device) for k, m in mask.items()}


@mask0_action
def freeze_init_zero_mask(init: Mapping[str, Tensor], final: Mapping[str, Tensor], mask: Mask
                          ) -> dict[str, Tensor]:
    """Pruned weights that moved toward zero in training (|w_f| < |w_i|) are 0, the others
    frozen at init: masking to zero is what helps, and only where training was heading."""
    frozen = {}
    for k, m in mask.items():
        w_i, w_f = init[k].detach(), final[k].detach().to(init[k].device)
        keep_init = ~m.to(w_i.device) & (w_f.abs() >= w_i.abs())
        frozen[k] = w_i * keep_init
    return frozen


def frozen_values(name: str, init: Mapping[str, Tensor], final: Mapping[str, Tensor],
                  mask: Mask) -> dict[str, Tensor]:
    """What Mask-0 action `name` freezes each pruned weight at (0 at kept entries)."""
    action = _registered(MASK0_ACTIONS, name, "mask-0 action")
    return action(init, final, mask)
