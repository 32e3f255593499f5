"""Iterative magnitude pruning with rewinding, and its controls: the engine behind `find`.

Level 0 trains the dense network from its initialisation (step 0) and saves the weights at
the rewind point k. Level L prunes level L-1's *trained* ticket, resets the kept weights to
their values at step k, and trains from step k to the end of the same budget: the learning
rate schedule and the data order continue from step k, while the optimizer state starts
fresh (as in OpenLTH). Which weights a level keeps is decided by a criterion (default
large_final, i.e. magnitude; see `pruning.criteria`) of the previous level's trained weights
and the rewind-point weights. From level 1 on, two controls can be trained beside each ticket:

- reinit: the ticket's mask with a fresh initialisation (from another seed), trained from
  step k like the ticket, so only the initial values differ;
- random: a random mask with the ticket's per-tensor counts, from the rewind-point weights.

Zhou et al.'s mask actions are variants too, each changing one thing about the ticket:
reshuffle, signed_constant and random_signed_constant change what the kept weights start
from (mask-1); freeze_init and freeze_init_zero_mask hold the pruned weights at their
rewind-point values instead of zero, the latter only those that grew in training (mask-0).

One-shot pruning (`config.one_shot`, the paper's Figure 1) replaces the chain of levels by
one cut per density: level i prunes the *dense* network's trained weights once, straight to
the i-th density (`rates_for_density`), then rewinds and trains like any ticket. The course
project's threshold mask (`threshold`: keep |w| > mean|w| + alpha * std(w) over all prunable
weights) is one-shot too, with a single level at the density alpha implies.

Each seed is an independent trial: it fixes the initialisation, the data order and the
controls' randomness. The same configuration and seed give bit-identical results (on one
device), also after an interruption and a resume. Level 0 does not depend on the pruning
settings, so a run borrows it from a finished run beside it that differs only in those
(say, one-shot after iterative, or another criterion). With `Runtime.vectorize` (the default on
a GPU), the units of one level (all seeds, the ticket and its controls) train together in
one vectorised pass (`train_replicates`); each follows the trajectory it follows alone, up
to floating-point rounding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ticketlab.config import ExperimentConfig, Runtime, Step, derive_seed
from ticketlab.data import Dataset, load_dataset
from ticketlab.errors import TicketlabError
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.models import build_model
from ticketlab.pruning import (
    Mask,
    apply_mask1,
    frozen_values,
    prune_by_criterion,
    prune_magnitude,
    random_like,
    rates_for_density,
    threshold_mask,
)
from ticketlab.training import EarlyStop, train, train_replicates, vectorizable
from ticketlab.training.loop import Checkpoint, Progress

Prepared = tuple[torch.nn.Module, Mask, int, dict[str, torch.Tensor] | None]
MASK1_VARIANTS = ("reshuffle", "signed_constant", "random_signed_constant")
MASK0_VARIANTS = ("freeze_init", "freeze_init_zero_mask")


class Reporter(Protocol):
    """What a front end (the CLI's progress display, a notebook) hears from the engine."""

    def start_run(self, config: ExperimentConfig, store: RunStore, device: torch.device
                  ) -> None: ...
    def start_units(self, units: list[Unit], start: int, end: int) -> Progress | None: ...
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
    siblings: list[RunStore]  # runs with the same dense training, to borrow level 0 from


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
    store = RunStore.create(runtime.out, config, runtime.command)
    eval_every = Step.parse(config.training.eval_every).iterations(ipe)
    ctx = Context(config, runtime, store, data, device, rewind, end, eval_every, reporter,
                  store.siblings(config.dense_science()))
    if reporter:
        reporter.start_run(config, ctx.store, device)
    for level in range(config.n_levels + 1):
        variants = ("ticket", *config.controls) if level else ("ticket",)
        run_units(ctx, [Unit(seed, level, v) for seed in config.seeds for v in variants])
    return ctx.store.write_summary()


def _new_model(ctx: Context, seed: int) -> torch.nn.Module:
    c = ctx.config
    return build_model(c.model.model, ctx.data.input_shape, ctx.data.num_classes,
                       c.model.init, seed).to(ctx.device)


def _parent(ctx: Context, unit: Unit) -> Unit:
    """The trained ticket a level's mask is cut from: the previous level, or the dense one."""
    return Unit(unit.seed, 0 if ctx.config.one_shot else unit.level - 1, "ticket")


def _prepare(ctx: Context, unit: Unit) -> Prepared:
    """The unit's model at its starting weights, its mask, starting step and frozen values."""
    store, seed, level = ctx.store, unit.seed, unit.level
    if level == 0:
        model = _new_model(ctx, derive_seed(seed, "init"))
        return model, Mask.dense(model), 0, None
    if unit.variant == "ticket":
        c, p = ctx.config, ctx.config.pruning
        previous = _parent(ctx, unit)
        mask = store.load_mask(previous)
        rates = p.rates_arg()
        if c.one_shot:
            rates = rates_for_density(mask, rates, c.one_shot[level - 1], scope=p.scope,
                                      exclude=p.exclude)
        final = store.load_weights(previous, "final")
        if p.threshold is not None:
            mask = threshold_mask(final, mask, p.threshold)
        elif p.criterion == "large_final":
            mask = prune_magnitude(final, mask, rates, scope=p.scope, exclude=p.exclude)
        else:  # initial weights = the rewind point, what the kept weights are reset to
            mask = prune_by_criterion(
                p.criterion, store.load_weights(Unit(seed, 0, "ticket"), "rewind"), final, mask,
                rates, scope=p.scope, exclude=p.exclude, seed=derive_seed(seed, "criterion", level))
    else:
        mask = store.load_mask(Unit(seed, level, "ticket"))
    if unit.variant == "random":
        mask = random_like(mask, derive_seed(seed, "random", level))
    if unit.variant == "reinit":
        model = _new_model(ctx, derive_seed(seed, "reinit", level))
        mask.apply_(model)
        return model, mask, ctx.rewind, None
    model = _new_model(ctx, derive_seed(seed, "init"))
    rewind = store.load_weights(Unit(seed, 0, "ticket"), "rewind")
    state = rewind
    if unit.variant in MASK1_VARIANTS:  # what the kept weights start from
        state = apply_mask1(unit.variant, rewind, mask, derive_seed(seed, unit.variant, level))
    model.load_state_dict(state)
    mask.apply_(model)
    frozen = None
    if unit.variant in MASK0_VARIANTS:  # what the pruned weights become
        final = store.load_weights(_parent(ctx, unit), "final")
        frozen = {k: v.to(ctx.device) for k, v in
                  frozen_values(unit.variant, rewind, final, mask).items()}
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in frozen.items():
                params[k].add_(v)
    return model, mask, ctx.rewind, frozen


def run_units(ctx: Context, units: list[Unit]) -> None:
    """Trains the units of one level that are not done yet: together, or one by one."""
    store = ctx.store
    todo = []
    for unit in units:
        if unit.level == 0 and not store.done(unit):
            donor = next((s for s in ctx.siblings if s.done(unit)), None)
            if donor:  # the same dense training, already done in another run: copy it
                store.adopt(unit, donor)
        if store.done(unit):
            if ctx.reporter:
                ctx.reporter.end_unit(unit, store.result(unit), reused=True)
        else:
            todo.append(unit)
    if not todo:
        return
    prepared = [_start(ctx, u) for u in todo]
    vectorize = ctx.runtime.vectorize
    if vectorize is None:
        vectorize = ctx.device.type == "cuda"
    if vectorize and len(todo) > 1 and vectorizable(prepared[0][0]):
        _train_together(ctx, todo, prepared)
        return
    for unit, (model, mask, start, frozen) in zip(todo, prepared):
        progress = ctx.reporter.start_units([unit], start, ctx.end) if ctx.reporter else None
        on_snapshot: Callable | None = None
        if unit.level == 0:
            on_snapshot = lambda state, unit=unit: store.save_weights(unit, "rewind", state)
        metrics = train(
            model, ctx.data, ctx.config.training, seed=unit.seed, start=start, end=ctx.end,
            eval_every=ctx.eval_every, mask=mask.to(ctx.device), frozen=frozen,
            snapshot_at=ctx.rewind if unit.level == 0 else None, on_snapshot=on_snapshot,
            checkpoint=store.checkpoint(unit, ctx.runtime.checkpoint_every), progress=progress,
        )
        _finish(ctx, unit, model, mask, start, metrics)


def _start(ctx: Context, unit: Unit) -> Prepared:
    """Prepares a unit and records its mask and starting weights (controls read the ticket's)."""
    prepared = _prepare(ctx, unit)
    model, mask = prepared[0], prepared[1]
    ctx.store.save_mask(unit, mask)
    ctx.store.save_weights(unit, "init" if unit.level == 0 else "rewind", model.state_dict())
    return prepared


def _train_together(ctx: Context, units: list[Unit], prepared: list[Prepared]) -> None:
    store, start = ctx.store, prepared[0][2]
    models = [p[0] for p in prepared]
    masks = [p[1].to(ctx.device) for p in prepared]
    names = ",".join(u.relpath() for u in units)
    group = hashlib.sha256(names.encode()).hexdigest()[:8]
    checkpoint = Checkpoint(store.root / "checkpoints" / f"level_{units[0].level:02d}_{group}.pt",
                            ctx.runtime.checkpoint_every)
    progress = ctx.reporter.start_units(units, start, ctx.end) if ctx.reporter else None
    metrics = train_replicates(
        models, ctx.data, ctx.config.training, seeds=[u.seed for u in units], start=start,
        end=ctx.end, eval_every=ctx.eval_every, masks=masks, frozen=[p[3] for p in prepared],
        snapshot_at=ctx.rewind if units[0].level == 0 else None,
        on_snapshot=lambda i, state: store.save_weights(units[i], "rewind", state),
        checkpoint=checkpoint, progress=progress,
    )
    for unit, (model, mask, _, _), m in zip(units, prepared, metrics):
        _finish(ctx, unit, model, mask, start, m)
    checkpoint.clear()


def _finish(ctx: Context, unit: Unit, model: torch.nn.Module, mask: Mask, start: int,
            metrics: list) -> dict[str, Any]:
    store = ctx.store
    store.save_weights(unit, "final", model.state_dict())
    stop = EarlyStop.from_metrics(metrics)
    record = {
        "seed": unit.seed, "level": unit.level, "variant": unit.variant,
        "density": mask.density(), "model_density": mask.model_density(model),
        "early_stop_iteration": stop.iteration, "early_stop_val_loss": stop.val_loss,
        "early_stop_test_accuracy": stop.test_accuracy,
        "final_test_accuracy": stop.final_test_accuracy,
        "early_stop_train_accuracy": stop.train_accuracy,
        "final_train_accuracy": stop.final_train_accuracy,
        "diverged": stop.diverged, "diverged_iteration": stop.diverged_iteration,
        "start_iteration": start, "end_iteration": ctx.end,
    }
    store.finish(unit, metrics, record)
    store.write_summary()
    if ctx.reporter:
        ctx.reporter.end_unit(unit, record, reused=False)
    return record
