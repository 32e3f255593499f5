"""What every unit of a run shares while it is computed: config, data, store, budget."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from ticketlab.config import ExperimentConfig, Runtime
from ticketlab.data import Dataset
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.models import build_model
from ticketlab.models.base import to_fast_layout
from ticketlab.pruning import Mask
from ticketlab.pruning.channels import OUTPUT_GRANULARITIES, trace_followers, with_companions

if TYPE_CHECKING:
    from ticketlab.training.loop import Progress

# A unit ready to train: its model at the starting weights, its mask, the step it starts
# from, and the values its pruned weights are held at (None: zero).
Prepared = tuple[torch.nn.Module, Mask, int, dict[str, torch.Tensor] | None]


class Reporter(Protocol):
    """What a front end (the CLI's progress display, a notebook) hears from the engine.

    A reporter may also have `wait_units(units)`: called when this process waits for units
    another process is training.
    """

    def start_run(self, config: ExperimentConfig, store: RunStore, device: torch.device
                  ) -> None: ...
    def start_units(self, units: list[Unit], start: int, end: int) -> Progress | None: ...
    def end_unit(self, unit: Unit, record: dict[str, Any], reused: bool) -> None: ...


@dataclass
class Context:
    config: ExperimentConfig
    runtime: Runtime
    store: RunStore
    data: Dataset
    device: torch.device
    rewind: int
    end: int
    eval_every: int
    reporter: Reporter | None
    siblings: list[RunStore]  # runs with the same dense training, to borrow level 0 from
    together: bool = False  # a level's units train in one vectorised pass (plan_training)
    driver: bool = True  # the process that writes config.json and summary.json (not a worker)

    @functools.cached_property
    def followers(self) -> dict[str, list[str]] | None:
        """At filter/row granularity, the biases and batch norms each layer's output channels
        feed (`pruning.channels`), traced once on the meta device; None otherwise."""
        if self.config.pruning.granularity not in OUTPUT_GRANULARITIES:
            return None
        c = self.config
        with torch.device("meta"):
            model = build_model(c.model.model, self.data.input_shape, self.data.num_classes,
                                c.model.init, 0)
            return trace_followers(model, torch.zeros(1, *self.data.input_shape))

    def enforced(self, mask: Mask, frozen: dict[str, torch.Tensor] | None) -> Mask:
        """What training holds at zero: the mask, with the biases and batch-norm channels of
        removed filters (not when a mask-0 action holds pruned weights at values instead)."""
        return mask if frozen else with_companions(mask, self.followers)

    def new_model(self, seed: int) -> torch.nn.Module:
        """A freshly initialised model from `seed`, on the run's device, in the memory
        layout its layers run fastest in (`models.base.to_fast_layout`)."""
        c = self.config
        return to_fast_layout(build_model(c.model.model, self.data.input_shape,
                                          self.data.num_classes, c.model.init, seed
                                          ).to(self.device))
