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

import json
import math
import time
from dataclasses import dataclass, field

import torch

from ticketlab.experiments.context import Context
from ticketlab.experiments.store import Unit

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

def measured_rate(ctx: Context) -> float | None:
    """Seconds per unit-iteration from the run's finished units (timing.json), or from
    sibling runs with the same model and data; None when nothing was measured."""
    for store in (ctx.store, *ctx.siblings):
        timed = [t for t in store.timings() if t["iterations"] > 0]
        if timed:
            return sum(t["seconds"] for t in timed) / sum(t["iterations"] for t in timed)
    return None


# The share of evaluations that also evaluate the test set and the training subset (new
# validation minima, and the end): about 1 in 5 in the LeNet reproduction's metrics. Only
# the probe guesses it; with test_curve every evaluation evaluates the test set.
TRAIN_EVAL_SHARE = 0.2


def probe_rate(ctx: Context, steps: int = 30) -> float:
    """Seconds per iteration of this run's training measured on a throwaway model: `steps`
    training steps, and the evaluations spread over `eval_every` steps. Nothing is saved."""
    from ticketlab.training.evaluate import evaluate
    from ticketlab.training.loop import train, train_eval_subset

    model = ctx.new_model(0)
    steps = min(steps, ctx.end)
    hp = ctx.config.training
    train(model, ctx.data, hp, seed=0, end=min(5, ctx.end), eval_every=ctx.end + 1)  # warm-up:
    # the first steps pay for lazy initialisation (several times a later step's cost)
    began = time.perf_counter()
    train(model, ctx.data, hp, seed=0, end=steps, eval_every=steps + 1)
    train_seconds = time.perf_counter() - began
    seconds = {}
    for split, (x, y) in (("val", (ctx.data.x_val, ctx.data.y_val)),
                          ("test", (ctx.data.x_test, ctx.data.y_test)),
                          ("train", train_eval_subset(ctx.data))):
        began = time.perf_counter()
        evaluate(model, x, y)
        seconds[split] = time.perf_counter() - began
    # the probe's train() evaluated all three at its start and its end: take those out
    step = max(train_seconds - 2 * sum(seconds.values()), 0.0) / steps
    test_share = 1.0 if hp.test_curve else TRAIN_EVAL_SHARE
    return step + (seconds["val"] + test_share * seconds["test"]
                   + TRAIN_EVAL_SHARE * seconds["train"]) / ctx.eval_every


def job_seconds(plan: Plan, probe: bool = False) -> dict[str, float] | None:
    """Each job's estimated seconds (borrowed ones: 0), from each run's measured rate (or a
    probe when `probe` and nothing was measured); None if some run has no rate."""
    rates: list[float | None] = []
    for ctx in plan.contexts:
        rate = measured_rate(ctx)
        if rate is None and probe and any(j.iterations for j in plan.jobs
                                          if plan.contexts[j.run] is ctx):
            rate = probe_rate(ctx)
        rates.append(rate)
    if any(r is None for r, ctx in zip(rates, plan.contexts)
           if any(j.iterations for j in plan.jobs if plan.contexts[j.run] is ctx)):
        return None
    return {j.key: j.iterations * (rates[j.run] or 0.0) for j in plan.jobs}


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
                from ticketlab.models import build_model
                model = build_model(c.model.model, ctx.data.input_shape, ctx.data.num_classes,
                                    c.model.init, 0)
            model = model.to_empty(device="cpu")
            macs[job.run] = count_macs(model.eval(), torch.zeros(1, *ctx.data.input_shape))
        batch = plan.contexts[job.run].config.training.batch_size
        total += 6.0 * macs[job.run] * batch * job.iterations
    return total if math.isfinite(total) else 0.0
