"""Masked training: optimizers, schedules, evaluation, retroactive early stopping, linear
interpolation between trained networks (instability analysis)."""

from ticketlab.training.evaluate import evaluate
from ticketlab.training.interpolation import (
    STABLE_BARRIER,
    barrier,
    error_along_line,
    interpolate,
    is_stable,
    recompute_batch_norm,
)
from ticketlab.training.loop import (
    Checkpoint,
    EarlyStop,
    Eval,
    train,
    train_eval_subset,
    train_replicates,
    vectorizable,
)
from ticketlab.training.optimizers import build_optimizer, lr_schedule

__all__ = ["STABLE_BARRIER", "Checkpoint", "EarlyStop", "Eval", "barrier", "build_optimizer",
           "error_along_line", "evaluate", "interpolate", "is_stable", "lr_schedule",
           "recompute_batch_norm", "train", "train_eval_subset", "train_replicates",
           "vectorizable"]
