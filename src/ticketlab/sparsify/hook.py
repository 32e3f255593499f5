"""The Sparsifier as a hook of ticketlab's own training loop (`ticketlab sparsify`).

The loop creates its optimizer itself, so the Sparsifier is built at the loop's first moment
(the evaluation at the start, or a resume) and bound to that optimizer; it then counts and
prunes after every step, and its state, with the sparsity at each evaluation, travels in the
loop's checkpoints so that a killed run resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ticketlab.sparsify.sparsifier import Sparsifier
from ticketlab.training.hooks import Hook, LoopState

KEY = "sparsify"


class SparsifyHook(Hook):
    """Drives `make(model)`'s Sparsifier from the loop and logs (iteration, sparsity) at every
    evaluation; one model only (replicates train one by one)."""

    def __init__(self, make: Callable[[torch.nn.Module], Sparsifier]):
        self.make = make
        self.sparsifier: Sparsifier | None = None
        self.log: list[tuple[int, float]] = []  # (iteration, sparsity) at each evaluation

    def _build(self, state: LoopState) -> Sparsifier:
        if self.sparsifier is None:
            if len(state.trainee.seeds) != 1:
                raise ValueError("SparsifyHook drives one model: train replicates one by one")
            self.sparsifier = self.make(state.trainee.model)
            self.sparsifier.bind(state.optimizer)
        return self.sparsifier

    def at_evaluation(self, state: LoopState) -> None:
        self.log.append((state.step, self._build(state).sparsity()))

    def after_step(self, state: LoopState) -> None:
        self._build(state).step()

    def at_checkpoint(self, state: LoopState, saved: dict[str, Any]) -> None:
        saved[KEY] = {"sparsifier": self._build(state).state_dict(),
                      "log": [list(row) for row in self.log]}

    def at_resume(self, state: LoopState, saved: dict[str, Any]) -> None:
        mine = saved[KEY]
        self._build(state).load_state_dict(mine["sparsifier"])
        self.log = [(int(i), float(s)) for i, s in mine["log"]]
