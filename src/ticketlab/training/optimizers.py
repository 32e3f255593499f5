"""Optimizers and learning-rate schedules, both functions of the hyperparameters alone.

The schedule is a pure function of the step, so a run rewound to step k (or resumed from a
checkpoint) continues it exactly where it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from ticketlab.config import Step, TrainingHparams


def param_groups(named: Mapping[str, torch.Tensor], no_decay: set[str], hp: TrainingHparams
                 ) -> list[dict[str, Any]]:
    """Named parameter groups: "decay" and, when `norm_bias_weight_decay` is set, "no_decay"
    (normalisation weights and biases, `no_decay`) with that weight decay instead."""
    if hp.norm_bias_weight_decay is None:
        return [{"name": "decay", "params": list(named.values())}]
    groups = [
        {"name": "decay", "params": [p for k, p in named.items() if k not in no_decay]},
        {"name": "no_decay", "params": [p for k, p in named.items() if k in no_decay],
         "weight_decay": hp.norm_bias_weight_decay},
    ]
    return [g for g in groups if g["params"]]


def no_decay_names(model: torch.nn.Module) -> set[str]:
    """Parameters of normalisation layers, and every bias: what OpenLTH-style presets may
    exempt from weight decay."""
    names = set()
    for prefix, module in model.named_modules():
        norm = isinstance(module, torch.nn.modules.batchnorm._NormBase | torch.nn.LayerNorm |
                          torch.nn.GroupNorm)
        for name, _ in module.named_parameters(recurse=False):
            if norm or name == "bias":
                names.add(f"{prefix}.{name}" if prefix else name)
    return names


def build_optimizer(params: Iterable[torch.nn.Parameter] | list[dict[str, Any]],
                    hp: TrainingHparams) -> torch.optim.Optimizer:
    """The configured optimizer over `params` (tensors, or parameter groups)."""
    params = list(params)
    if hp.optimizer == "adam":
        kwargs = dict(lr=hp.lr, weight_decay=hp.weight_decay)
        cls = torch.optim.Adam
    else:
        kwargs = dict(lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov,
                      weight_decay=hp.weight_decay)
        cls = torch.optim.SGD
    try:  # the fused kernels are the fastest step on CPU and GPU alike
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, foreach=True, **kwargs)


def lr_schedule(hp: TrainingHparams, iterations_per_epoch: int) -> Callable[[int], float]:
    """Step -> learning rate: linear warm-up, then constant or x gamma at each milestone."""
    warmup = Step.parse(hp.warmup).iterations(iterations_per_epoch)
    milestones = sorted(Step.parse(m).iterations(iterations_per_epoch) for m in hp.milestones)
    step_decay = hp.schedule == "step"

    def lr_at(step: int) -> float:
        lr = hp.lr
        if step_decay:
            lr *= hp.gamma ** sum(step >= m for m in milestones)
        if step < warmup:
            lr *= (step + 1) / warmup
        return lr

    return lr_at
