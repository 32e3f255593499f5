"""A removed filter or neuron takes its bias and its batch-norm channel with it.

A structured mask zeroes whole output slices of a weight (filters of a conv, rows of a
linear layer). That alone leaves the channel alive: its output is the bias, a constant, and a
batch norm after it turns the constant into another one (in training mode exactly its beta),
which still feeds the next layer. So when every weight of an output channel is pruned, its
*companions* are zeroed and held at zero like pruned weights: the layer's bias entry and,
when a batch norm reads the layer's output directly, that channel's BN weight (gamma) and
bias (beta). The channel then outputs exactly 0 in training and in evaluation (gamma = beta =
0 whatever the running statistics), the next layer receives 0 from it, and the masked
network computes what the network with the channel deleted computes.

Companions are not weights: they are not counted in density and not saved in the mask; they
are derived from the mask (`with_companions`) wherever it is enforced. Which batch norm reads
which layer is traced once by a forward pass (`trace_followers`): a BN whose input tensor is
the layer's output tensor. Only output granularities (filter, row) have companions; masks
made at weight granularity are enforced exactly as before (a weight-level mask that happens
to empty a row keeps its bias, as the IMP of the paper does).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ticketlab.pruning.mask import Mask

OUTPUT_GRANULARITIES = ("filter", "row")
COMPANION_GROUP = "companion"
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def trace_followers(model: nn.Module, example: torch.Tensor) -> dict[str, list[str]]:
    """Weight name -> the parameters indexed by its output channel: its layer's bias and the
    weight and bias of any batch norm fed directly by the layer's output.

    Runs `model` once on `example` without gradients, in eval mode (running statistics are
    not touched), and puts the mode back. A meta-device model and example cost nothing."""
    outputs: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) -> (layer, output): kept
    found: dict[str, list[str]] = {}                     # alive so ids are not reused

    def after_layer(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            outputs[id(out)] = (name, out)
        return hook

    def before_norm(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            source = outputs.get(id(args[0])) if args else None
            if source is not None and source[1] is args[0] and module.affine:
                found.setdefault(source[0], []).extend([f"{name}.weight", f"{name}.bias"])
        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _LAYERS):
            handles.append(module.register_forward_hook(after_layer(name)))
        elif isinstance(module, _NORMS):
            handles.append(module.register_forward_pre_hook(before_norm(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    followers: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, _LAYERS):
            own = [f"{name}.bias"] if module.bias is not None else []
            if own or name in found:
                followers[f"{name}.weight"] = own + found.get(name, [])
    return followers


def companion_masks(mask: Mask, followers: Mapping[str, list[str]]) -> dict[str, torch.Tensor]:
    """Parameter name -> bool mask over its channels (False: the channel's filter or neuron
    is pruned whole), for the companions of tensors with at least one dead output channel."""
    out: dict[str, torch.Tensor] = {}
    for name, m in mask.items():
        if name not in followers or m.dim() < 2:
            continue
        alive = m.reshape(m.shape[0], -1).any(1)
        if bool(alive.all()):
            continue
        for companion in followers[name]:
            out[companion] = alive & out[companion] if companion in out else alive.clone()
    return out


def with_companions(mask: Mask, followers: Mapping[str, list[str]] | None) -> Mask:
    """`mask` plus its companions (group "companion"), to enforce during training; the mask
    itself is returned when there are none."""
    extra = companion_masks(mask, followers) if followers else {}
    if not extra:
        return mask
    return Mask({**dict(mask.items()), **extra},
                {**mask.groups, **dict.fromkeys(extra, COMPANION_GROUP)})
