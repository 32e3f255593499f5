"""ticketlab: find and study lottery tickets with PyTorch.

The Python API works with any `nn.Module` and your own training loop:

    mask = Mask.dense(model)                         # every Linear/Conv weight kept
    with enforce_mask(model, mask, optimizer):       # pruned weights stay exactly zero
        ...your training loop...
    mask = prune_magnitude(model, mask, {"fc": 0.2, "output": 0.1})
    rewind(model, init_state, mask)                  # kept weights back to their start
    fast = export(model, mask, "sparse", inputs=x)   # only the kept weights multiplied

The names below are imported on first use, so `import ticketlab` (and the `ticketlab`
command's first moment, where Ctrl-C must exit quietly) does not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "rewind": "ticketlab.api", "snapshot": "ticketlab.api",
    "ExperimentConfig": "ticketlab.config", "Runtime": "ticketlab.config",
    "Step": "ticketlab.config", "TicketlabError": "ticketlab.errors",
    "build_model": "ticketlab.models", "init_weights": "ticketlab.models",
    "prunable_groups": "ticketlab.models", "Mask": "ticketlab.pruning",
    "enforce_mask": "ticketlab.pruning", "prune": "ticketlab.pruning",
    "prune_magnitude": "ticketlab.pruning", "random_like": "ticketlab.pruning",
    "Sparsifier": "ticketlab.sparsify", "export": "ticketlab.deploy.export",
    "save_export": "ticketlab.deploy.artifact", "load_export": "ticketlab.deploy.artifact",
}

__all__ = [
    "ExperimentConfig", "Mask", "Runtime", "Sparsifier", "Step", "TicketlabError", "build_model",
    "enforce_mask", "export", "init_weights", "load_export", "prunable_groups", "prune",
    "prune_magnitude", "random_like", "rewind", "run_imp", "run_instability", "save_export",
    "snapshot",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ticketlab' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def run_imp(*args, **kwargs):
    """`ticketlab.experiments.imp.run_imp`, imported lazily (it loads the data stack)."""
    from ticketlab.experiments.imp import run_imp as _run_imp
    return _run_imp(*args, **kwargs)


def run_instability(*args, **kwargs):
    """`ticketlab.experiments.instability.run_instability`, imported lazily (it loads the
    data stack): Frankle et al. 2020's instability analysis of a finished `find` run."""
    from ticketlab.experiments.instability import run_instability as _run_instability
    return _run_instability(*args, **kwargs)
