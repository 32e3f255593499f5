"""The runs a report covers: records, configuration, statistics and a legend label each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ticketlab.errors import TicketlabError
from ticketlab.experiments.store import RunStore
from ticketlab.report.table import level_stats


@dataclass
class Run:
    store: RunStore
    config: dict[str, Any]  # config.json: hash, science, requested (and commands, if any)
    records: list[dict[str, Any]]
    stats: list[dict[str, Any]]  # `level_stats(records)`
    label: str = ""  # what sets this run apart from the others in the report

    @property
    def name(self) -> str:
        return self.store.root.name


def load_runs(run_dirs: Sequence[Path], variants: Sequence[str] | None = None) -> list[Run]:
    """Opens every run first, so a bad directory fails before anything is written.

    `variants` keeps only those units (the dense level 0 always stays: it is the reference),
    so an overlay of many runs can show, say, only their tickets."""
    runs = []
    for d in run_dirs:
        store = RunStore.open(Path(d))
        records = store.summary()["records"]
        if not records:
            raise TicketlabError(f"{d} has no finished unit yet: run (or resume) the command "
                                 "that made it, then report")
        runs.append(Run(store, store.config(), records, level_stats(records)))
    if variants:
        present = {r["variant"] for run in runs for r in run.records}
        unknown = [v for v in variants if v not in present]
        if unknown:
            raise TicketlabError(f"variant(s) {', '.join(unknown)} not in the run(s): choose "
                                 f"--variants from {', '.join(sorted(present))}")
        for run in runs:
            run.records = [r for r in run.records if r["level"] == 0 or r["variant"] in variants]
            run.stats = level_stats(run.records)
    labels = run_labels([r.config.get("science", {}) for r in runs], [r.name for r in runs])
    for run, label in zip(runs, labels):
        run.label = label
    return runs


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"pruning": {"scope": "global"}} -> {"pruning.scope": "global"}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _short(key: str, keys: list[str]) -> str:
    """'pruning.scope' -> 'scope' unless another key also ends in 'scope'."""
    rest = key.partition(".")[2]
    if rest and sum(k == rest or k.endswith(f".{rest}") for k in keys) == 1:
        return rest
    return key


def _value(value: Any) -> str:
    if value is ...:  # the key is absent from this run's configuration
        return "-"
    if isinstance(value, list):
        return ",".join(map(_value, value)) or "none"
    return "none" if value == {} else str(value)


def differing_keys(sciences: list[dict[str, Any]]) -> list[str]:
    """The flattened settings (`flatten`) whose values are not the same in every run."""
    flats = [flatten(s) for s in sciences]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [k for k in keys if len({repr(f.get(k, ...)) for f in flats}) > 1]


def run_labels(sciences: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Legend labels naming what differs between runs, e.g. 'rewind=500it, scope=global'.

    Runs that the science does not tell apart (or a single run) are labelled by name.
    """
    flats = [flatten(s) for s in sciences]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    differing = differing_keys(sciences)

    def part(key: str, flat: dict[str, Any]) -> str:
        if key == "one_shot":  # present only in one-shot runs
            return "iterative" if flat.get(key) is None else "one-shot"
        if key == "pruning.criterion":  # absent at its default
            return f"criterion={flat.get(key, 'large_final')}"
        return f"{_short(key, keys)}={_value(flat.get(key, ...))}"

    labels = [", ".join(part(k, f) for k in differing) for f in flats]
    return labels if differing and len(set(labels)) == len(labels) else list(names)
