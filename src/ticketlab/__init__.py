"""ticketlab: find and study lottery tickets with PyTorch.

The Python API works with any `nn.Module` and your own training loop:

    mask = Mask.dense(model)                         # every Linear/Conv weight kept
    with enforce_mask(model, mask, optimizer):       # pruned weights stay exactly zero
        ...your training loop...
    mask = prune_magnitude(model, mask, {"fc": 0.2, "output": 0.1})
    rewind(model, init_state, mask)                  # kept weights back to their start
"""

__version__ = "0.1.0"

from ticketlab.api import rewind, snapshot
from ticketlab.config import ExperimentConfig, Runtime, Step
from ticketlab.errors import TicketlabError
from ticketlab.models import build_model, init_weights, prunable_groups
from ticketlab.pruning import (
    Mask,
    enforce_mask,
    prune,
    prune_magnitude,
    random_like,
)

__all__ = [
    "ExperimentConfig", "Mask", "Runtime", "Step", "TicketlabError", "build_model",
    "enforce_mask", "init_weights", "prunable_groups", "prune", "prune_magnitude",
    "random_like", "rewind", "run_imp", "snapshot",
]


def run_imp(*args, **kwargs):
    """`ticketlab.experiments.imp.run_imp`, imported lazily (it loads the data stack)."""
    from ticketlab.experiments.imp import run_imp as _run_imp
    return _run_imp(*args, **kwargs)
