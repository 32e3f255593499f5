"""Iterative magnitude pruning with rewinding, and its controls: the engine behind `find`.

Level 0 trains the dense network from its initialisation (step 0) and saves the weights at
the rewind point k. Level L prunes level L-1's *trained* ticket, resets the kept weights to
their values at step k, and trains from step k to the end of the same budget: the learning
rate schedule and the data order continue from step k, while the optimizer state starts
fresh (as in OpenLTH). Which weights a level keeps is decided by a criterion (default
large_final, i.e. magnitude; see `pruning.criteria`) of the previous level's trained weights
and the rewind-point weights. From level 1 on, controls (reinit, random) and Zhou et al.'s
mask actions can be trained beside each ticket: each is a variant, one class in
`experiments/variants.py`, where what each one changes is described.

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
to floating-point rounding. An interrupted group resumes as the same group (the units it
finished before the interruption ride along), so resuming stays bit-identical.

Processes on the same run directory share its units: each unit is trained by the process
holding its lock (`RunStore.try_lock`); a vectorised level is taken whole or waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ticketlab.config import ExperimentConfig, Runtime, Step, check_device_name
from ticketlab.data import SOURCES, resolve_data_dir
from ticketlab.errors import TicketlabError
from ticketlab.experiments.context import Context, Prepared, Reporter
from ticketlab.experiments.locks import UnitLock
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.experiments.variants import prepare
from ticketlab.pruning import Mask
from ticketlab.threads import using_threads
from ticketlab.training import EarlyStop, interrupt, train, train_replicates
from ticketlab.training.hooks import Snapshot
from ticketlab.training.loop import vectorize_refusal
from ticketlab.training.sparse import sparse_layer_names

WAIT_POLL = 0.5  # seconds between looks at a unit another process is training


def resolve_device(name: str) -> torch.device:
    """auto (CUDA when present), cpu, cuda, cuda:N or mps, checked to exist here; devices
    that hold no data (meta) or that ticketlab does not support are refused."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TicketlabError(f"--device {name}, but no CUDA GPU is available: use "
                                 "--device auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TicketlabError(f"--device {name}, but there are {torch.cuda.device_count()} "
                                 "CUDA GPUs (cuda:0 ...): choose one of them")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise TicketlabError("--device mps, but MPS is not available: use --device auto")
    return device


def run_imp(config: ExperimentConfig, runtime: Runtime | None = None,
            reporter: Reporter | None = None) -> dict[str, Any]:
    """Runs (or resumes, or just reads back) an IMP experiment; returns its summary.

    Torch's intra-op thread count is `runtime.threads` while it runs (one by default, see
    `ticketlab.threads`) and the caller's again afterwards."""
    return run_many([config], runtime, reporter)[0]


def run_many(configs: list[ExperimentConfig], runtime: Runtime | None = None,
             reporter: Reporter | None = None) -> list[dict[str, Any]]:
    """Runs several experiments as one plan (a sweep); returns their summaries, in order.

    Every run directory is opened first (so a later run borrows an earlier one's dense
    training), then the plan of all their units goes to the executor `runtime.executor`
    (`ticketlab.executors`). This process, the driver, is the only one that writes
    config.json and summary.json."""
    from ticketlab.executors import choose_executor, execute
    from ticketlab.experiments.plan import make_plan

    runtime = runtime or Runtime()
    for config in configs:
        config.validate()
    runtime.validate()
    with using_threads(runtime.threads) as threads:
        contexts = [open_run(c, runtime, threads) for c in configs]
        plan = make_plan(contexts)
        choice = choose_executor(plan, runtime, threads)
        for ctx in contexts:
            ctx.store.record("units_trained", choice.describe(ctx))
            if reporter:
                reporter.start_run(ctx.config, ctx.store, ctx.device)
            if runtime.recompute:
                recompute_damaged(ctx, reporter)
        if runtime.recompute:
            plan = make_plan(contexts)  # what --recompute deleted is to do again
        for ctx in contexts:
            ctx.reporter = reporter
        if reporter:
            hook = getattr(reporter, "start_plan", None)
            if hook:
                hook(plan, choice)
            for r, unit in plan.done:
                reporter.end_unit(unit, contexts[r].store.result(unit), reused=True)
        execute(plan, choice, reporter)
        return [ctx.store.write_summary() for ctx in contexts]


def open_run(config: ExperimentConfig, runtime: Runtime, threads: int,
             driver: bool = True, root: Path | None = None) -> Context:
    """What every unit of a run shares: data, budget, store. The driver creates (or checks)
    the run directory and its config.json; a worker only opens `root`."""
    device = resolve_device(runtime.device)
    data = config.data.load(runtime.data_dir, runtime.download, device)
    ipe = data.iterations_per_epoch(config.training.batch_size)
    rewind, end = config.budget(ipe)
    if driver:
        store = RunStore.create(runtime.out, config, runtime.command, threads=threads)
        if config.data.dataset in SOURCES:  # read from files: say where, for later commands
            store.record_data_dir(resolve_data_dir(runtime.data_dir))
    else:
        store = RunStore(root or runtime.out / config.run_name())
    eval_every = Step.parse(config.training.eval_every).iterations(ipe)
    ctx = Context(config, runtime, store, data, device, rewind, end, eval_every, None,
                  store.siblings(config.dense_science()), driver=driver)
    ctx.together = plan_training(ctx)[0]
    return ctx


def _units(config: ExperimentConfig) -> list[Unit]:
    """Every unit of a run, in the order they are computed."""
    return [Unit(seed, level, v) for level in range(config.n_levels + 1)
            for seed in config.seeds for v in (("ticket", *config.controls) if level else
                                               ("ticket",))]


def _computed_from(config: ExperimentConfig, unit: Unit) -> list[Unit]:
    """The units that read `unit`'s files (a ticket's; controls feed nothing)."""
    if unit.variant != "ticket":
        return []
    chained = unit.level == 0 or not config.one_shot
    return [u for u in _units(config) if u.seed == unit.seed and u != unit and
            (u.level == unit.level or (chained and u.level > unit.level))]


def recompute_damaged(ctx: Context, reporter: Reporter | None = None) -> list[Unit]:
    """`--recompute`: deletes each damaged unit, and the unfinished units started from it
    (their checkpoints hold what the damage fed them), so the run computes them again."""
    store, removed = ctx.store, []
    for unit in _units(ctx.config):
        damage = store.damage(unit)
        if damage is None:
            continue
        for u in [unit, *(u for u in _computed_from(ctx.config, unit) if not store.done(u))]:
            if u not in removed:
                store.remove(u)
                removed.append(u)
        note = getattr(reporter, "recomputing", None)
        if note:
            note(unit, str(damage))
    return removed


def run_units(ctx: Context, units: list[Unit]) -> None:
    """Trains the units of one level that are not done yet: together, or one by one.

    Processes working on the same run share the units: a unit is trained by the process
    holding its lock (`RunStore.try_lock`); the others take the level's other units, then
    wait for the ones held elsewhere (the next level is cut from this one's tickets).
    """
    pending = [u for u in units if not _reused(ctx, u, adopt=False)]
    if not pending:
        return
    if ctx.together and (len(pending) > 1 or ctx.store.groups(pending[0].level)):
        _run_together(ctx, pending)
    else:
        _run_one_by_one(ctx, pending)


def plan_training(ctx: Context) -> tuple[bool, str]:
    """Whether a level's units train together (vectorised), and what config.json and the
    progress display say about it: "together (vectorised)" or "one by one: <why>"."""
    vectorize = ctx.runtime.vectorize
    if ctx.runtime.executor == "vectorized" and vectorize is None:
        vectorize = True
    if vectorize is False:
        return False, "one by one: --no-vectorize"
    if vectorize is None and ctx.device.type != "cuda":
        return False, ("one by one: on a CPU one model keeps the cores busy (the default; "
                       "--vectorize trains a level's units together)")
    why = vectorize_refusal(ctx.new_model(0))
    if why:
        return False, f"one by one: {why}"
    return True, "together (vectorised)"


def _reused(ctx: Context, unit: Unit, adopt: bool = True) -> bool:
    """Whether the unit is done (or, under its lock, copied from a sibling run's level 0)."""
    store = ctx.store
    if adopt and unit.level == 0 and not store.done(unit):
        donor = next((s for s in ctx.siblings if s.done(unit)), None)
        if donor:  # the same dense training, already done in another run: copy it
            adopt_dense(ctx, unit, donor)
    if not store.done(unit):
        return False
    if ctx.reporter:
        ctx.reporter.end_unit(unit, store.result(unit), reused=True)
    return True


def adopt_dense(ctx: Context, unit: Unit, donor: RunStore) -> bool:
    """Copies level 0 from a run with the same dense training. A donor with another rewind
    point kept a snapshot of another step: this run's own is made by replaying level 0's
    first steps (`replay_dense`), so a list of rewind points shares one dense training at
    the cost of its first steps. False (nothing copied) for a damaged donor."""
    if donor.damage(unit) is not None:
        return False
    theirs = ExperimentConfig.from_science(donor.config()["science"]).rewind
    ipe = ctx.data.iterations_per_epoch(ctx.config.training.batch_size)
    if Step.parse(theirs).iterations(ipe) == ctx.rewind:
        return ctx.store.adopt(unit, donor)
    return ctx.store.adopt(unit, donor,
                           {"rewind": replay_dense(ctx, unit.seed, [ctx.rewind])[ctx.rewind]})


def replay_dense(ctx: Context, seed: int, steps: list[int],
                 progress: Callable[[int, float | None], None] | None = None
                 ) -> dict[int, dict[str, torch.Tensor]]:
    """The dense network's state at each of `steps` of level 0, trained again from its
    initialisation as level 0 was (same model seed, mask and data order) to the last of them.

    The data order, augmentation and learning rate are functions of the seed and the step, so
    this is level 0's trajectory: bit for bit with the same kernels and thread count (tests
    check it), within float rounding otherwise. Evaluated only at both ends."""
    model, mask, start, frozen = prepare(ctx, Unit(seed, 0, "ticket"))
    end = max(steps)
    states: dict[int, dict[str, torch.Tensor]] = {}
    hooks = [Snapshot(k, lambda _, state, k=k: states.__setitem__(k, state))
             for k in set(steps) if k < end]
    if end > start:
        train(model, ctx.data, ctx.config.training, seed=seed, start=start, end=end,
              eval_every=end, mask=ctx.enforced(mask, frozen).to(ctx.device), hooks=hooks,
              progress=progress)
    states[end] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {k: states[k] for k in steps}


def rewind_sweep(config: ExperimentConfig, rewinds: list[str] | tuple[str, ...]
                 ) -> list[ExperimentConfig]:
    """One configuration per rewind point (`find --rewind 0,100,500,2000it`): one IMP chain
    each, run by `run_many` as one plan, sharing the dense training (`adopt_dense`)."""
    from ticketlab.config import apply_overrides, parse_steps

    steps = parse_steps(",".join(map(str, rewinds)))
    if not steps:
        raise TicketlabError("no rewind point given: e.g. --rewind 0,100,500,2000it")
    if len(set(steps)) != len(steps):
        raise TicketlabError(f"rewind points repeat ({','.join(steps)}): list each once")
    return [apply_overrides(config, {"rewind": s}) for s in steps]


def _run_one_by_one(ctx: Context, pending: list[Unit]) -> None:
    held = []
    for unit in pending:
        lock = ctx.store.try_lock(unit)
        if lock is None:
            held.append(unit)
            continue
        with lock:
            if not _reused(ctx, unit):
                _train_alone(ctx, unit)
    for unit in held:
        with wait_for(ctx, [unit]):
            if not _reused(ctx, unit):
                _train_alone(ctx, unit)


def wait_for(ctx: Context, units: list[Unit]) -> UnitLock:
    """Blocks until no other process holds units[0]; returns its lock (ours now)."""
    lock = ctx.store.try_lock(units[0])
    if lock is None:
        tell = getattr(ctx.reporter, "wait_units", None)
        if tell:
            tell(units)
        while lock is None:
            if interrupt.requested():
                raise KeyboardInterrupt
            time.sleep(WAIT_POLL)
            lock = ctx.store.try_lock(units[0])
    return lock


def _run_together(ctx: Context, pending: list[Unit]) -> None:
    """All of a level's pending units in one group, as a single process would train them:
    units held by another process are waited for (and then done) before any is taken."""
    while pending:
        locks: list[UnitLock] = []
        for unit in pending:
            lock = ctx.store.try_lock(unit)
            if lock is None:
                break
            locks.append(lock)
        try:
            if len(locks) == len(pending):
                _train_groups(ctx, [u for u in pending if not _reused(ctx, u)])
                return
        finally:
            for lock in locks:
                lock.release()
        wait_for(ctx, pending[len(locks):]).release()
        pending = [u for u in pending if not _reused(ctx, u, adopt=False)]


def _train_groups(ctx: Context, todo: list[Unit]) -> None:
    """Resumes the level's interrupted groups as the same groups (units already finished
    ride along unrecorded, so the others get the numbers of an uninterrupted run), then
    trains what is left together."""
    if not todo:
        return
    for group in ctx.store.groups(todo[0].level):
        rest = [u for u in group if not ctx.store.done(u)]
        if rest and set(rest) <= set(todo):
            _train_together(ctx, group)
            todo = [u for u in todo if u not in rest]
    if len(todo) > 1:
        _train_together(ctx, todo)
    elif todo:
        _train_alone(ctx, todo[0])


def _train_alone(ctx: Context, unit: Unit) -> None:
    store = ctx.store
    model, mask, start, frozen = _start(ctx, unit)
    progress = ctx.reporter.start_units([unit], start, ctx.end) if ctx.reporter else None
    began = time.monotonic()
    on_snapshot: Callable | None = None
    if unit.level == 0:
        on_snapshot = lambda state: store.save_weights(unit, "rewind", state)
    metrics = train(
        model, ctx.data, ctx.config.training, seed=unit.seed, start=start, end=ctx.end,
        eval_every=ctx.eval_every, mask=ctx.enforced(mask, frozen).to(ctx.device), frozen=frozen,
        snapshot_at=ctx.rewind if unit.level == 0 else None, on_snapshot=on_snapshot,
        checkpoint=store.checkpoint(unit, ctx.runtime.checkpoint_every), progress=progress,
    )
    _finish(ctx, unit, model, mask, start, metrics, time.monotonic() - began,
            sparse_layer_names(model, None if frozen else mask, ctx.config.training.sparse_below))


def _start(ctx: Context, unit: Unit) -> Prepared:
    """Prepares a unit and records its mask and starting weights (controls read the ticket's)."""
    prepared = prepare(ctx, unit)
    model, mask = prepared[0], prepared[1]
    ctx.store.save_mask(unit, mask)
    ctx.store.save_weights(unit, "init" if unit.level == 0 else "rewind", model.state_dict())
    return prepared


def _train_together(ctx: Context, units: list[Unit]) -> None:
    """Trains `units` in one vectorised pass; those already done (a resumed group's) are
    trained again for the others' sake, but their files are left as they are."""
    store = ctx.store
    riders = [store.done(u) for u in units]
    prepared = [prepare(ctx, u) if done else _start(ctx, u) for u, done in zip(units, riders)]
    start = prepared[0][2]
    checkpoint = store.group(units, ctx.runtime.checkpoint_every)[0]
    store.write_group(units)
    progress = ctx.reporter.start_units(units, start, ctx.end) if ctx.reporter else None
    began = time.monotonic()

    def on_snapshot(i: int, state: dict[str, torch.Tensor]) -> None:
        if not riders[i]:
            store.save_weights(units[i], "rewind", state)

    metrics = train_replicates(
        [p[0] for p in prepared], ctx.data, ctx.config.training,
        seeds=[u.seed for u in units], start=start, end=ctx.end, eval_every=ctx.eval_every,
        masks=[ctx.enforced(p[1], p[3]).to(ctx.device) for p in prepared],
        frozen=[p[3] for p in prepared],
        snapshot_at=ctx.rewind if units[0].level == 0 else None, on_snapshot=on_snapshot,
        checkpoint=checkpoint, progress=progress,
    )
    for unit, (model, mask, _, _), m, done in zip(units, prepared, metrics, riders):
        if not done:
            _finish(ctx, unit, model, mask, start, m, (time.monotonic() - began) / len(units))
    store.clear_group(units)


def _finish(ctx: Context, unit: Unit, model: torch.nn.Module, mask: Mask, start: int,
            metrics: list, seconds: float, sparse: list[str] | None = None) -> dict[str, Any]:
    """`sparse`: the layers trained with sparse kernels (none when trained vectorised, which
    stacks dense weights)."""
    ctx.store.save_weights(unit, "final", model.state_dict())
    ctx.store.save_timing(unit, seconds, ctx.end - start)
    stop = EarlyStop.from_metrics(metrics)
    record = unit_record(unit, mask, model, stop, stop, start, ctx.end)
    if ctx.config.training.sparse_below is not None:
        record["sparse_layers"] = sparse or []
    return finish_unit(ctx, unit, metrics, record)


def unit_record(unit: Unit, mask: Mask, model: torch.nn.Module, stop: EarlyStop,
                whole: EarlyStop, start: int, end: int) -> dict[str, Any]:
    """A unit's result.json: early-stop numbers from `stop`, final ones and divergence from
    `whole` (the same evaluations, unless the early stop was chosen among some of them)."""
    return {
        "seed": unit.seed, "level": unit.level, "variant": unit.variant,
        "density": mask.density(), "model_density": mask.model_density(model),
        "early_stop_iteration": stop.iteration, "early_stop_val_loss": stop.val_loss,
        "early_stop_test_accuracy": stop.test_accuracy,
        "final_test_accuracy": whole.final_test_accuracy,
        "early_stop_train_accuracy": stop.train_accuracy,
        "final_train_accuracy": whole.final_train_accuracy,
        "diverged": whole.diverged, "diverged_iteration": whole.diverged_iteration,
        "start_iteration": start, "end_iteration": end,
    }


def finish_unit(ctx: Context, unit: Unit, metrics: list, record: dict[str, Any]
                ) -> dict[str, Any]:
    """Writes the unit's metrics and record (it is done from here on) and, in the driver,
    the summary (a worker's driver writes it when it hears the unit is done)."""
    ctx.store.finish(unit, metrics, record)
    if ctx.driver:
        ctx.store.write_summary()
    if ctx.reporter:
        ctx.reporter.end_unit(unit, record, reused=False)
    return record
