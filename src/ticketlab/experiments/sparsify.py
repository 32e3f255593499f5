"""Gradual pruning inside one training run, per seed: the engine behind `ticketlab sparsify`.

Each seed trains the model once from its initialisation (the same as a find run's level 0 of
that seed) while a `Sparsifier` prunes it on the configured schedule (`config.sparsify`), by
the configured criterion, granularity and scope (`config.pruning`). A unit is
`seed_S/level_00/sparsify/` in the run directory and holds, like a find unit: `mask`,
`init` and `final` weights, `metrics.csv`, `result.json`, plus `sparsity.csv` (the sparsity
at each evaluation) and, with lth or reset_end, `rewind.safetensors`: the final mask on the
rewind point's state, the ticket fasterai's reset_end returns.

The record's early stop is chosen on the validation loss among the evaluations made with the
final mask (from the step it last changed on): accuracy of a network denser than the result
is not the result's. That step is known only at the end, and the lowest validation loss
after it need not be a new minimum of the whole training, so a sparsify unit measures the
test set at every evaluation (as `--test-curve` does for find). Checkpoints carry the
sparsifier, so a killed run resumes exactly.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import torch

from ticketlab.config import ExperimentConfig, Runtime, Step, derive_seed
from ticketlab.data import SOURCES, resolve_data_dir
from ticketlab.errors import TicketlabError
from ticketlab.experiments.context import Context, Reporter
from ticketlab.experiments.imp import finish_unit, resolve_device, unit_record, wait_for
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.io import atomic_write_text
from ticketlab.pruning import Mask
from ticketlab.sparsify.hook import SparsifyHook
from ticketlab.sparsify.sparsifier import Sparsifier
from ticketlab.threads import using_threads
from ticketlab.training import EarlyStop, train

VARIANT = "sparsify"


def unit_of(seed: int) -> Unit:
    return Unit(seed, 0, VARIANT)


def run_sparsify(config: ExperimentConfig, runtime: Runtime | None = None,
                 reporter: Reporter | None = None) -> dict[str, Any]:
    """Runs (or resumes, or reads back) a sparsify run, one unit per seed; its summary."""
    runtime = runtime or Runtime()
    if config.kind != "sparsify":
        raise TicketlabError("a sparsify run needs a target sparsity, e.g. --target 0.9")
    config.validate()
    runtime.validate()
    with using_threads(runtime.threads) as threads:
        device = resolve_device(runtime.device)
        data = config.data.load(runtime.data_dir, runtime.download, device)
        ipe = data.iterations_per_epoch(config.training.batch_size)
        rewind, end = config.budget(ipe)
        config.sparsify_window(ipe)  # refuses a window outside training before anything runs
        store = RunStore.create(runtime.out, config, runtime.command, threads=threads)
        if config.data.dataset in SOURCES:
            store.record_data_dir(resolve_data_dir(runtime.data_dir))
        eval_every = Step.parse(config.training.eval_every).iterations(ipe)
        ctx = Context(config, runtime, store, data, device, rewind, end, eval_every, reporter,
                      [])
        store.record("units_trained", "one by one: a sparsifier drives one model")
        if reporter:
            reporter.start_run(config, store, device)
        with store.session():  # processes on one run share its seeds, as find's share units
            held = []
            for seed in config.seeds:
                lock = store.try_lock(unit_of(seed))
                if lock is None:
                    held.append(unit_of(seed))  # another process trains it: do the others
                    continue
                with lock:
                    _train_or_reuse(ctx, unit_of(seed), ipe)
            for unit in held:
                with wait_for(ctx, [unit]):
                    _train_or_reuse(ctx, unit, ipe)
        return store.write_summary()


def _train_or_reuse(ctx: Context, unit: Unit, ipe: int) -> None:
    if not ctx.store.done(unit):
        _train_unit(ctx, unit, ipe)
    elif ctx.reporter:
        ctx.reporter.end_unit(unit, ctx.store.result(unit), reused=True)


def make_sparsifier(config: ExperimentConfig, model: torch.nn.Module, seed: int,
                    iterations_per_epoch: int) -> Sparsifier:
    """The Sparsifier `config` describes, for one seed's model (no optimizer bound yet)."""
    s, p = config.sparsify, config.pruning
    start, end, every = config.sparsify_window(iterations_per_epoch)
    params = {"n": s.prune_rounds} if s.sparsity_schedule == "iterative" else None
    return Sparsifier(
        model, None, target=s.target, granularity=p.granularity, scope=p.scope,
        criterion=p.criterion, reduce=p.reduce, schedule=s.sparsity_schedule,
        schedule_params=params, start=start, end=end, every=every,
        exclude=p.exclude or None, seed=derive_seed(seed, "criterion"), lth=s.lth,
        rewind=Step.parse(config.rewind).iterations(iterations_per_epoch),
        reset_end=s.reset_end)


def _train_unit(ctx: Context, unit: Unit, ipe: int) -> dict[str, Any]:
    store = ctx.store
    model = ctx.new_model(derive_seed(unit.seed, "init"))
    store.save_weights(unit, "init", model.state_dict())
    hook = SparsifyHook(lambda m: make_sparsifier(ctx.config, m, unit.seed, ipe))
    progress = ctx.reporter.start_units([unit], 0, ctx.end) if ctx.reporter else None
    hp = dataclasses.replace(ctx.config.training, test_curve=True)  # see the docstring
    metrics = train(model, ctx.data, hp, seed=unit.seed, start=0, end=ctx.end,
                    eval_every=ctx.eval_every, hooks=[hook], progress=progress,
                    checkpoint=store.checkpoint(unit, ctx.runtime.checkpoint_every))
    sparsifier = hook.sparsifier
    assert sparsifier is not None  # built at the first evaluation
    mask: Mask = sparsifier.mask.to("cpu")
    store.save_mask(unit, mask)
    store.save_weights(unit, "final", model.state_dict())
    ticket = sparsifier.rewind_state()
    if ticket is not None:
        store.save_weights(unit, "rewind", ticket)
    _write_sparsity(store, unit, hook.log)
    settled = sparsifier.changed_at
    stop = EarlyStop.from_metrics([e for e in metrics if e.iteration >= settled])
    whole = EarlyStop.from_metrics(metrics)
    record = unit_record(unit, mask, model, stop, whole, 0, ctx.end)
    return finish_unit(ctx, unit, metrics, {**record, "final_mask_iteration": settled})


def _write_sparsity(store: RunStore, unit: Unit, log: list[tuple[int, float]]) -> None:
    buf = io.StringIO()
    buf.write("iteration,sparsity\n")
    for iteration, sparsity in log:
        buf.write(f"{iteration},{sparsity!r}\n")
    atomic_write_text(store.dir(unit) / "sparsity.csv", buf.getvalue())


def read_sparsity(store: RunStore, unit: Unit) -> list[tuple[int, float]]:
    """(iteration, sparsity) at each evaluation of a sparsify unit."""
    path = store.dir(unit) / "sparsity.csv"
    try:
        rows = path.read_text().splitlines()[1:]
        return [(int(i), float(s)) for i, s in (r.split(",") for r in rows)]
    except (OSError, ValueError) as e:
        raise TicketlabError(f"{path} is unreadable ({e}): {store.advice(unit)}") from None
