"""Keeping pruned weights at exactly zero while *any* optimizer trains the model.

No forward hooks and no reparametrisation (unlike torch.nn.utils.prune): the parameters stay
plain tensors, so state dicts load into plain models and deepcopy works. Instead, around each
optimizer step, the gradients of pruned weights are zeroed (so Adam/momentum state of pruned
entries stays zero) and afterwards the pruned weights are zeroed again (so nothing an
optimizer does, weight decay included, can revive them). Gradients are zeroed as each
backward pass accumulates them too (a tensor hook), because an optimizer stepped with a
closure (LBFGS, Lightning's loop) runs the backward pass *inside* `step`, after its pre-hooks.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketlab.pruning.mask import Mask


class MaskEnforcer:
    """The masked tensors of one model, with fused in-place ops to enforce the mask."""

    def __init__(self, model: nn.Module, mask: Mask):
        mask.check_fits(model)
        params = dict(model.named_parameters())
        # Only tensors that have pruned entries cost anything; a dense level costs nothing.
        names = [k for k, m in mask.items() if not bool(m.all())]
        self.params = [params[k] for k in names]
        # Detached views share the parameters' storage: in-place ops on them need no no_grad.
        self.weights = [p.detach() for p in self.params]
        self.masks = [mask[k].to(device=params[k].device, dtype=params[k].dtype) for k in names]
        self.by_name = dict(zip(names, self.masks))

    def zero_grad_of(self, name: str, param: torch.Tensor) -> None:
        """Zeroes the pruned entries of one parameter's gradient (no-op if none pruned)."""
        m = self.by_name.get(name)
        if m is not None and param.grad is not None:
            param.grad.mul_(m)

    def zero_weights(self) -> None:
        if self.weights:
            torch._foreach_mul_(self.weights, self.masks)

    def zero_grads(self) -> None:
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):  # (`None in grads` would compare tensors to None)
            pairs = [(g, m) for g, m in zip(grads, self.masks) if g is not None]
            grads, masks = [g for g, _ in pairs], [m for _, m in pairs]
        else:
            masks = self.masks
        if grads:
            torch._foreach_mul_(grads, masks)

    @torch.no_grad()
    def zero_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Clears pruned entries of per-weight state (momentum, Adam moments)."""
        for p, m in zip(self.params, self.masks):
            for value in optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.mul_(m)


class Enforcement:
    """Handle returned by `enforce_mask`; `remove()` (or leaving the `with`) stops it."""

    def __init__(self, enforcer: MaskEnforcer, handles: list):
        self.enforcer = enforcer
        self._handles = handles

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> Enforcement:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def enforce_mask(model: nn.Module, mask: Mask,
                 optimizer: torch.optim.Optimizer | None = None) -> Enforcement:
    """Zeroes `model`'s pruned weights now and, with an optimizer, after its every step.

    For your own training loop:

        with enforce_mask(model, mask, optimizer):
            for x, y in batches:
                ...; loss.backward(); optimizer.step()   # pruned weights stay exactly 0
    """
    return install(MaskEnforcer(model, mask), optimizer)


def install(enforcer: MaskEnforcer, optimizer: torch.optim.Optimizer | None) -> Enforcement:
    """Applies `enforcer` now and around every step of `optimizer` (if given)."""
    enforcer.zero_weights()
    handles = []
    if optimizer is not None:
        enforcer.zero_optimizer_state(optimizer)
        handles = [
            optimizer.register_step_pre_hook(lambda *_: enforcer.zero_grads()),
            optimizer.register_step_post_hook(lambda *_: enforcer.zero_weights()),
            *grad_hooks(enforcer.params, enforcer.masks),
        ]
    return Enforcement(enforcer, handles)


def grad_hooks(params: list[torch.Tensor], masks: list[torch.Tensor]) -> list:
    """Zero each pruned gradient entry as soon as a backward pass has accumulated it."""
    def hook(m: torch.Tensor):
        def zero(p: torch.Tensor) -> None:
            if p.grad is not None:
                p.grad.mul_(m)
        return zero
    return [p.register_post_accumulate_grad_hook(hook(m)) for p, m in zip(params, masks)]
