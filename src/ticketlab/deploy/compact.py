"""The `compact` export: a structured ticket's dead filters and neurons physically removed.

A channel is deleted only where deleting it changes nothing: its output is exactly zero.
That holds when every conv/linear layer and batch norm writing the channel is dead there: all
of the layer's weights into the channel pruned by the mask and its bias zero (or absent), and
the batch norm's gamma and beta zero (ticketlab's structured tickets zero these companions,
see `pruning.channels`). A zero channel stays zero through ReLU, pooling and flattening, so
the layers reading it lose the matching input columns without any change in their outputs.

Torch-Pruning's dependency graph says which layers share a channel (a conv, its batch norm,
the layers reading it, and in a residual network every block adding into the same tensor).
In a residual group a channel goes only if it is dead in every contributor: a channel one
branch still writes stays, and is counted as `kept_dead`. The network's output layers never
lose outputs. The result is checked against the masked model on the example before it is
returned, so an operation that turns a zero channel into a non-zero one (a sigmoid, an added
constant) is reported instead of exported wrongly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ticketlab.deploy.verify import TOLERANCE
from ticketlab.errors import TicketlabError
from ticketlab.pruning.mask import Mask

_CONV = nn.modules.conv._ConvNd
_NORM = nn.modules.batchnorm._BatchNorm
_LAYERS = (_CONV, nn.Linear)
# outputs agree to this, relative to the largest output: dropping exact zeros changes only the
# order of float additions (different matrix shapes take different kernels); the bound every
# export is verified to
CHECK_TOLERANCE = TOLERANCE
_NEEDS = "compact export needs Torch-Pruning: pip install 'ticketlab[deploy]'"


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise TicketlabError(_NEEDS) from None
    return torch_pruning


def check_structured_mask(mask: Mask) -> None:
    """Refuses a mask that prunes weights which are not whole output channels."""
    for name, m in mask.items():
        if m.dim() < 2:
            continue  # companions (biases, batch norm): they follow their layer's channels
        rows = m.reshape(m.shape[0], -1)
        partial = rows.any(1) & ~rows.all(1)
        if bool(partial.any()):
            raise TicketlabError(
                f"mask '{name}' prunes weights inside {int(partial.sum())} output channels "
                "(an unstructured ticket, or kernel/column/channel granularity): compact export "
                "removes whole filters or neurons only; export it with --format sparse")


def compact(model: nn.Module, mask: Mask, example: Tensor, *,
            round_to: int = 1) -> tuple[nn.Module, list[dict]]:
    """A physically smaller copy of `model` with `mask` applied (eval mode), and one record
    per layer that lost channels or kept dead ones: {layer, channels, kept, removed, kept_dead}.

    round_to: each shared channel count is rounded up to a multiple of it (never above the
    original) by keeping some dead channels, for hardware that prefers such widths.
    """
    if round_to < 1:
        raise TicketlabError(f"round_to must be a positive whole number, got {round_to}")
    mask.check_fits(model)
    check_structured_mask(mask)  # refused for what it is before asking for the extra
    tp = _torch_pruning()
    net = copy.deepcopy(model).eval()
    mask.apply_(net)
    with torch.no_grad():
        reference = net(example)
    names = {m: n for n, m in net.named_modules()}
    own_dead = {names[m]: _own_dead(m, names[m], mask) for m in net.modules()
                if isinstance(m, _LAYERS)}

    grads = {n: p.requires_grad for n, p in net.named_parameters()}
    net.requires_grad_(True)  # the graph is traced through autograd
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(net, example_inputs=example,
                                                          verbose=False)
    except Exception as e:  # Torch-Pruning traces through autograd; anything can fail
        raise TicketlabError(f"Torch-Pruning cannot trace {type(model).__name__} "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]}): "
                             "export it with --format sparse") from None
    outputs = _output_layers(graph, tp)
    plans = []
    for group in list(graph.get_all_groups(ignored_layers=outputs)):
        idxs = _deletable(group, graph, mask, names, tp, round_to)
        if idxs:
            root = group[0].dep
            plans.append((root.target.module, root.handler, idxs))
    width_before = {n: _width(m) for n, m in net.named_modules() if isinstance(m, _LAYERS)}
    for module, handler, idxs in plans:  # a root's own channels are in its group alone, so
        graph.get_pruning_group(module, handler, idxs).prune()  # plans stay valid as others go
    for n, p in net.named_parameters():
        p.requires_grad_(grads.get(n, True))
    net.eval()

    _check_equal(net, example, reference)
    records = []
    for n, m in net.named_modules():
        if not isinstance(m, _LAYERS):
            continue
        before, after = width_before[n], _width(m)
        removed = before - after
        kept_dead = own_dead[n] - removed
        if removed or kept_dead:
            records.append({"layer": n, "channels": before, "kept": after, "removed": removed,
                            "kept_dead": kept_dead})
    return fast_layout(net), records


def fast_layout(model: nn.Module) -> nn.Module:
    """Conv weights in channels-last layout, which oneDNN (and cuDNN) convolve fastest: the
    outputs are the same numbers (tested exact), the time on this CPU 1.2-1.5x shorter for
    Conv-4 and more for its narrower compact layers (docs/deploy.md). A plain memory format
    of the parameters: the model stays an ordinary module with an ordinary state dict."""
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    return model


def _width(module: nn.Module) -> int:
    return int(module.weight.shape[0])


def _dead_rows(module: nn.Module, name: str, mask: Mask) -> Tensor:
    """Output channels of a conv/linear layer whose weights the mask prunes whole."""
    key = f"{name}.weight" if name else "weight"
    if key not in mask:
        return torch.zeros(_width(module), dtype=torch.bool)
    m = mask[key]
    return ~m.reshape(m.shape[0], -1).any(1).cpu()


def _own_dead(module: nn.Module, name: str, mask: Mask) -> int:
    return int(_dead_rows(module, name, mask).sum())


def _zero_output(module: nn.Module, name: str, mask: Mask) -> Tensor | None:
    """Channels this module writes as exactly 0 whatever its input; None for a module whose
    channels cannot be deleted exactly (a norm mixing channels, an unknown layer)."""
    if isinstance(module, _LAYERS):
        dead = _dead_rows(module, name, mask)
        if module.bias is not None:
            dead &= module.bias.detach().cpu() == 0
        return dead
    if isinstance(module, _NORM):
        if not module.affine:  # outputs -mean/std at a zero channel
            return torch.zeros(module.num_features, dtype=torch.bool)
        return ((module.weight.detach() == 0) & (module.bias.detach() == 0)).cpu()
    return None


def _deletable(group: Any, graph: Any, mask: Mask, names: Mapping[nn.Module, str], tp: Any,
               round_to: int) -> list[int]:
    """Root indices of the group's channels that are zero in every module writing them,
    less the lowest-indexed of them that round_to keeps."""
    dummy = {tp.ops.OPTYPE.ELEMENTWISE, tp.ops.OPTYPE.RESHAPE, tp.ops.OPTYPE.CONCAT,
             tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.SLICE, tp.ops.OPTYPE.UNBIND,
             tp.ops.OPTYPE.EXPAND}
    width = len(group[0].root_idxs)
    dead = torch.ones(width, dtype=torch.bool)
    for item in group:
        node = item.dep.target
        if node.type in dummy:
            continue  # the add, flatten, concat...: Torch-Pruning maps their indices
        module = node.module
        if not isinstance(module, (*_LAYERS, _NORM)):
            return []  # e.g. a LayerNorm: deleting a zero channel changes its statistics
        if isinstance(module, _CONV) and module.groups != 1 and not (
                module.groups == module.in_channels == module.out_channels):
            return []  # grouped convs: Torch-Pruning cannot keep their groups consistent
        if not graph.is_out_channel_pruning_fn(item.dep.handler):
            continue  # a layer reading the channel: it loses the input column
        zero = _zero_output(module, names[module], mask)
        if zero is None:
            return []
        local = torch.as_tensor(item.idxs, dtype=torch.long)
        root = torch.as_tensor(item.root_idxs, dtype=torch.long)
        dead[root] &= zero[local]
    candidates = dead.nonzero().flatten().tolist()
    remaining = max(width - len(candidates), 1)
    keep = min(width, math.ceil(remaining / round_to) * round_to)
    return candidates[len(candidates) - (width - keep):] if keep < width else []


def _output_layers(graph: Any, tp: Any) -> list[nn.Module]:
    """The conv/linear layers whose outputs reach the network's output without passing
    through another such layer: their outputs are the network's, never removed."""
    found: list[nn.Module] = []
    # the model's outputs: Torch-Pruning's output nodes, or nodes nothing reads (it makes no
    # output node when the last layer's result is returned as it is)
    stack = [n for n in graph.module2node.values()
             if n.type == tp.ops.OPTYPE.OUTPUT or not n.outputs]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.module, _LAYERS):
            found.append(node.module)
            continue
        stack.extend(node.inputs)
    return found


def _check_equal(net: nn.Module, example: Tensor, reference: Tensor) -> None:
    with torch.no_grad():
        out = net(example)
    if out.shape != reference.shape:
        raise TicketlabError(f"the compact model outputs shape {tuple(out.shape)}, the masked "
                             f"model {tuple(reference.shape)}: export it with --format sparse")
    diff = float((out - reference).abs().max()) if out.numel() else 0.0
    scale = max(1.0, float(reference.abs().max()) if reference.numel() else 0.0)
    if not diff <= CHECK_TOLERANCE * scale:
        raise TicketlabError(
            f"the compact model differs from the masked model by {diff:.3g} (tolerance "
            f"{CHECK_TOLERANCE * scale:.3g}): the network turns a zero channel into a non-zero "
            "one somewhere; export it with --format sparse")


def resize_like(model: nn.Module, state: Mapping[str, Tensor]) -> nn.Module:
    """Resizes a freshly built model of the original architecture to a compact model's
    stored shapes and loads `state` into it, so a compact export loads without re-pruning."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        weight = state.get(prefix + "weight", state.get(prefix + "running_mean"))
        if weight is None or not isinstance(module, (*_LAYERS, _NORM)):
            continue
        try:
            _resize(module, weight.shape, state, prefix)
        except ValueError as e:
            raise TicketlabError(f"the compact state does not fit layer '{name}' ({e}): load "
                                 "it into the architecture it was exported from") from None
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:2]
        raise TicketlabError(f"the compact state does not fit {type(model).__name__} "
                             f"({' '.join(first)}): load it into the architecture it was "
                             "exported from") from None
    return fast_layout(model)


def _param(module: nn.Module, attr: str, shape: torch.Size) -> None:
    old = getattr(module, attr)
    if old is not None:
        setattr(module, attr, nn.Parameter(old.new_empty(shape), old.requires_grad))


def _resize(module: nn.Module, shape: torch.Size, state: Mapping[str, Tensor],
            prefix: str) -> None:
    if isinstance(module, _NORM):
        (n,) = shape
        module.num_features = n
        _param(module, "weight", shape)
        _param(module, "bias", shape)
        for buffer in ("running_mean", "running_var"):
            if getattr(module, buffer) is not None:
                setattr(module, buffer, getattr(module, buffer).new_empty(shape))
        return
    if len(shape) != module.weight.dim():
        raise ValueError(f"weight shape {tuple(shape)} for {tuple(module.weight.shape)}")
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = int(shape[0]), int(shape[1])
    else:
        if tuple(shape[2:]) != tuple(module.weight.shape[2:]):
            raise ValueError(f"kernel {tuple(shape[2:])} for {tuple(module.weight.shape[2:])}")
        groups = module.groups
        if groups != 1:  # depthwise stays depthwise; other grouped convs cannot be compact
            if not groups == module.in_channels == module.out_channels or shape[1] != 1:
                raise ValueError(f"grouped conv ({groups} groups)")
            module.groups = groups = int(shape[0])
        module.out_channels, module.in_channels = int(shape[0]), int(shape[1]) * groups
    _param(module, "weight", shape)
    if module.bias is not None:
        bias = state.get(prefix + "bias")
        _param(module, "bias", bias.shape if bias is not None else shape[:1])
