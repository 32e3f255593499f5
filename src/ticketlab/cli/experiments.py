"""The commands that train: `find` (lottery tickets by IMP or one-shot pruning),
`sparsify` (gradual pruning inside one run) and `criteria` (mask criteria compared)."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ticketlab.cli.display import RichReporter, err, out
from ticketlab.cli.options import FIND_ONLY, _names, add_experiment_arguments, resolve
from ticketlab.errors import TicketlabError
from ticketlab.experiments.store import RunStore
from ticketlab.threads import apply_threads
from ticketlab.training import interrupt

T = TypeVar("T")

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
write one report overlaying all criteria into --report. Takes every option of `find`.
Pruning at initialisation (snip, grasp, synflow; magnitude_init is large_init) cuts from the
network at the rewind point instead: --criteria snip,grasp,synflow,large_init,random
--scope global compares them as Frankle et al. (2021) do."""


def add_find(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("find", help="find tickets: iterative or one-shot pruning, controls",
                       description=FIND_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_experiment_arguments(p)
    p.add_argument("--plan", action="store_true",
                   help="print the plan (units per level: done, borrowed from a run with the "
                   "same dense training, resumable, to do; the executor and the estimated "
                   "time) and exit without training or writing anything")
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
                   f"{','.join(ZHOU_CRITERIA)}; any of `find --criterion`, including snip, "
                   "grasp and synflow)")
    g.add_argument("--report", type=Path, metavar="DIR", required=True,
                   help="where the overlaid report goes")
    p.set_defaults(func=cmd_criteria)


ZHOU_CRITERIA = ("large_final", "small_final", "large_init", "small_init",
                 "large_init_large_final", "small_init_small_final", "magnitude_increase",
                 "movement", "random")


def cmd_find(args: argparse.Namespace) -> int:
    from ticketlab.experiments.imp import rewind_sweep, run_imp
    from ticketlab.report import levels_table

    rewinds = _rewind_list(args)
    if rewinds:
        config, runtime = resolve(args)
        configs = rewind_sweep(config, rewinds)
        if args.plan:
            print_plan(configs, runtime)
            return 0
        return _run_rewinds(args, configs, runtime)
    if args.plan:
        config, runtime = resolve(args)
        print_plan([config], runtime)
        return 0
    return _run(args, run_imp, levels_table)


def _rewind_list(args: argparse.Namespace) -> list[str]:
    """`--rewind 0,100,500it`: the rewind points of a list (a single point: []); the option
    is then cleared, so the preset's or config file's other settings still apply."""
    text = getattr(args, "rewind", None)
    if not isinstance(text, str) or "," not in text:
        return []
    args.rewind = None
    return [t for t in (part.strip() for part in text.split(",")) if t]


def _run_rewinds(args: argparse.Namespace, configs: list[Any], runtime: Any) -> int:
    """One IMP chain per rewind point, one plan (the dense training shared), one table each;
    then the command that overlays them in a report."""
    from ticketlab.experiments.imp import run_many
    from ticketlab.report import levels_table

    summaries = _execute(args, runtime, lambda reporter: run_many(configs, runtime, reporter))
    if summaries is None:
        return 130
    dirs = [runtime.out / s["run"] for s in summaries]
    for config, summary in zip(configs, summaries):
        out.print(levels_table(summary, title=f"{summary['run']} (rewind {config.rewind})"))
    out.print("results: " + " ".join(map(str, dirs)), highlight=False, soft_wrap=True)
    out.print("overlay them (accuracy per rewind point, and against the rewind iteration): "
              + shlex.join(["ticketlab", "report", *map(str, dirs), "--out", "REPORT_DIR"]),
              highlight=False, soft_wrap=True)
    return 0


def print_plan(configs: list[Any], runtime: Any) -> None:
    """`--plan`: what is done, what is left and how long it should take, read from the run
    directories; nothing is trained or written. The time comes from the units each run timed,
    per level (`experiments.plan.job_seconds`), else from probes of a few training steps."""
    from ticketlab.executors import choose_executor
    from ticketlab.experiments.imp import open_run
    from ticketlab.experiments.plan import job_seconds, make_plan, makespan, measured_rates
    from ticketlab.report.plan import _hms, plan_table
    from ticketlab.threads import using_threads

    for config in configs:
        config.validate()
    runtime.validate()
    with using_threads(runtime.threads) as threads:
        contexts = [open_run(c, runtime, threads, driver=False) for c in configs]
        plan = make_plan(contexts)
        choice = choose_executor(plan, runtime, threads)
        measured = all(measured_rates(ctx) for ctx in contexts)
        seconds = job_seconds(plan, probe=True)
    out.print(plan_table(plan, seconds))
    for ctx in contexts:
        out.print(f"{ctx.store.root}: units train {choice.describe(ctx)}", highlight=False,
                  soft_wrap=True)
    if choice.why:
        out.print(f"executor {choice.name} (auto: {choice.why})", highlight=False)
    if seconds is not None and plan.jobs:
        how = ("the rates measured in the run (a probe's, scaled, for levels not timed yet)"
               if measured else "a probe of a few steps")
        wall = makespan(plan, seconds, choice.workers or 1)
        out.print(f"estimated wall time {_hms(wall)} on {choice.workers or 1} worker"
                  f"{'s' if (choice.workers or 1) != 1 else ''} ({_hms(sum(seconds.values()))} "
                  f"of training, from {how})", highlight=False)


def cmd_sparsify(args: argparse.Namespace) -> int:
    from ticketlab.experiments.sparsify import run_sparsify
    from ticketlab.report.sparsify import sparsify_table

    return _run(args, run_sparsify, sparsify_table, needs_target=True)


def _execute(args: argparse.Namespace, runtime: Any, work: Callable[[RichReporter], T]
             ) -> T | None:
    """Runs `work` with a progress display; after an interrupt (progress saved, as the message
    says) returns None, and the command exits 130."""
    runtime.threads = apply_threads(runtime.threads)
    runtime.command = shlex.join(["ticketlab", *args.argv])
    with interrupt.graceful(), RichReporter(runtime) as reporter:
        try:
            return work(reporter)
        except interrupt.Interrupted as e:
            err.print(f"{e}; progress is saved: run the same command again to resume",
                      highlight=False)
            return None


def _run(args: argparse.Namespace, engine: Callable[..., dict[str, Any]],
         table: Callable[..., Any], needs_target: bool = False) -> int:
    """Resolves the settings, runs `engine` with a progress display, prints its `table`;
    an interrupt saves progress and exits 130."""
    config, runtime = resolve(args)
    if needs_target and config.sparsify.target is None:
        raise TicketlabError("sparsify needs a target sparsity: add --target 0.9 (the fraction "
                             "of prunable weights removed)")
    summary = _execute(args, runtime, lambda reporter: engine(config, runtime, reporter))
    if summary is None:
        return 130
    out.print(table(summary, title=summary["run"]))
    out.print(f"results: {runtime.out / config.run_name()}", highlight=False, soft_wrap=True)
    return 0


def cmd_criteria(args: argparse.Namespace) -> int:
    import dataclasses

    from ticketlab.experiments.imp import run_many
    from ticketlab.experiments.supermasks import scan_supermasks
    from ticketlab.report.build import write_report

    config, runtime = resolve(args)
    if not config.one_shot:
        raise TicketlabError("criteria are compared one-shot: give densities, e.g. "
                             "--one-shot 0.5,0.2,0.1,0.05,0.02")
    from ticketlab.pruning.criteria import canonical_criterion

    criteria = tuple(dict.fromkeys(canonical_criterion(c)  # one run per mask, each once
                                   for c in args.criteria_list or ZHOU_CRITERIA))
    configs = [dataclasses.replace(config, pruning=dataclasses.replace(config.pruning,
                                                                       criterion=c))
               for c in criteria]
    for c in configs:
        c.validate()  # every name checked before anything trains
    # one plan: the criteria's runs share the dense training and the workers
    summaries = _execute(args, runtime, lambda reporter: run_many(configs, runtime, reporter))
    if summaries is None:
        return 130
    runs = [runtime.out / s["run"] for s in summaries]
    store = RunStore.open(runs[0])
    records = scan_supermasks(store, config.one_shot, tuple(criteria), data_dir=runtime.data_dir,
                              device=runtime.device)
    paths = write_report(runs, args.report, supermasks=records)
    out.print(f"report: {paths[-1]}", highlight=False, soft_wrap=True)
    return 0
