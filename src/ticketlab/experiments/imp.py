"""Iterative magnitude pruning with rewinding, and its controls: the engine behind `find`.

Level 0 trains the dense network from its initialisation (step 0) and saves the weights at
the rewind point k. Level L prunes level L-1's *trained* ticket, resets the kept weights to
their values at step k, and trains from step k to the end of the same budget: the learning
rate schedule and the data order continue from step k, while the optimizer state starts
fresh (as in OpenLTH). From level 1 on, two controls can be trained beside each ticket:

- reinit: the ticket's mask with a fresh initialisation (from another seed), trained from
  step k like the ticket, so only the initial values differ;
- random: a random mask with the ticket's per-tensor counts, from the rewind-point weights.

Each seed is an independent trial: it fixes the initialisation, the data order and the
controls' randomness. The same configuration and seed give bit-identical results (on one
device), also after an interruption and a resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ticketlab.config import ExperimentConfig, Runtime, Step, derive_seed
from ticketlab.data import Dataset, load_dataset
from ticketlab.errors import TicketlabError
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.models import build_model
from ticketlab.pruning import Mask, prune_magnitude, random_like
from ticketlab.training import EarlyStop, train
from ticketlab.training.loop import Progress


class Reporter(Protocol):
    """What a front end (the CLI's progress display, a notebook) hears from the engine."""

    def start_run(self, config: ExperimentConfig, store: RunStore, device: torch.device
                  ) -> None: ...
    def start_unit(self, unit: Unit, start: int, end: int) -> Progress | None: ...
    def end_unit(self, unit: Unit, record: dict[str, Any], reused: bool) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TicketlabError(f"unknown device '{name}': use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TicketlabError("--device cuda, but no CUDA GPU is available: use --device auto")
    return device


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


def run_imp(config: ExperimentConfig, runtime: Runtime | None = None,
            reporter: Reporter | None = None) -> dict[str, Any]:
    """Runs (or resumes, or just reads back) an IMP experiment; returns its summary."""
    runtime = runtime or Runtime()
    config.validate()
    device = resolve_device(runtime.device)
    data = load_dataset(config.data.dataset, data_dir=runtime.data_dir,
                        download=runtime.download, device=device,
                        validation_size=config.data.validation_size,
                        split_seed=config.data.split_seed)
    ipe = data.iterations_per_epoch(config.training.batch_size)
    rewind, end = config.budget(ipe)
    ctx = Context(config, runtime, RunStore.create(runtime.out, config), data, device, rewind,
                  end, Step.parse(config.training.eval_every).iterations(ipe), reporter)
    if reporter:
        reporter.start_run(config, ctx.store, device)
    for level in range(config.levels + 1):
        for seed in config.seeds:
            run_unit(ctx, Unit(seed, level, "ticket"))
            if level > 0:
                for control in config.controls:
                    run_unit(ctx, Unit(seed, level, control))
    return ctx.store.write_summary()


def _new_model(ctx: Context, seed: int) -> torch.nn.Module:
    c = ctx.config
    return build_model(c.model.model, ctx.data.input_shape, ctx.data.num_classes,
                       c.model.init, seed).to(ctx.device)


def _prepare(ctx: Context, unit: Unit) -> tuple[torch.nn.Module, Mask, int]:
    """The unit's model at its starting weights, its mask, and its starting step."""
    store, seed, level = ctx.store, unit.seed, unit.level
    if level == 0:
        model = _new_model(ctx, derive_seed(seed, "init"))
        return model, Mask.dense(model), 0
    if unit.variant == "ticket":
        previous = Unit(seed, level - 1, "ticket")
        p = ctx.config.pruning
        mask = prune_magnitude(store.load_weights(previous, "final"), store.load_mask(previous),
                               p.rates_arg(), scope=p.scope, exclude=p.exclude)
    else:
        mask = store.load_mask(Unit(seed, level, "ticket"))
    if unit.variant == "random":
        mask = random_like(mask, derive_seed(seed, "random", level))
    if unit.variant == "reinit":
        model = _new_model(ctx, derive_seed(seed, "reinit", level))
    else:
        model = _new_model(ctx, derive_seed(seed, "init"))
        model.load_state_dict(store.load_weights(Unit(seed, 0, "ticket"), "rewind"))
    mask.apply_(model)
    return model, mask, ctx.rewind


def run_unit(ctx: Context, unit: Unit) -> dict[str, Any]:
    store = ctx.store
    if store.done(unit):
        record = store.result(unit)
        if ctx.reporter:
            ctx.reporter.end_unit(unit, record, reused=True)
        return record
    model, mask, start = _prepare(ctx, unit)
    store.save_mask(unit, mask)
    on_snapshot: Callable | None = None
    if unit.level == 0:
        store.save_weights(unit, "init", model.state_dict())
        on_snapshot = lambda state: store.save_weights(unit, "rewind", state)
    else:
        store.save_weights(unit, "rewind", model.state_dict())
    progress = ctx.reporter.start_unit(unit, start, ctx.end) if ctx.reporter else None
    metrics = train(
        model, ctx.data, ctx.config.training, seed=unit.seed, start=start, end=ctx.end,
        eval_every=ctx.eval_every, mask=mask.to(ctx.device),
        snapshot_at=ctx.rewind if unit.level == 0 else None, on_snapshot=on_snapshot,
        checkpoint=store.checkpoint(unit, ctx.runtime.checkpoint_every), progress=progress,
    )
    store.save_weights(unit, "final", model.state_dict())
    stop = EarlyStop.from_metrics(metrics)
    record = {
        "seed": unit.seed, "level": unit.level, "variant": unit.variant,
        "density": mask.density(), "model_density": mask.model_density(model),
        "early_stop_iteration": stop.iteration, "early_stop_val_loss": stop.val_loss,
        "early_stop_test_accuracy": stop.test_accuracy,
        "final_test_accuracy": stop.final_test_accuracy,
        "start_iteration": start, "end_iteration": ctx.end,
    }
    store.finish(unit, metrics, record)
    store.write_summary()
    if ctx.reporter:
        ctx.reporter.end_unit(unit, record, reused=False)
    return record
