"""Gradual sparsification inside one training run (issue 11): schedules first.

A schedule says how much of the target sparsity is reached at each point of training;
`sparsity_at` turns it into the sparsity to prune to at an optimizer step.
"""

from ticketlab.sparsify.schedules import (
    SCHEDULES,
    Schedule,
    agp,
    cos,
    dsd,
    get_schedule,
    iterative,
    lin,
    one_cycle,
    one_shot,
    sparsity_at,
    window,
)
from ticketlab.sparsify.sparsifier import Sparsifier

__all__ = [
    "SCHEDULES", "Schedule", "Sparsifier", "agp", "cos", "dsd", "get_schedule", "iterative", "lin",
    "one_cycle", "one_shot", "sparsity_at", "window",
]
