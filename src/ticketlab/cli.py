"""`ticketlab`: a thin shell over the engine the Python API uses.

Bad input exits with code 2 and one line on stderr naming the problem and the fix.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from ticketlab.config import (
    FIELDS,
    RUNTIME_FIELDS,
    ExperimentConfig,
    FlatField,
    Runtime,
    apply_overrides,
    check_type,
    field_index,
    load_toml,
    runtime_hints,
)
from ticketlab.config.fields import parse_fractions, parse_ints, parse_names, parser_for
from ticketlab.errors import TicketlabError
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.presets import PRESETS, preset_settings
from ticketlab.threads import apply_threads
from ticketlab.training import interrupt

err = Console(stderr=True)
# Piped or captured output gets wide lines rather than a table squeezed to 80 columns.
out = Console() if Console().is_terminal else Console(width=160)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------- value parsers

def _ints(text: str) -> tuple[int, ...]:
    return _option_type(parse_ints)(text)


def _fractions(text: str) -> tuple[float, ...]:
    return _option_type(parse_fractions)(text)


_names = parse_names


# ---------------------------------------------------------------------------- commands

FIND_HELP = """Find lottery tickets by iterative magnitude pruning (IMP) with rewinding, or
by one-shot pruning (--one-shot, --threshold).

With no options it runs the embedded default: LeNet-300-100 on scikit-learn's 8x8 digits,
10 levels, with the reinit and random controls (under a minute on 2 CPU cores). Settings come
from the defaults, then --preset NAME (see `ticketlab presets`), then --config FILE (TOML,
keys named like the options), then the options. Results go to
OUT/imp_<model>_<dataset>_<hash>/ (oneshot_... for one-shot); the same command resumes an
interrupted run and prints a finished one without recomputing it."""


SPARSIFY_HELP = """Prune gradually inside one training run (Zhu & Gupta; fasterai's
SparsifyCallback): each seed trains once while --target sparsity is reached on
--sparsity-schedule over [--prune-start, --prune-end], by --criterion, --granularity (weights,
or whole filters / neurons) and --scope. This is not a lottery ticket search (that is `find`);
--lth imitates it inside the one run, rewinding to --rewind after each pruning step.

Settings come from the defaults, then --preset, then --config, then the options, as in
`find`. Results go to OUT/sparsify_<model>_<dataset>_<hash>/seed_S/level_00/sparsify/ (mask,
weights, metrics, sparsity at each evaluation); the same command resumes an interrupted run.
The test accuracy reported is at the validation early stop among the evaluations made with
the final mask."""


CRITERIA_HELP = """Compare mask criteria (Zhou et al. 2019): for each criterion, prune the
trained dense network one-shot to each --one-shot density with that criterion, rewind and
retrain (one run per criterion, sharing the dense training), then score every criterion's
masks on the untrained network (supermasks, with same-sign variants and random masks), and
write one report overlaying all criteria into --report. Takes every option of `find`."""


def add_find(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("find", help="find tickets: iterative or one-shot pruning, controls",
                       description=FIND_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_experiment_arguments(p)
    p.set_defaults(func=cmd_find)


def add_sparsify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sparsify", help="prune gradually while training once (fasterai's way)",
                       description=SPARSIFY_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_experiment_arguments(p, omit=FIND_ONLY)
    p.set_defaults(func=cmd_sparsify)


def add_criteria(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("criteria", help="compare mask criteria: retrained and untrained",
                       description=CRITERIA_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_experiment_arguments(p)
    g = p.add_argument_group("criteria")
    g.add_argument("--criteria", type=_names, metavar="LIST", dest="criteria_list",
                   help="criteria to compare (default: the nine of Zhou et al.: "
                   f"{','.join(ZHOU_CRITERIA)})")
    g.add_argument("--report", type=Path, metavar="DIR", required=True,
                   help="where the overlaid report goes")
    p.set_defaults(func=cmd_criteria)


ZHOU_CRITERIA = ("large_final", "small_final", "large_init", "small_init",
                 "large_init_large_final", "small_init_small_final", "magnitude_increase",
                 "movement", "random")


SECTION_GROUPS = {"data": "model and data", "model": "model and data", "pruning": "pruning",
                  None: "pruning", "training": "training", "sparsify": "gradual pruning"}
FIND_ONLY = ("levels", "controls", "one_shot", "rates", "rate", "threshold")  # not sparsify's


def add_experiment_arguments(p: argparse.ArgumentParser, omit: tuple[str, ...] = ("sparsify",)
                             ) -> None:
    """Every setting of ExperimentConfig and Runtime as an option, generated from the
    dataclass fields (help, parser, choices: `config.fields.setting`); `omit` names
    sections and flat keys a command has no use for (find: the sparsify section)."""
    a = p.add_argument
    a("--preset", metavar="NAME", help="start from a paper's settings (see `ticketlab presets`); "
      "--config and options override it")
    a("--config", type=Path, metavar="FILE", help="TOML file of settings (options override it)")
    groups = {title: p.add_argument_group(title) for title in dict.fromkeys(
        SECTION_GROUPS.values())}
    for flat in FIELDS.values():
        if flat.key not in omit and flat.section not in omit:
            add_setting(groups[SECTION_GROUPS[flat.section]], flat)
    running = p.add_argument_group("running")
    for flat in RUNTIME_FIELDS.values():
        add_setting(running, flat)
    show_defaults(p, experiment_defaults())


def add_setting(group: argparse._ActionsContainer, flat: FlatField) -> None:
    """One option for one setting: `--batch-size` for `batch_size`."""
    m = flat.meta
    if m["flag"] is None:
        return
    help_text = m["help"]
    kwargs: dict[str, Any] = {"dest": flat.key, "default": None}
    if m["action"] == "store_true":
        kwargs["action"] = "store_true"
    elif m["action"] == "optional":
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        choices = m["choices"]
        if isinstance(choices, tuple):
            kwargs.update(type=str.lower, choices=choices)
        else:
            kwargs["type"] = _option_type(m["parse"] or parser_for(flat.hint))
            if callable(choices):
                help_text += f"; one of: {', '.join(choices())}"
        if m["metavar"]:
            kwargs["metavar"] = m["metavar"]
    group.add_argument(m["flag"] or "--" + flat.key.replace("_", "-"),
                       help=help_text.replace("%", "%%"), **kwargs)


def _option_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """argparse's type: the setting's parser, its one-line error as argparse's message."""
    if parse in (int, float, str, Path):
        return parse  # argparse words their errors well ("invalid int value: 'x'")

    def option_type(text: str) -> Any:
        try:
            return parse(text)
        except TicketlabError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    option_type.__name__ = getattr(parse, "__name__", "value")
    return option_type


def experiment_defaults() -> dict[str, Any]:
    """Option dest -> default, read from the dataclasses (what an option left out means)."""
    config, runtime = ExperimentConfig(), Runtime()
    values = {k: getattr(config if s is None else getattr(config, s), k)
              for k, s in field_index().items()}
    values.update({k: getattr(runtime, k) for k in RUNTIME_KEYS})
    return values


def show_defaults(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None
                  ) -> None:
    """Appends "(default: X)" to each option's help, X from `defaults` (else the option's
    own default); options without one (None) explain in their help what leaving them out
    means."""
    for action in parser._actions:
        if not action.option_strings or action.help in (None, argparse.SUPPRESS):
            continue
        value = (defaults or {}).get(action.dest, action.default)
        if value is None or value is argparse.SUPPRESS:
            continue
        shown = ("on" if value else "off") if isinstance(value, bool) else _setting(value)
        action.help += f" (default: {shown or 'none'})".replace("%", "%%")


RUNTIME_KEYS = tuple(k for k, f in RUNTIME_FIELDS.items() if f.meta["flag"] is not None)


def resolve(args: argparse.Namespace) -> tuple[ExperimentConfig, Runtime]:
    """Defaults, then the preset, then the config file, then the flags given; every value
    checked against its field's type (a config file's values arrive untyped)."""
    values: dict[str, Any] = preset_settings(args.preset) if args.preset else {}
    values.update(load_toml(args.config) if args.config else {})
    values.update({k: v for k, v in vars(args).items()
                   if v is not None and k not in ("config", "preset", "func", "command", "argv",
                                                  "criteria_list", "report")})
    hints, default = runtime_hints(), Runtime()
    runtime = Runtime(**{k: check_type(k, values.pop(k), hints[k], getattr(default, k))
                         for k in RUNTIME_KEYS if k in values})
    runtime.validate()
    return apply_overrides(ExperimentConfig(), values), runtime


def describe(config: ExperimentConfig, store: RunStore, device: object) -> str:
    from torch import get_num_threads

    threads = get_num_threads()  # the count in force, however it was asked for
    c, t, p = config, config.training, config.pruning
    rates = p.rates_arg()
    rates = rates if isinstance(rates, float) else ",".join(f"{k}={v}" for k, v in rates.items())
    excluded = f" (never: {','.join(p.exclude)})" if p.exclude else ""
    if p.criterion != "large_final":
        excluded += f", criterion {p.criterion}"
    opt = f"{t.optimizer} lr {t.lr}"
    if t.optimizer == "sgd":
        opt += f" momentum {t.momentum}" + (" nesterov" if t.nesterov else "")
    if t.weight_decay:
        opt += f" wd {t.weight_decay}"
    if t.schedule == "step":
        opt += f", x{t.gamma} at {','.join(t.milestones)}"
    if t.warmup != "0it":
        opt += f", warm-up {t.warmup}"
    if c.kind == "sparsify":
        sp = c.sparsify
        rounds = f" ({sp.prune_rounds} rounds)" if sp.sparsity_schedule == "iterative" else ""
        what = (f"sparsify to {sp.target} sparsity by {p.granularity}, {p.scope}, "
                f"{sp.sparsity_schedule}{rounds} from {sp.prune_start} to "
                f"{sp.prune_end or t.train} every {sp.prune_every}{excluded}" +
                (f", lth rewinding to {c.rewind}" if sp.lth else "") +
                (f", reset_end to {c.rewind}" if sp.reset_end else ""))
    else:
        what = ((f"one-shot to densities {','.join(map(str, c.one_shot))}" if c.one_shot else
                 f"one-shot threshold mask, alpha {p.threshold}" if p.threshold is not None
                 else f"{c.levels} level{'s' if c.levels != 1 else ''}") +
                f", {p.scope} pruning at {rates}"
                f"{'' if p.granularity == 'weight' else ' of ' + p.granularity + 's'}"
                f"{excluded}, rewind to {c.rewind}")
    return "\n".join([
        f"model {c.model.model} ({c.model.init}) on {c.data.dataset}",
        what,
        f"train {t.train} per level, batch {t.batch_size}, {opt}, eval every {t.eval_every}",
        f"seeds {','.join(map(str, c.seeds))}" +
        ("" if c.kind == "sparsify" else f"; controls {','.join(c.controls) or 'none'}") +
        f"; device {device}, {threads} thread{'s' if threads != 1 else ''}",
        *([f"units train {how}"] if (how := _units_trained(store)) else []),
        f"run directory {store.root}",
    ])


def _units_trained(store: RunStore) -> str | None:
    """What config.json says about how a level's units train (together, or one by one)."""
    try:
        return store.config().get("units_trained")
    except TicketlabError:
        return None


def estimate_eta(remaining: float, done: float, seconds: float) -> float | None:
    """Seconds left for `remaining` iterations at the measured rate (`done` in `seconds`).

    None until something was measured. Iterations count per unit: a group of g units trained
    together for n steps did g * n, so groups and single units share one rate.
    """
    if done <= 0 or seconds <= 0:
        return None
    return max(0.0, remaining) * seconds / done


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA -:--:--"
    s = round(seconds)
    return f"ETA {s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class RichReporter:
    """Progress bar per unit or group (level, variant, iteration, ETA, validation accuracy)
    and for the run; ETAs from the measured step rate (units reused from disk excluded)."""

    def __init__(self, runtime: Runtime, clock: Callable[[], float] = time.monotonic):
        self.runtime = runtime
        self.clock = clock
        self.quiet = bool(runtime.quiet)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"), TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"), TextColumn("{task.fields[val]}"),
            console=err, disable=self.quiet, transient=True)
        self.task: Any = None  # the unit or group training now
        self.units_left = 0  # units of the run not ended yet, the training ones included
        self.measured = (0, 0.0)  # unit-iterations trained, seconds: finished tasks only
        self.per_unit = 0  # iterations one unit trains (its start to the budget's end)

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_run(self, config: ExperimentConfig, store: RunStore, device: object) -> None:
        if self.quiet:
            return
        self.progress.console.print(describe(config, store, device), highlight=False,
                                    soft_wrap=True)
        units = len(config.seeds) * (1 if config.kind == "sparsify" else
                                     1 + config.n_levels * (1 + len(config.controls)))
        self.units_left = units
        self.run_task = self.progress.add_task("all units", total=units, unit="units", val="",
                                               eta=format_eta(None))

    def start_units(self, units: list[Unit], start: int, end: int):
        if self.quiet:
            return None
        u = units[0]
        desc = (f"level {u.level} {u.variant} seed {u.seed}" if len(units) == 1 else
                f"level {u.level}: {len(units)} units together")
        task = self.progress.add_task(desc, total=end - start, unit="it", val="",
                                      eta=format_eta(None))
        self._end_task()
        self.task, self.per_unit, began = task, end - start, self.clock()
        n = len(units)

        def update(step: int, val_acc: float | None) -> None:
            val = f"val acc {100 * val_acc:.2f}%" if val_acc is not None else ""
            seconds, done = self.clock() - began, step - start
            self.task_measured = (n * done, seconds)
            unit_eta = estimate_eta(end - step, done, seconds)
            self.progress.update(task, completed=done, val=val, eta=format_eta(unit_eta))
            trained, spent = self.measured
            later = (self.units_left - n) * self.per_unit  # units not started yet
            run_eta = estimate_eta(n * (end - step) + later, trained + n * done, spent + seconds)
            self.progress.update(self.run_task, eta=format_eta(run_eta))
        self.task_measured = (0, 0.0)
        return update

    def wait_units(self, units: list[Unit]) -> None:
        """Another process trains these units of the run: this one waits for them."""
        if self.quiet:
            return
        names = ", ".join(f"{u.variant} seed {u.seed}" for u in units)
        self.progress.console.print(
            f"level {units[0].level}: waiting for {names}, which another process is training",
            highlight=False, soft_wrap=True)

    def recomputing(self, unit: Unit, reason: str) -> None:
        """Always said, even with --quiet: files were deleted."""
        self.progress.console.print(f"recomputing {unit.relpath()}: {reason}", highlight=False,
                                    markup=False, soft_wrap=True)

    def _end_task(self) -> None:
        """Closes the training task: its bar goes, its measured rate joins the run's."""
        if self.task is None:
            return
        self.progress.remove_task(self.task)
        trained, spent = self.measured
        done, seconds = self.task_measured
        self.measured = (trained + done, spent + seconds)
        self.task = None

    def end_unit(self, unit: Unit, record: dict[str, Any], reused: bool) -> None:
        if self.quiet:
            return
        self._end_task()  # training ended (the budget's end, or all diverged) before this
        self.units_left -= 1
        self.progress.advance(self.run_task)
        done = "done before" if reused else "done"
        if record.get("diverged") and record.get("early_stop_iteration") is None:
            result = f"diverged at {record['diverged_iteration']} it"
        else:
            result = (f"early stop at {record['early_stop_iteration']} it, test acc "
                      f"{100 * record['early_stop_test_accuracy']:.2f}%")
            if record.get("diverged"):
                result += f", diverged at {record['diverged_iteration']} it"
        self.progress.console.print(
            f"level {unit.level} {unit.variant} seed {unit.seed}: "
            f"{100 * record['density']:.1f}% remaining, {result} ({done})", highlight=False,
            soft_wrap=True)


def cmd_find(args: argparse.Namespace) -> int:
    from ticketlab.experiments.imp import run_imp
    from ticketlab.report import levels_table

    config, runtime = resolve(args)
    runtime.threads = apply_threads(runtime.threads)
    runtime.command = shlex.join(["ticketlab", *args.argv])
    with interrupt.graceful(), RichReporter(runtime) as reporter:
        try:
            summary = run_imp(config, runtime, reporter)
        except interrupt.Interrupted as e:
            err.print(f"interrupted at step {e.step}; progress is saved: run the same command "
                      "again to resume", highlight=False)
            return 130
    out.print(levels_table(summary, title=summary["run"]))
    out.print(f"results: {runtime.out / config.run_name()}", highlight=False, soft_wrap=True)
    return 0


def cmd_sparsify(args: argparse.Namespace) -> int:
    from ticketlab.experiments.sparsify import run_sparsify
    from ticketlab.report.sparsify import sparsify_table

    config, runtime = resolve(args)
    if config.sparsify.target is None:
        raise TicketlabError("sparsify needs a target sparsity: add --target 0.9 (the fraction "
                             "of prunable weights removed)")
    runtime.threads = apply_threads(runtime.threads)
    runtime.command = shlex.join(["ticketlab", *args.argv])
    with interrupt.graceful(), RichReporter(runtime) as reporter:
        try:
            summary = run_sparsify(config, runtime, reporter)
        except interrupt.Interrupted as e:
            err.print(f"interrupted at step {e.step}; progress is saved: run the same command "
                      "again to resume", highlight=False)
            return 130
    out.print(sparsify_table(summary, title=summary["run"]))
    out.print(f"results: {runtime.out / config.run_name()}", highlight=False, soft_wrap=True)
    return 0


def cmd_criteria(args: argparse.Namespace) -> int:
    import dataclasses

    from ticketlab.experiments.imp import run_imp
    from ticketlab.experiments.supermasks import scan_supermasks
    from ticketlab.report.build import write_report

    config, runtime = resolve(args)
    runtime.threads = apply_threads(runtime.threads)
    runtime.command = shlex.join(["ticketlab", *args.argv])
    if not config.one_shot:
        raise TicketlabError("criteria are compared one-shot: give densities, e.g. "
                             "--one-shot 0.5,0.2,0.1,0.05,0.02")
    criteria = args.criteria_list or ZHOU_CRITERIA
    configs = [dataclasses.replace(config, pruning=dataclasses.replace(config.pruning,
                                                                       criterion=c))
               for c in criteria]
    for c in configs:
        c.validate()  # every name checked before anything trains
    runs = []
    with interrupt.graceful(), RichReporter(runtime) as reporter:
        try:
            for c in configs:
                runs.append(runtime.out / run_imp(c, runtime, reporter)["run"])
        except interrupt.Interrupted as e:
            err.print(f"interrupted at step {e.step}; progress is saved: run the same command "
                      "again to resume", highlight=False)
            return 130
    store = RunStore.open(runs[0])
    records = scan_supermasks(store, config.one_shot, tuple(criteria), data_dir=runtime.data_dir,
                              device=runtime.device)
    paths = write_report(runs, args.report, supermasks=records)
    out.print(f"report: {paths[-1]}", highlight=False, soft_wrap=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ticketlab.report import levels_table
    from ticketlab.report.build import build_report
    from ticketlab.report.runs import load_runs

    if len(args.run_dirs) > 1 and args.out is None:
        raise TicketlabError("several runs make one combined report: say where it goes with "
                             "--out DIR")
    sparsify = [d for d in args.run_dirs if (Path(d) / "config.json").is_file() and
                "sparsify" in RunStore.open(Path(d)).config().get("science", {})]
    if sparsify:
        return _report_sparsify(args, sparsify)
    runs = load_runs(args.run_dirs)  # fails on a bad directory before anything is written
    if not args.quiet:
        for run in runs:
            out.print(levels_table({"records": run.records}, title=run.name))
    paths = build_report(runs, args.out or args.run_dirs[0] / "report",
                         list(args.levels) if args.levels else None)
    out.print(f"report: {paths[-1]}", highlight=False, soft_wrap=True)
    return 0


def _report_sparsify(args: argparse.Namespace, run_dirs: list[Path]) -> int:
    from ticketlab.report.sparsify import sparsify_table, write_sparsify_report

    if len(args.run_dirs) > 1:
        raise TicketlabError(f"{run_dirs[0]} is a sparsify run: report it on its own "
                             "(ticketlab report RUN)")
    store = RunStore.open(run_dirs[0])
    if not args.quiet:
        out.print(sparsify_table(store.summary(), title=store.root.name))
    paths = write_sparsify_report(store.root, args.out or store.root / "report")
    out.print(f"report: {paths[0]}", highlight=False, soft_wrap=True)
    return 0


def _setting(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return str(value)


def cmd_presets(args: argparse.Namespace) -> int:
    for preset in PRESETS.values():
        out.print(f"[bold]{preset.name}[/bold]  {preset.text}", soft_wrap=True)
        settings = "  ".join(f"--{k.replace('_', '-')} {_setting(v)}"
                             for k, v in preset.settings.items())
        out.print(f"    {settings}", highlight=False, markup=False, soft_wrap=True)
    return 0


def _mask_path(path: Path) -> Path:
    """A mask file, or a unit directory of a run (seed_<s>/level_<LL>/<variant>) holding one."""
    return path / "mask.safetensors" if path.is_dir() else path


def cmd_masks_compare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ticketlab.pruning import Mask, jaccard

    a, b = (Mask.load(_mask_path(p)) for p in (args.a, args.b))
    overlap = jaccard(a, b)
    da, db = a.density_by_tensor(), b.density_by_tensor()
    da["all"], db["all"] = a.density(), b.density()
    table = Table(title=f"{args.a}  vs  {args.b}", caption="Jaccard = kept in both / kept in "
                  "either; random: what two independent random masks of these densities give")
    for column in ("tensor", "density A (%)", "density B (%)", "Jaccard", "random"):
        table.add_column(column, justify="left" if column == "tensor" else "right")
    for name, j in overlap.items():
        x, y = da[name], db[name]
        chance = x * y / (x + y - x * y) if x + y > 0 else 1.0
        table.add_row(name, f"{100 * x:.2f}", f"{100 * y:.2f}", f"{j:.4f}", f"{chance:.4f}")
    out.print(table)
    return 0


def cmd_supermask(args: argparse.Namespace) -> int:
    import csv
    import io

    from rich.table import Table

    from ticketlab.experiments.supermasks import DEFAULT_CRITERIA, scan_supermasks
    from ticketlab.io import atomic_write_text, write_json
    from ticketlab.report.plots import save_figure, supermask_figure

    store = RunStore.open(args.run_dir)
    with err.status("scoring masks on the test set") if not args.quiet else nullcontext():
        records = scan_supermasks(store, args.densities,
                                  DEFAULT_CRITERIA if args.criteria is None else args.criteria,
                                  seed=args.seed, action=args.action, alpha=args.alpha,
                                  learn=args.learn, learn_lr=args.learn_lr,
                                  data_dir=args.data_dir, device=args.device)
    stem = args.run_dir / "supermask" / f"seed_{records[0]['seed']}_{args.action}"
    write_json(stem.with_suffix(".json"), records)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(stem.with_suffix(".csv"), buf.getvalue())
    save_figure(supermask_figure(records), stem)
    densities = list(dict.fromkeys(r["target_density"] for r in records))
    table = Table(title=f"untrained {store.root.name} (seed {records[0]['seed']}, "
                  f"kept weights: {args.action}) under each mask: test accuracy (%)",
                  caption="dense: no mask; threshold: the --alpha mask at the density it "
                  "implies; random_mask: a random mask of the same per-tensor counts; learned: "
                  "the learned supermask thresholded at 0.5 (learned_sampled: mean of samples)")
    table.add_column("criterion")
    for d in densities:
        table.add_column(f"{100 * d:.3g}%", justify="right")
    for name in dict.fromkeys(r["criterion"] for r in records):
        cells = {r["target_density"]: r["test_accuracy"] for r in records
                 if r["criterion"] == name}
        table.add_row(name, *(f"{100 * cells[d]:.2f}" if d in cells else "" for d in densities))
    out.print(table)
    out.print(f"written: {stem}.json, .csv, .png, .svg", highlight=False, soft_wrap=True)
    return 0


SENSITIVITY_HELP = """Per-layer sensitivity (as Distiller and fasterai offer it): cut each
layer of one finished unit of a run ALONE (every other layer as its mask has it) to each
sparsity with a criterion at a granularity, and measure accuracy with no retraining.
Sparsities are fractions of the layer's weights pruned in total; a target at or below what
the ticket already prunes cuts nothing. Measured on the validation split: choosing per-layer
rates from test accuracy is selection on test (--split test is allowed, and labelled).
Writes OUT/sensitivity.json and sensitivity.{png,svg}."""


def add_sensitivity(sub: argparse._SubParsersAction) -> None:
    from ticketlab.experiments.sensitivity import DEFAULT_SPARSITIES, SPLITS
    from ticketlab.pruning import GRANULARITIES, REDUCTIONS

    p = sub.add_parser("sensitivity", help="accuracy with each layer pruned alone, no "
                       "retraining", description=SENSITIVITY_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--level", type=int, default=0, help="which level's unit (0: the trained "
                   "dense network)")
    p.add_argument("--seed", type=int, help="which seed (default: the first)")
    p.add_argument("--variant", default="ticket", help="which variant of the level")
    p.add_argument("--sparsities", type=_fractions, default=DEFAULT_SPARSITIES,
                   metavar="LIST", help="fractions of each layer's weights pruned, in [0, 1)")
    p.add_argument("--granularity", type=str.lower, choices=GRANULARITIES, default="weight",
                   help="what one cut removes: weights, or whole filters/rows, channels/"
                   "columns, kernels")
    p.add_argument("--criterion", default="large_final", help="which weights or groups go "
                   "first: the lowest scores of this criterion (see `find --criterion`)")
    p.add_argument("--reduce", type=str.lower, choices=REDUCTIONS, default="mean",
                   help="a group's score from its weights' (structured granularities)")
    p.add_argument("--split", type=str.lower, choices=SPLITS, default="val",
                   help="where accuracy is measured")
    p.add_argument("--out", type=Path, metavar="DIR", help="where the files go (default "
                   "RUN_DIR/sensitivity/seed_S_level_LL_VARIANT_GRANULARITY_CRITERION_SPLIT)")
    p.add_argument("--data-dir", type=Path, help="folder with the dataset files (default: "
                   "where `find` found them, else $TICKETLAB_DATA or ~/.cache/ticketlab/data)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, "
                   "cuda:N or mps")
    add_setting(p, RUNTIME_FIELDS["threads"])  # the same option as find's
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sensitivity)
    show_defaults(p)


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from ticketlab.experiments.sensitivity import analyze_run, write_result
    from ticketlab.report.sensitivity import sensitivity_table

    store = RunStore.open(args.run_dir)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, disable=args.quiet,
                  transient=True) as progress:
        task = progress.add_task("layers x sparsities", total=None)
        result = analyze_run(
            store, level=args.level, seed=args.seed, variant=args.variant,
            sparsities=args.sparsities, granularity=args.granularity, criterion=args.criterion,
            reduce=args.reduce, split=args.split, data_dir=args.data_dir, device=args.device,
            progress=lambda done, total: progress.update(task, completed=done, total=total))
    asked = result["asked"]  # one folder per question: a second analysis keeps the first
    default = (args.run_dir / "sensitivity" / f"seed_{result['seed']}_level_"
               f"{result['level']:02d}_{result['variant']}_{asked['granularity']}_"
               f"{asked['criterion']}_{asked['split']}")
    paths = write_result(result, args.out or default)
    out.print(sensitivity_table(result))
    out.print(f"written: {', '.join(map(str, paths))}", highlight=False, soft_wrap=True)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ticketlab.models import MODELS
    rows = MODELS.listing()
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        out.print(f"{name:{width}s}  {text}", highlight=False, soft_wrap=True)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from ticketlab.data import describe_datasets
    for line in describe_datasets():
        out.print(line, highlight=False)
    return 0


def build_parser() -> Parser:
    from ticketlab.experiments.supermasks import DEFAULT_CRITERIA

    parser = Parser(prog="ticketlab", description="Find and study lottery tickets.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    add_find(sub)
    add_sparsify(sub)
    add_criteria(sub)
    p = sub.add_parser("report", help="tables, figures and an HTML page of run directories",
                       description=(
                           "Print the levels table of each run and write a report into --out:\n"
                           "accuracy, early-stop and training-curve figures (PNG and SVG),\n"
                           "levels.csv, densities.csv (per-layer density of the ticket masks)\n"
                           "and report.html, one self-contained page for any browser."),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                   help="run directories (several: one overlaid report, labelled by what "
                   "differs between their configurations)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="where the report goes (default RUN_DIR/report; required for several runs)")
    p.add_argument("--levels", type=_ints, metavar="LIST",
                   help="levels of the training-curves figure, e.g. 0,3,7 (default: those nearest "
                   "100, 51.3, 21.1, 7.0 and 3.6%% of weights remaining)")
    p.add_argument("--quiet", action="store_true", help="do not print the levels tables")
    p.set_defaults(func=cmd_report)
    show_defaults(p)
    p = sub.add_parser("masks", help="work with masks: compare", description="Masks saved by "
                       "runs (mask.safetensors in each unit directory) or by Mask.save.")
    masks = p.add_subparsers(dest="masks_command", metavar="ACTION", parser_class=Parser,
                             required=True)
    p = masks.add_parser("compare", help="overlap (Jaccard) of two masks, per layer",
                         description="Overlap of the kept weights of two masks of one model, "
                         "per tensor and overall: across criteria, levels or seeds. A and B "
                         "are mask files or unit directories such as "
                         "runs/<run>/seed_0/level_07/ticket.")
    p.add_argument("a", type=Path, metavar="A")
    p.add_argument("b", type=Path, metavar="B")
    p.set_defaults(func=cmd_masks_compare)
    p = sub.add_parser("supermask", help="score masks on the untrained network (no training)",
                       description="Zhou et al.'s supermasks: cut each criterion's mask from a "
                       "run's trained dense network (level 0) at each density, put it on the "
                       "untrained network and measure test accuracy with no training, with "
                       "and without the same-sign rule, against a random mask of the same "
                       "density. Writes RUN_DIR/supermask/seed_<s>_<action>.{json,csv,png,svg}.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--densities", type=_fractions, default=(0.5, 0.2, 0.1, 0.05, 0.02),
                   metavar="LIST", help="fractions kept (or none)")
    p.add_argument("--criteria", type=_names, metavar="LIST", help="criteria to score, or "
                   f"none (default: {', '.join(DEFAULT_CRITERIA)}); same-sign variants are added")
    p.add_argument("--alpha", type=float, help="also score the course project's threshold "
                   "mask |w| > mean|w| + ALPHA * std(w) and a random mask of its density")
    p.add_argument("--learn", type=int, default=0, metavar="STEPS", help="also learn a "
                   "supermask for STEPS iterations (scores trained, weights frozen at init)")
    p.add_argument("--learn-lr", type=float, default=0.1, help="Adam learning rate of the "
                   "learned supermask's scores")
    p.add_argument("--seed", type=int, help="which seed's dense network (default: the first)")
    p.add_argument("--action", choices=("rewind", "signed_constant"), default="rewind",
                   help="kept weights at their initial values (rewind) or +-std with the "
                   "initial signs")
    p.add_argument("--data-dir", type=Path, help="folder with the dataset files (default: "
                   "where `find` found them, else $TICKETLAB_DATA or ~/.cache/ticketlab/data)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, "
                   "cuda:N or mps")
    add_setting(p, RUNTIME_FIELDS["threads"])  # the same option as find's
    p.add_argument("--quiet", action="store_true", help="no spinner")
    p.set_defaults(func=cmd_supermask)
    show_defaults(p)
    add_sensitivity(sub)
    sub.add_parser("presets", help="list the paper presets and their settings",
                   description="List the presets of `ticketlab find --preset NAME` with every "
                   "setting they fix.").set_defaults(func=cmd_presets)
    sub.add_parser("models", help="list the registered models",
                   description="List the registered models.").set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list the registered datasets",
                   description="List the registered datasets.").set_defaults(func=cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return 130
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if not hasattr(args, "preset"):  # find and criteria apply theirs once resolved
            apply_threads(getattr(args, "threads", None))
        return args.func(args)
    except TicketlabError as e:
        err.print(f"ticketlab: error: {e}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except OSError as e:  # a file-system error no reader turned into a message of its own
        path = e.filename or "a file"
        err.print(f"ticketlab: error: {path}: {e.strerror or e}: check that place (its space "
                  "and permissions) or choose another with --out", highlight=False,
                  markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
