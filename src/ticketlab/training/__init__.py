"""Masked training: optimizers, schedules, evaluation, retroactive early stopping."""

from ticketlab.training.evaluate import evaluate
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

__all__ = ["Checkpoint", "EarlyStop", "Eval", "build_optimizer", "evaluate", "lr_schedule",
           "train", "train_eval_subset", "train_replicates", "vectorizable"]
