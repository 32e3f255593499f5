"""Small named moments of the training loop, for features that are not the loop's job.

A hook overrides the moments it needs; the loop calls every hook at each moment, in order:

- `before_step(state)`: before step `state.step` is taken (its batch not yet drawn);
- `after_step(state)`: after the optimizer step and the mask, `state.step` already counted;
- `at_evaluation(state)`: after each evaluation was recorded in `state.metrics`;
- `at_checkpoint(state, saved)`: a checkpoint is being written: add what the hook needs to
  resume to `saved` (a dict, under the hook's own key);
- `at_resume(state, saved)`: training resumes from `saved`: read it back.

A hook that changes weights (say, a sparsifier pruning during training) must leave a
pruned weight exactly zero; see `pruning.enforce`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ticketlab.training.loop import Eval, Solo, Stack


@dataclass
class LoopState:
    """What hooks see: the step, the trainee (one model, or replicates), the optimizer and
    each replicate's evaluations so far."""

    step: int
    trainee: Solo | Stack
    optimizer: torch.optim.Optimizer
    metrics: list[list[Eval]]
    diverged: list[bool]  # per replicate: stopped, its metrics end at its divergence


class Hook:
    """Base class: every moment does nothing."""

    def before_step(self, state: LoopState) -> None:
        pass

    def after_step(self, state: LoopState) -> None:
        pass

    def at_evaluation(self, state: LoopState) -> None:
        pass

    def at_checkpoint(self, state: LoopState, saved: dict[str, Any]) -> None:
        pass

    def at_resume(self, state: LoopState, saved: dict[str, Any]) -> None:
        pass


class Snapshot(Hook):
    """Hands each replicate's state dict (weights, batch-norm parameters and running
    statistics) at step `at` to `receive(i, state)`: the rewind point, during level 0."""

    def __init__(self, at: int, receive: Callable[[int, dict[str, Tensor]], None]):
        self.at, self.receive = at, receive

    def before_step(self, state: LoopState) -> None:
        if state.step == self.at:
            for i in range(len(state.trainee.seeds)):
                self.receive(i, state.trainee.state_dict(i))


ProgressFn = Callable[[int, float | None], None]  # (step, latest mean validation accuracy)


class ReportProgress(Hook):
    """Calls `report(step, validation accuracy)` every `every` steps and at the end."""

    def __init__(self, report: ProgressFn, end: int, every: int = 50):
        self.report, self.end, self.every = report, end, every

    def after_step(self, state: LoopState) -> None:
        if state.step % self.every == 0:
            self.report(state.step, latest_val_accuracy(state))

    def at_evaluation(self, state: LoopState) -> None:
        if state.step == self.end:  # the last report carries the final evaluation
            self.report(state.step, latest_val_accuracy(state))


def latest_val_accuracy(state: LoopState) -> float | None:
    """Mean over the replicates still training of their latest validation accuracy."""
    last = [next((e.accuracy for e in reversed(m) if e.split == "val"), None)
            for m, dead in zip(state.metrics, state.diverged) if not dead]
    return None if not last or None in last else sum(last) / len(last)
