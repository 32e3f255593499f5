"""`ticketlab sweep SWEEP.toml`: a grid over settings run as one plan of many runs, then one
report overlaying them (the file format: `experiments.sweep`)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ticketlab.cli.display import RichReporter, err, out
from ticketlab.cli.options import RUNTIME_KEYS, add_setting, resolve, show_defaults
from ticketlab.config import RUNTIME_FIELDS, ExperimentConfig, Runtime
from ticketlab.threads import apply_threads
from ticketlab.training import interrupt

SWEEP_HELP = """Run a grid over settings (rewind points, rates, criteria, scopes, granularity,
presets) as one plan of many runs, executed by --executor, then write one report overlaying
them into --report (its legend names what differs between the runs).

SWEEP is a TOML file. Its top-level keys are base settings, exactly as in a `find --config`
file (keys named like the options, with underscores), plus an optional preset. A [grid]
table gives each setting it varies a list of values: the runs are the cartesian product, in
the order written (the first key varies slowest). Optional [[runs]] tables add explicit
overrides a grid cannot express (layer-wise vs global, where the rates differ too); grid
and [[runs]] combine as a product. Example (4 runs: rewind 0it and 500it, each layer-wise
and global):

    preset = "lenet_mnist"
    train = "5000it"
    levels = 6
    seeds = [0, 1]
    controls = ["random"]

    [grid]
    rewind = ["0it", "500it"]

    [[runs]]
    scope = "layerwise"

    [[runs]]
    scope = "global"
    rate = 0.2

Running options (--out, --device, --threads, --executor...) are given here, never in the
file. Every run is checked before any trains: an unknown key, a grid value that is not a
list, or two points naming the same run (seeds, levels and controls do not name a run:
set them above [grid]) stop the sweep with one line. Runs sharing their dense training
(a grid over pruning settings only) train level 0 once. Each run goes to its own
OUT/imp_<model>_<dataset>_<hash>/, as with `find`; the same command resumes an interrupted
sweep and reports a finished one without training. See examples/ and docs/sweeps.md."""


def add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="a grid over settings: many runs, one overlaid report",
                       description=SWEEP_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", type=Path, metavar="SWEEP",
                   help="the sweep's TOML file (format above)")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="where the overlaid report goes (default: OUT/sweep_<file stem>)")
    p.add_argument("--plan", action="store_true",
                   help="print the runs and their units without training")
    running = p.add_argument_group("running")
    for flat in RUNTIME_FIELDS.values():
        add_setting(running, flat)
    show_defaults(p, {k: getattr(Runtime(), k) for k in RUNTIME_KEYS})
    p.set_defaults(func=cmd_sweep)


def sweep_runtime(args: argparse.Namespace) -> Runtime:
    """The running options given, checked as `find` checks them."""
    given = {k: getattr(args, k) for k in RUNTIME_KEYS if getattr(args, k, None) is not None}
    _, runtime = resolve(argparse.Namespace(preset=None, config=None, **given))
    runtime.threads = apply_threads(runtime.threads)
    runtime.command = shlex.join(["ticketlab", *args.argv])
    return runtime


def cmd_sweep(args: argparse.Namespace) -> int:
    from ticketlab.experiments.imp import run_many
    from ticketlab.experiments.sweep import read_sweep
    from ticketlab.report import levels_table
    from ticketlab.report.build import write_report

    sweep = read_sweep(args.sweep)  # every run checked before anything trains
    runtime = sweep_runtime(args)
    labels = sweep.labels()
    if args.plan:
        print_plan(sweep.configs, runtime, labels)
        return 0
    for i, (label, config) in enumerate(zip(labels, sweep.configs), 1):
        out.print(f"run {i}/{len(labels)}: {label}", highlight=False, soft_wrap=True)
        if label != config.run_name():
            out.print(f"  {runtime.out / config.run_name()}", highlight=False, soft_wrap=True)
    with interrupt.graceful(), RichReporter(runtime) as reporter:
        try:
            summaries = run_many(sweep.configs, runtime, reporter)
        except interrupt.Interrupted as e:
            err.print(f"{e}; progress is saved: run the same command again to resume",
                      highlight=False)
            return 130
    runs = [runtime.out / s["run"] for s in summaries]
    for label, summary, run in zip(labels, summaries, runs):
        out.print(levels_table(summary, title=f"{label}\n{run}"))
    report = args.report or runtime.out / f"sweep_{args.sweep.stem}"
    paths = write_report(runs, report)
    out.print(f"report: {paths[-1]}", highlight=False, soft_wrap=True)
    return 0


def print_plan(configs: list[ExperimentConfig], runtime: Runtime, labels: list[str]) -> None:
    """Each run's label and directory, then the plan of all of them (`cli.experiments`)."""
    from ticketlab.cli.experiments import print_plan as plan_of

    for i, (label, config) in enumerate(zip(labels, configs), 1):
        out.print(f"run {i}/{len(configs)}: {label}  {runtime.out / config.run_name()}",
                  highlight=False, soft_wrap=True)
    plan_of(configs, runtime)
