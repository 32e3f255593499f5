"""Gradual pruning inside a PyTorch Lightning fit: ticketlab's `Sparsifier` as a callback.

    trainer = Trainer(max_epochs=10, callbacks=[SparsifyCallback(target=0.9, end="8ep")])

Lightning owns the training loop, so the `Sparsifier`'s "call `step()` after each optimizer
step" needs a callback; this one is the same engine, not a second implementation. Its
arguments are the `Sparsifier`'s (passed straight through), so fasterai's
`SparsifyCallback(end_sparsity, granularity, method, criteria, schedule, lth, rewind_epoch,
reset_end)` maps as follows:

    end_sparsity=50           -> target=0.5          (a fraction in [0, 1], never percent)
    granularity='weight'      -> granularity="weight" (or filter, channel, kernel, row, column)
    method='global'           -> scope="global"      ("local" is "layerwise")
    criteria=large_final      -> criterion="large_final" (any name of ticketlab's criteria)
    schedule=iterative        -> schedule="iterative" (a name of `ticketlab.sparsify.SCHEDULES`
                                 or any callable p -> fraction of the way to the target)
    start_epoch=5, end_epoch  -> start="5ep", end="8ep" (or counts of optimizer steps)
    lth=True, rewind_epoch=1  -> lth=True, rewind="1ep"
    reset_end=True            -> reset_end=True      (done by `Sparsifier.finish()` at the end)

Left out, `end` is the fit's last optimizer step (`trainer.estimated_stepping_batches`), as
fasterai's `end_epoch` defaults to the end of training. Steps and epochs count *optimizer*
steps: with `accumulate_grad_batches=k` an epoch of n batches is ceil(n / k) steps, so "2ep"
means what it says. What is pruned is the LightningModule's `prunable_groups()` if it defines
one, otherwise every Linear and Conv weight (the last Linear is the `output` group).

Lightning runs the backward pass inside `optimizer.step(closure)`, after the optimizer's
step pre-hooks; the Sparsifier's gradient hooks zero pruned gradients as the backward pass
accumulates them (before gradient clipping and the update), so their momentum and Adam
moments stay exactly zero, as under `enforce_mask`.

The callback's state (the Sparsifier's step count, mask and initial weights) goes into
Lightning checkpoints, so `trainer.fit(..., ckpt_path=...)` resumes the schedule exactly;
one fit without a checkpoint starts its own schedule on a dense mask.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ticketlab.errors import TicketlabError
from ticketlab.sparsify.sparsifier import Sparsifier


class MissingExtra(TicketlabError, ImportError):
    """An optional dependency is not installed (catchable as ImportError too)."""


try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - exercised by a test that hides lightning
    raise MissingExtra("ticketlab.integrations.lightning needs PyTorch Lightning: "
                       "pip install ticketlab[lightning]  (or pip install lightning)") from e


class SparsifyCallback(pl.Callback):
    """Prunes the LightningModule towards `target` sparsity on a schedule during `fit`.

    `kwargs` are `Sparsifier`'s keyword arguments (granularity, scope, criterion, schedule,
    start, end, every, ...). The Sparsifier is built at `on_train_start`, when the optimizer
    exists, the number of batches per epoch is known and a checkpoint has been restored;
    `sparsifier` is None before. The sparsity is logged as `log` after each batch and as
    f"{log}_epoch" at each epoch's end (log=None: not logged).
    """

    def __init__(self, target: float, *, log: str | None = "sparsity", **kwargs: Any):
        super().__init__()
        self.target, self.kwargs, self.log_name = target, kwargs, log
        self.sparsifier: Sparsifier | None = None
        self._pending: Mapping[str, Any] | None = None
        self._trainer: pl.Trainer | None = None
        self._seen = 0  # trainer.global_step already passed to the Sparsifier

    # ------------------------------------------------------------------ building

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizers = trainer.optimizers
        if len(optimizers) != 1:
            raise TicketlabError(f"SparsifyCallback prunes under one optimizer, the fit has "
                                 f"{len(optimizers)}: return exactly one from "
                                 "configure_optimizers")
        kwargs = dict(self.kwargs)
        if "iterations_per_epoch" not in kwargs:
            kwargs["iterations_per_epoch"] = self._steps_per_epoch(trainer)
        if "end" not in kwargs:
            total = trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise TicketlabError("SparsifyCallback cannot tell when training ends (no "
                                     "max_epochs or max_steps): pass end=, e.g. end=\"2000it\"")
            kwargs["end"] = int(total)
        self.sparsifier = Sparsifier(pl_module, optimizers[0], target=self.target, **kwargs)
        if self._pending is not None:
            self.sparsifier.load_state_dict(self._pending)
            self._pending = None
        self._trainer, self._seen = trainer, trainer.global_step

    @staticmethod
    def _steps_per_epoch(trainer: pl.Trainer) -> int | None:
        """Optimizer steps per epoch: Lightning steps every k batches and on an epoch's last."""
        batches = trainer.num_training_batches
        if not math.isfinite(batches) or batches <= 0:
            return None  # an iterable dataset: "ep" steps are refused by the Sparsifier
        return math.ceil(batches / trainer.accumulate_grad_batches)

    # ------------------------------------------------------------------ each step

    def _catch_up(self) -> None:
        """One `Sparsifier.step()` per optimizer step taken since the last call."""
        if self.sparsifier is None or self._trainer is None:
            return
        while self._seen < self._trainer.global_step:
            self.sparsifier.step()
            self._seen += 1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._catch_up()
        if self.log_name and self.sparsifier is not None:
            pl_module.log(self.log_name, self.sparsifier.sparsity(), on_step=True,
                          on_epoch=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._catch_up()
        if self.log_name and self.sparsifier is not None:
            pl_module.log(f"{self.log_name}_epoch", self.sparsifier.sparsity(), on_step=False,
                          on_epoch=True)

    # ------------------------------------------------------------------ the end

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._catch_up()
        finish = getattr(self.sparsifier, "finish", None)
        if callable(finish):
            finish()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.sparsifier is not None:
            self.sparsifier.remove()  # the optimizer's hooks; the mask stays readable

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        if self.sparsifier is None:
            return dict(self._pending or {})
        self._catch_up()  # whatever order the checkpoint callback runs in
        return self.sparsifier.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Kept until `on_train_start` builds the fit's Sparsifier (checkpoints load before)."""
        self._pending = dict(state_dict) if state_dict else None
