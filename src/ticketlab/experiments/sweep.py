"""A sweep file: a grid over settings read into the runs `ticketlab sweep` executes as one
plan (`imp.run_many`), every run checked before any trains.

The file is a `--config` file (keys named like the options, with underscores; optional
[data]/[model]/[training]/[pruning] tables) with two additions:

    preset = "lenet_mnist"          # optional: the paper's settings under the base settings
    train = "5000it"                # base settings, shared by every run
    levels = 8
    seeds = [0, 1]

    [grid]                          # each key a setting, each value a non-empty list
    rewind = ["0it", "100it", "500it", "2000it"]
    criterion = ["large_final", "movement"]

    [[runs]]                        # optional: explicit overrides a grid cannot express
    scope = "layerwise"
    [[runs]]
    scope = "global"
    rate = 0.2

The runs are the cartesian product of the grid values in the order written (the first key
varies slowest), times the [[runs]] tables (a grid point's settings, then each table's). A
run's settings are the defaults, then the preset (`preset` may also be a grid key or a
[[runs]] key), then the base settings, then its grid point and [[runs]] table. Running
options (out, device, threads, executor...) are refused in the file: they do not change a
number, so they belong on the command line. Two points naming one run (the same run hash: a
grid over seeds, levels or controls, which do not name runs) are refused.
"""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ticketlab.config import (
    FIELDS,
    RUNTIME_FIELDS,
    ExperimentConfig,
    Step,
    apply_overrides,
    load_toml,
)
from ticketlab.errors import TicketlabError
from ticketlab.presets import preset_settings

SWEEP_KEYS = ("preset", "grid", "runs")  # a sweep file's keys besides the settings


@dataclass(frozen=True)
class Sweep:
    """A sweep file read and checked: each run's own settings (its grid point and [[runs]]
    table) beside the configuration they make, in the order they run."""

    path: Path
    points: list[dict[str, Any]]
    configs: list[ExperimentConfig]

    def labels(self) -> list[str]:
        """What sets each run apart, as the report's legend says it ('rewind=500it')."""
        from ticketlab.report.runs import run_labels

        return run_labels([c.science() for c in self.configs],
                          [c.run_name() for c in self.configs])


def load_sweep(path: Path) -> list[ExperimentConfig]:
    """The sweep file's runs, each validated, in the order they run."""
    return read_sweep(path).configs


def read_sweep(path: Path) -> Sweep:
    """Reads and checks the whole file: a one-line error names the key, the run or the file
    and the fix before anything trains."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise TicketlabError(f"sweep file {path} {what}: give the path of a TOML file")
    raw = load_toml(path)  # refuses a missing file and bad TOML in one line
    grid = _grid(raw.pop("grid", {}), path)
    runs = _runs(raw.pop("runs", None), path)
    base_preset = raw.pop("preset", None)
    _check_keys(raw, path, "")
    if not grid and runs == [{}]:
        raise TicketlabError(f"sweep file {path} has no [grid] and no [[runs]]: add a [grid] "
                             "of lists, e.g. rewind = [\"0it\", \"500it\"] (one run is "
                             "`ticketlab find --config FILE`)")
    for key in grid:
        if key in raw:
            raise TicketlabError(f"'{key}' in {path} is both a base setting and a [grid] key: "
                                 "keep one of them")
        if any(key in run for run in runs):
            raise TicketlabError(f"'{key}' in {path} is both a [grid] key and a [[runs]] key: "
                                 "keep one of them")
    points = grid_points(grid, runs)
    configs = []
    for i, point in enumerate(points, 1):
        try:
            configs.append(_config(base_preset, raw, point))
        except TicketlabError as e:
            raise TicketlabError(f"{path}, run {i} ({describe(point)}): {e}") from None
    _check_distinct(configs, points, path)
    return Sweep(path, points, configs)


def grid_points(grid: dict[str, list[Any]], runs: list[dict[str, Any]] | None = None
                ) -> list[dict[str, Any]]:
    """The cartesian product of the grid, first key slowest, times the [[runs]] tables."""
    keys = list(grid)
    return [{**dict(zip(keys, values)), **run}
            for values in itertools.product(*grid.values()) for run in (runs or [{}])]


def describe(point: dict[str, Any]) -> str:
    """A run's own settings in one line: 'rewind=500it, scope=global'."""
    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{" + ",".join(f"{k}={x}" for k, x in v.items()) + "}"
        return ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
    return ", ".join(f"{k}={value(v)}" for k, v in point.items()) or "the base settings"


def _config(base_preset: str | None, base: dict[str, Any], point: dict[str, Any]
            ) -> ExperimentConfig:
    point = dict(point)
    preset = point.pop("preset", base_preset)
    if preset is not None and not isinstance(preset, str):
        raise TicketlabError(f"preset must be a name, got {preset!r}: e.g. preset = "
                             "\"lenet_mnist\" (see ticketlab presets)")
    values = preset_settings(preset) if preset else {}
    config = apply_overrides(ExperimentConfig(), {**values, **base, **point})
    config.validate()
    rewind, train = Step.parse(config.rewind), Step.parse(config.training.train)
    if rewind.unit == train.unit:  # else the dataset's epoch length decides: the run checks
        config.budget(1)
    return config


def _grid(grid: Any, path: Path) -> dict[str, list[Any]]:
    if not isinstance(grid, dict):
        raise TicketlabError(f"grid in {path} must be a table: write [grid] on its own line, "
                             "then one list per setting, e.g. rewind = [\"0it\", \"500it\"]")
    grid = {k.replace("-", "_"): v for k, v in grid.items()}
    _check_keys(grid, path, "[grid] ", allow_preset=True)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise TicketlabError(
                f"[grid] {key} in {path} must be a non-empty list of values, got "
                f"{values!r}: e.g. {key} = [{_example(key)}] (a fixed setting goes above "
                "[grid])")
    return grid


def _runs(runs: Any, path: Path) -> list[dict[str, Any]]:
    if runs is None:
        return [{}]
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise TicketlabError(f"runs in {path} must be [[runs]] tables of settings, e.g. "
                             "[[runs]] then scope = \"global\" on the next line")
    tables = [{k.replace("-", "_"): v for k, v in r.items()} for r in runs]
    for i, table in enumerate(tables, 1):
        _check_keys(table, path, f"[[runs]] table {i}: ", allow_preset=True)
    return tables


def _check_keys(values: dict[str, Any], path: Path, where: str,
                allow_preset: bool = False) -> None:
    for key in values:
        if key == "preset" and allow_preset:
            continue
        if key in RUNTIME_FIELDS:
            flag = "--" + key.replace("_", "-")
            raise TicketlabError(f"{where}'{key}' in {path} is a running option, not a "
                                 f"setting: remove it from the file and give {flag} on the "
                                 "command line")
        if key in SWEEP_KEYS:
            raise TicketlabError(f"{where}'{key}' in {path} belongs at the top of the file "
                                 f"({'a [grid] table' if key == 'grid' else key + ' = ...'}), "
                                 "not here")
        if key not in FIELDS:
            close = difflib.get_close_matches(key, [*FIELDS, *SWEEP_KEYS], n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise TicketlabError(f"{where}unknown setting '{key}' in {path}: {hint}use the "
                                 "names of `ticketlab find --help` with underscores (e.g. "
                                 "batch_size), preset, [grid] and [[runs]]")


def _check_distinct(configs: list[ExperimentConfig], points: list[dict[str, Any]],
                    path: Path) -> None:
    seen: dict[str, int] = {}
    for i, config in enumerate(configs):
        h = config.run_hash()
        if h in seen:
            j = seen[h]
            raise TicketlabError(
                f"{path}: runs {j + 1} ({describe(points[j])}) and {i + 1} "
                f"({describe(points[i])}) are the same run {config.run_name()}: make them "
                "differ in a setting that names a run (seeds, levels and controls do not: set "
                "them once, above [grid])")
        seen[h] = i


def _example(key: str) -> str:
    default = FIELDS[key].default if key in FIELDS else "lenet_mnist"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, str):
        return f"\"{default}\""
    return "..." if default is None or isinstance(default, dict | tuple) else str(default)
