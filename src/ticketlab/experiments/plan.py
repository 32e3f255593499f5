"""The plan: every unit of one or more runs, what each waits for, what is done, what is left.

An IMP experiment is a graph of independent trainings. Seeds are independent; level L's
ticket of a seed is cut from level L-1's trained ticket (from the dense level 0 when
one-shot); the controls of a level need only what their ticket needs (they cut the same
mask themselves if the ticket has not saved it yet). So a level's units can all train at
once, as soon as the previous level's ticket of their seed is done.

A `Job` is what an executor hands to a worker: one unit, or a level's units trained
together (vectorised). Jobs are listed in the order a single process computes them
(levels, then seeds, then variants), which is a valid order for any executor. A run that
shares its dense training with another run of the plan (a sweep over pruning settings)
borrows that run's level 0 once it is done instead of training it again.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from dataclasses import dataclass, field

import torch

from ticketlab.config import ExperimentConfig
from ticketlab.experiments.context import Context
from ticketlab.experiments.store import Unit
from ticketlab.experiments.variants import VARIANTS, Variant
from ticketlab.models import build_model
from ticketlab.pruning import Mask, random_like, rates_for_density
from ticketlab.pruning.magnitude import Rates
from ticketlab.training.hooks import Hook, LoopState
from ticketlab.training.sparse import qualifies

UnitKey = tuple[int, Unit]  # (run index in the plan, unit)


@dataclass(frozen=True)
class Job:
    run: int  # index of the run in `Plan.contexts`
    units: tuple[Unit, ...]  # one, or a level's units trained together
    needs: tuple[UnitKey, ...]  # units that must be done before this job starts
    iterations: int  # unit-iterations to train (units x steps); 0 when borrowed
    borrows: bool = False  # level 0 copied from a run with the same dense training

    @property
    def key(self) -> str:
        first = self.units[0].relpath()
        return f"{self.run}:{first}" + (f"+{len(self.units) - 1}" if len(self.units) > 1 else "")

    def describe(self) -> str:
        u = self.units[0]
        if len(self.units) > 1:
            return f"level {u.level}: {len(self.units)} units together"
        return f"level {u.level} {u.variant} seed {u.seed}"


@dataclass
class Plan:
    contexts: list[Context]
    jobs: list[Job]
    done: list[UnitKey]  # finished before the plan started
    resumable: list[UnitKey] = field(default_factory=list)  # a checkpoint to resume from

    @property
    def units(self) -> int:
        return len(self.done) + sum(len(j.units) for j in self.jobs)

    def width(self) -> int:
        """The most jobs that can ever run at once: the widest level of any run."""
        per_level: dict[tuple[int, int], int] = {}
        for j in self.jobs:
            key = (j.run, j.units[0].level)
            per_level[key] = per_level.get(key, 0) + 1
        return max(per_level.values(), default=0)


def make_plan(contexts: list[Context]) -> Plan:
    """The plan of the runs' units that are not done, read from their run directories."""
    jobs: list[Job] = []
    done: list[UnitKey] = []
    resumable: list[UnitKey] = []
    dense_owner: dict[tuple[str, int], int] = {}  # (dense science, seed) -> first run with it
    for r, ctx in enumerate(contexts):
        c, store = ctx.config, ctx.store
        dense = json.dumps(c.dense_science(), sort_keys=True)
        owner = {s: dense_owner.setdefault((dense, s), r) for s in c.seeds}
        for level in range(c.n_levels + 1):
            variants = ("ticket", *c.controls) if level else ("ticket",)
            pending = []
            for unit in (Unit(s, level, v) for s in c.seeds for v in variants):
                if store.done(unit):
                    done.append((r, unit))
                    continue
                if (store.dir(unit) / "checkpoint.pt").is_file():
                    resumable.append((r, unit))
                pending.append(unit)
            steps = ctx.end - (0 if level == 0 else ctx.rewind)

            groups = [pending] if ctx.together and len(pending) > 1 else [[u] for u in pending]
            for units in groups:
                if level == 0:
                    needs = tuple((owner[u.seed], u) for u in units if owner[u.seed] != r)
                    borrows = all(owner[u.seed] != r or any(s.done(u) for s in ctx.siblings)
                                  for u in units)
                else:
                    parent = 0 if c.one_shot else level - 1
                    keys = dict.fromkeys((r, Unit(u.seed, parent, "ticket")) for u in units)
                    needs, borrows = tuple(k for k in keys if not store.done(k[1])), False
                jobs.append(Job(r, tuple(units), needs, 0 if borrows else steps * len(units),
                                borrows))
    return Plan(contexts, jobs, done, resumable)


# ------------------------------------------------------------------------------ estimates
#
# What a unit costs per iteration depends on its kernels. With dense kernels it costs what
# level 0 costs, whatever its mask keeps; with sparse kernels (`TrainingHparams.sparse_below`)
# its cost falls with its density. So every unit takes the rate of its *cost key*: its level
# when sparse kernels train it, else 0.

def level_densities(dense: Mask, config: ExperimentConfig) -> list[dict[str, float]]:
    """Each level's expected density of each prunable tensor of `dense` (a dense mask), from
    the pruning settings alone, before any level is cut.

    Layer-wise, a level removes round(rate x kept) of each tensor (`pruning.prune`): an
    iterative level's counts follow exactly, a one-shot level's from the rates
    `rates_for_density` gives; at a structured granularity, up to a group per tensor. A global
    ranking decides per tensor from the trained weights: only the pool's density is known,
    and every pooled tensor gets it. A threshold mask's density follows from the trained
    weights alone: its level is taken as dense (the costlier guess).
    """
    p = config.pruning
    total = {k: v.numel() for k, v in dense.items()}
    pool = [k for k in dense if dense.groups[k] not in p.exclude]

    def rate_of(rates: Rates, name: str) -> float:
        group = dense.groups[name]
        if group in p.exclude:
            return 0.0
        return float(rates if isinstance(rates, float | int) else rates.get(group, 0.0))

    def cut(kept: dict[str, float], rates: Rates) -> dict[str, float]:
        if p.scope == "global" and pool:  # one rate over the pooled tensors' kept weights
            n = sum(kept[k] for k in pool)
            share = (n - round(rate_of(rates, pool[0]) * n)) / sum(total[k] for k in pool)
            return {k: share * total[k] if k in pool else v for k, v in kept.items()}
        return {k: v - round(rate_of(rates, k) * v) for k, v in kept.items()}

    levels = [{k: float(n) for k, n in total.items()}]
    for level in range(1, config.n_levels + 1):
        if p.threshold is not None:
            levels.append(levels[0])
        elif config.one_shot:
            rates = rates_for_density(dense, p.rates_arg(), config.one_shot[level - 1],
                                      scope=p.scope, exclude=p.exclude)
            levels.append(cut(levels[0], rates))
        else:
            levels.append(cut(levels[-1], p.rates_arg()))
    return [{k: kept[k] / total[k] for k in kept} for kept in levels]


@dataclass(frozen=True)
class Levels:
    """A run's levels as their costs see them (`level_densities`)."""

    densities: list[dict[str, float]]  # per level: each prunable tensor's expected density
    overall: list[float]  # per level: the expected density of all prunable weights
    sparse: frozenset[int]  # levels whose units train some layer with sparse kernels

    def key(self, unit: Unit) -> int:
        """The unit's cost key: its level with sparse kernels, else 0. A mask-0 action holds
        pruned weights at values, which keeps dense kernels (`training.loop.Solo`)."""
        if unit.level not in self.sparse or unit.variant not in VARIANTS:
            return 0
        holds = VARIANTS.get(unit.variant).frozen is not Variant.frozen
        return 0 if holds else unit.level


def run_levels(ctx: Context) -> Levels:
    """`Levels` of the run, from its model's shapes (built on the meta device: nothing is
    initialised). A level trains sparse kernels where a layer's expected density qualifies
    (`training.sparse.qualifies`), unless its units train together (vectorised, which stacks
    dense weights)."""
    c = ctx.config
    with torch.device("meta"):
        model = build_model(c.model.model, ctx.data.input_shape, ctx.data.num_classes,
                            c.model.init, 0)
    meta = Mask.dense(model)
    dense = meta.with_tensors({k: torch.ones(v.shape, dtype=torch.bool) for k, v in meta.items()})
    densities = level_densities(dense, c)
    total = {k: v.numel() for k, v in dense.items()}
    overall = [sum(d[k] * total[k] for k in d) / sum(total.values()) for d in densities]
    below = c.training.sparse_below
    modules = {f"{n}.weight" if n else "weight": m for n, m in model.named_modules()}
    sparse = frozenset() if not below or ctx.together else frozenset(
        level for level, d in enumerate(densities) if level and any(
            qualifies(modules[k], total[k], d[k], below) for k in d if k in modules))
    return Levels(densities, overall, sparse)


def measured_rates(ctx: Context, levels: Levels | None = None) -> dict[int, float]:
    """Seconds per unit-iteration per cost key (`Levels.key`), from the run's timed units
    (timing.json); level 0 also from sibling runs (the same dense training)."""
    levels = levels or run_levels(ctx)
    timed = [(u, t) for u, t in ctx.store.timings().items() if u.level < len(levels.overall)]
    timed += [(u, t) for s in ctx.siblings for u, t in s.timings().items() if u.level == 0]
    seconds: dict[int, list[float]] = {}
    for unit, t in timed:
        if t["iterations"] > 0:
            s = seconds.setdefault(levels.key(unit), [0.0, 0.0])
            s[0] += t["seconds"]
            s[1] += t["iterations"]
    return {k: s / n for k, (s, n) in seconds.items()}


# Evaluations of a unit at a new validation minimum (or its end), which also evaluate the
# test set and the training subset: about a constant count, not a share. LeNet-300-100 on
# MNIST had 17 of 31 evaluations (3,000 iterations), 18 of 101 (10,000) and 17 to 32 of 501
# (50,000, dense and pruned). Only the probe guesses it; with test_curve every evaluation
# evaluates the test set.
NEW_MINIMA = 20


def minima_share(evaluations: int) -> float:
    """The share of a unit's `evaluations` that also evaluate the test set and the subset."""
    return min(1.0, NEW_MINIMA / max(1, evaluations))


PROBE_WARM_UP = 5  # untimed first steps: they pay for lazy initialisation


class _Stopwatch(Hook):
    """The clock after each training step, and after the last evaluation."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.evaluated = 0.0

    def after_step(self, state: LoopState) -> None:
        self.steps.append(time.perf_counter())

    def at_evaluation(self, state: LoopState) -> None:
        self.evaluated = time.perf_counter()


def probe_rate(ctx: Context, densities: dict[str, float] | None = None, steps: int = 30) -> float:
    """Seconds per iteration of one unit of the run, measured on a throwaway model with a
    random mask at `densities` (None: dense) and the run's kernels: the median of `steps`
    training steps after the warm-up, plus the final evaluation (validation, test set and
    training subset) spread as a unit's evaluations are. Nothing is saved."""
    from ticketlab.training.loop import train, train_eval_subset

    model = ctx.new_model(0)
    mask = Mask.dense(model)
    if densities is not None:
        kept = {k: (torch.arange(v.numel()) < round(densities[k] * v.numel())).view(v.shape)
                for k, v in mask.items()}
        mask = random_like(mask.with_tensors(kept), seed=0).to(ctx.device)
    clock, end, hp = _Stopwatch(), PROBE_WARM_UP + steps, ctx.config.training
    train(model, ctx.data, hp, seed=0, end=end, eval_every=end + 1, mask=mask, hooks=[clock])
    timed = clock.steps[PROBE_WARM_UP - 1:]
    step = statistics.median(b - a for a, b in itertools.pairwise(timed))  # a busy CPU's spikes
    images = {"val": len(ctx.data.y_val), "test": len(ctx.data.y_test),
              "train": len(train_eval_subset(ctx.data)[1])}
    per_image = (clock.evaluated - clock.steps[-1]) / sum(images.values())  # all three, at end
    minima = minima_share(ctx.end // ctx.eval_every + 1)
    test_share = 1.0 if hp.test_curve else minima
    return step + per_image * (images["val"] + test_share * images["test"]
                               + minima * images["train"]) / ctx.eval_every


def probe_rates(ctx: Context, levels: Levels) -> dict[int, float]:
    """Seconds per unit-iteration per cost key, from probes: dense kernels (key 0) at level
    0's dense mask; sparse kernels at the sparse level of highest and of lowest expected
    density, every sparse level in between interpolated linearly in its overall density."""
    rates = {0: probe_rate(ctx)}
    if levels.sparse:
        by_density = sorted(levels.sparse, key=levels.overall.__getitem__)
        lo, hi = by_density[0], by_density[-1]
        r_lo = probe_rate(ctx, levels.densities[lo])
        r_hi = probe_rate(ctx, levels.densities[hi]) if hi != lo else r_lo
        d_lo, d_hi = levels.overall[lo], levels.overall[hi]
        for level in levels.sparse:
            w = (levels.overall[level] - d_lo) / (d_hi - d_lo) if d_hi > d_lo else 0.0
            rates[level] = r_lo + w * (r_hi - r_lo)
    return rates


def run_rates(ctx: Context, levels: Levels, keys: set[int], probing: bool
              ) -> dict[int, float] | None:
    """Seconds per unit-iteration per cost key, for `keys` at least: measured where a unit
    of that key was timed (`measured_rates`); else, when `probing`, the probe's rate scaled
    by the ratio of the measured rates to the probe's at the measured keys (the probe runs on
    a throwaway model, on a machine maybe busier or idler than when the run was timed). None
    if some key of `keys` was not measured and there is no probe."""
    measured = measured_rates(ctx, levels)
    if keys <= measured.keys():
        return measured
    if not probing:
        return None
    probed = probe_rates(ctx, levels)  # has every key a unit of the run can have
    ratio = sum(measured.values()) / sum(probed[k] for k in measured) if measured else 1.0
    return {**{k: r * ratio for k, r in probed.items()}, **measured}


def job_seconds(plan: Plan, probe: bool = False) -> dict[str, float] | None:
    """Each job's estimated seconds (borrowed ones: 0): its units' iterations at their rates
    (`run_rates`); None if some unit has no rate."""
    keys: dict[tuple[int, Unit], int] = {}  # (run, unit) -> its cost key, units to train
    rates: dict[int, dict[int, float]] = {}
    for r, ctx in enumerate(plan.contexts):
        units = [u for j in plan.jobs if j.run == r and j.iterations for u in j.units]
        if units:
            levels = run_levels(ctx)
            keys.update({(r, u): levels.key(u) for u in units})
            run = run_rates(ctx, levels, {keys[r, u] for u in units}, probe)
            if run is None:
                return None
            rates[r] = run
    return {j.key: sum(j.iterations / len(j.units) * rates[j.run][keys[j.run, u]]
                       for u in j.units) if j.iterations else 0.0 for j in plan.jobs}


def makespan(plan: Plan, seconds: dict[str, float], workers: int) -> float:
    """Wall seconds for `workers` workers taking ready jobs in plan order (list scheduling,
    as the executors do)."""
    finish: dict[UnitKey, float] = {k: 0.0 for k in plan.done}
    free = [0.0] * max(1, workers)
    for job in plan.jobs:  # plan order is a topological order
        ready = max((finish.get(k, 0.0) for k in job.needs), default=0.0)
        i = min(range(len(free)), key=free.__getitem__)
        start = max(free[i], ready)
        free[i] = start + seconds[job.key]
        for u in job.units:
            finish[(job.run, u)] = free[i]
    return max(free, default=0.0)


def training_flops(plan: Plan) -> float:
    """Floating-point operations the plan's training needs, counted (never timed): the
    multiply-accumulates of a forward pass x 2 (FLOPs) x 3 (forward and backward) per
    image, per step. The executors' default compares it with the cost of starting workers."""
    from ticketlab.models.cost import count_macs

    total = 0.0
    macs: dict[int, int] = {}
    for job in plan.jobs:
        if not job.iterations:
            continue
        if job.run not in macs:
            ctx = plan.contexts[job.run]
            c = ctx.config
            with torch.device("meta"):
                model = build_model(c.model.model, ctx.data.input_shape, ctx.data.num_classes,
                                    c.model.init, 0)
            model = model.to_empty(device="cpu")
            macs[job.run] = count_macs(model.eval(), torch.zeros(1, *ctx.data.input_shape))
        batch = plan.contexts[job.run].config.training.batch_size
        total += 6.0 * macs[job.run] * batch * job.iterations
    return total if math.isfinite(total) else 0.0
