"""The plan as a table: per run and level, units done, borrowed, resumable and to do, with
the estimated training time."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ticketlab.experiments.plan import Plan


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def plan_rows(plan: Plan, seconds: dict[str, float] | None) -> list[dict[str, Any]]:
    """One row per (run, level): the numbers `plan_table` shows, for tables and tests."""
    rows: dict[tuple[int, int], dict[str, Any]] = {}

    def row(run: int, level: int) -> dict[str, Any]:
        return rows.setdefault((run, level), {
            "run": plan.contexts[run].store.root.name, "level": level, "units": 0, "done": 0,
            "borrowed": 0, "resumable": 0, "to_do": 0, "seconds": None if seconds is None else 0.0})

    for run, unit in plan.done:
        r = row(run, unit.level)
        r["units"] += 1
        r["done"] += 1
    resumable = set(plan.resumable)
    for job in plan.jobs:
        r = row(job.run, job.units[0].level)
        r["units"] += len(job.units)
        r["borrowed" if job.borrows else "to_do"] += len(job.units)
        r["resumable"] += sum((job.run, u) in resumable for u in job.units)
        if seconds is not None:
            r["seconds"] += seconds[job.key]
    return [rows[k] for k in sorted(rows)]


def plan_table(plan: Plan, seconds: dict[str, float] | None) -> Table:
    several = len(plan.contexts) > 1
    table = Table(title="plan", title_justify="left")
    if several:
        table.add_column("run")
    for name in ("level", "units", "done", "borrowed", "resumable", "to do", "training"):
        table.add_column(name, justify="right")
    rows = plan_rows(plan, seconds)
    for r in rows:
        table.add_row(*([r["run"]] if several else []), str(r["level"]), str(r["units"]),
                      str(r["done"]), str(r["borrowed"]), str(r["resumable"]), str(r["to_do"]),
                      _hms(r["seconds"]))
    total = {k: sum(r[k] for r in rows) for k in ("units", "done", "borrowed", "resumable",
                                                  "to_do")}
    table.add_row(*([""] if several else []), "all", *(str(total[k]) for k in total),
                  _hms(None if seconds is None else sum(r["seconds"] for r in rows)), style="bold")
    return table
