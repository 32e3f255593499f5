"""What every model shares: which tensors are prunable (and their group), and initialisation.

Any `nn.Module` works with ticketlab: `prunable_groups` finds the weights of its Linear and
Conv layers and calls the last Linear layer `output`. A model that needs something else
(say, unpruned shortcut convolutions) defines its own `prunable_groups()` method.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketlab.errors import TicketlabError

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_groups(model: nn.Module) -> dict[str, str]:
    """Parameter name -> group (`conv`, `fc` or `output`) for every prunable weight.

    Biases and normalisation parameters are never prunable.
    """
    own = getattr(model, "prunable_groups", None)
    if callable(own):
        return dict(own())
    return default_prunable_groups(model)


def default_prunable_groups(model: nn.Module) -> dict[str, str]:
    groups: dict[str, str] = {}
    last_linear = None
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, _CONV):
            groups[prefix + "weight"] = "conv"
        elif isinstance(module, nn.Linear):
            groups[prefix + "weight"] = "fc"
            last_linear = prefix + "weight"
    if last_linear is not None:
        groups[last_linear] = "output"
    if not groups:
        raise TicketlabError(
            f"{type(model).__name__} has no Linear or Conv layer to prune: define a "
            "prunable_groups() method returning {parameter name: group}"
        )
    return groups


INITS = ("glorot_normal", "glorot_uniform", "kaiming_normal", "kaiming_uniform", "torch_default")


def init_weights(model: nn.Module, scheme: str = "glorot_normal", seed: int = 0) -> nn.Module:
    """Re-initialises `model` in place from `seed` alone (the global RNG is left untouched).

    Weights of Linear/Conv layers follow `scheme` (the paper uses Glorot normal); their
    biases start at zero; normalisation layers at weight 1, bias 0 and fresh running
    statistics (also in a model that has trained).
    """
    if scheme not in INITS:
        raise TicketlabError(f"unknown init '{scheme}': choose one of {', '.join(INITS)}")
    gen = torch.Generator().manual_seed(seed)
    if scheme == "torch_default":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return model
    fn = {
        "glorot_normal": nn.init.xavier_normal_,
        "glorot_uniform": nn.init.xavier_uniform_,
        "kaiming_normal": lambda w, generator: nn.init.kaiming_normal_(
            w, nonlinearity="relu", generator=generator),
        "kaiming_uniform": lambda w, generator: nn.init.kaiming_uniform_(
            w, nonlinearity="relu", generator=generator),
    }[scheme]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, *_CONV)):
                # Drawn on the CPU so the same seed gives the same weights on every device.
                w = torch.empty(module.weight.shape)
                fn(w, generator=gen)
                module.weight.copy_(w)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._NormBase):
                module.reset_running_stats()  # mean 0, variance 1, count 0, as when built
                if module.affine:
                    module.weight.fill_(1.0)
                    module.bias.zero_()
    return model


def to_fast_layout(model: nn.Module) -> nn.Module:
    """`model` with 2-D convolutions in channels-last memory format, images converted to it
    as they come in: oneDNN (CPU) and cuDNN run it faster (ResNet-20 at batch 128 on one
    CPU core: 1.5x per training step, benchmarks/conv_throughput.py). Values and state dicts
    are unchanged; convolutions round differently from the default layout, so a run keeps
    one layout throughout."""
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(_channels_last_input)
    return model


def _channels_last_input(module: nn.Module, args: tuple) -> tuple | None:
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 4 and not torch._C._functorch.is_batchedtensor(x):
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None
