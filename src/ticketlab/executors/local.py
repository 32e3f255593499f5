"""The sequential and vectorized executors: the plan's jobs one after another, here."""

from __future__ import annotations

from ticketlab.experiments.context import Reporter
from ticketlab.experiments.plan import Plan


def run_here(plan: Plan, reporter: Reporter | None) -> None:
    """Plan order is a valid order: each job's dependencies come before it. Units another
    process is training are waited for (`run_units`)."""
    from ticketlab.experiments.imp import run_units

    for job in plan.jobs:
        run_units(plan.contexts[job.run], list(job.units))
