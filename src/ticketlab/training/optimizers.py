"""Optimizers and learning-rate schedules, both functions of the hyperparameters alone.

The schedule is a pure function of the step, so a run rewound to step k (or resumed from a
checkpoint) continues it exactly where it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ticketlab.config import Step, TrainingHparams


def build_optimizer(params: Iterable[torch.nn.Parameter], hp: TrainingHparams
                    ) -> torch.optim.Optimizer:
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
