"""The commands that study finished runs without training them again: `report`,
`masks compare`, `supermask` and `sensitivity`."""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from ticketlab.cli.display import err, out
from ticketlab.cli.options import (
    Parser,
    _fractions,
    _ints,
    _names,
    add_setting,
    show_defaults,
)
from ticketlab.config import RUNTIME_FIELDS
from ticketlab.errors import TicketlabError
from ticketlab.experiments.store import RunStore


def add_report(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--variants", type=_names, metavar="LIST",
                   help="draw and tabulate only these variants, e.g. ticket or ticket,random "
                   "(the dense level 0 always stays); default: all")
    p.add_argument("--quiet", action="store_true", help="do not print the levels tables")
    p.set_defaults(func=cmd_report)
    show_defaults(p)


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
    runs = load_runs(args.run_dirs, args.variants)  # a bad directory fails before any write
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


def add_masks(sub: argparse._SubParsersAction) -> None:
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


def add_reading_options(p: argparse.ArgumentParser, quiet: str) -> None:
    """The options of a command that reads a run and its data again: where the data are,
    the device, the thread count (the same option as find's) and --quiet."""
    p.add_argument("--data-dir", type=Path, help="folder with the dataset files (default: "
                   "where `find` found them, else $TICKETLAB_DATA or ~/.cache/ticketlab/data)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, "
                   "cuda:N or mps")
    add_setting(p, RUNTIME_FIELDS["threads"])
    p.add_argument("--quiet", action="store_true", help=quiet)


def add_supermask(sub: argparse._SubParsersAction) -> None:
    from ticketlab.experiments.supermasks import DEFAULT_CRITERIA

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
    add_reading_options(p, quiet="no spinner")
    p.set_defaults(func=cmd_supermask)
    show_defaults(p)


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
    add_reading_options(p, quiet="no progress bar")
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


INSTABILITY_HELP = """Instability analysis (Frankle, Dziugaite, Roy & Carbin 2020, "Linear Mode
Connectivity and the Lottery Ticket Hypothesis") of a finished find run. For each seed, level
L and step k: the dense network's weights at step k of the run's level 0 (its rewind snapshot,
or level 0 trained again from its initialisation to k, which reproduces the run's weights),
under level L's mask, are trained twice from k to the end of the budget with two different
data orders; the test error is measured at --points evenly spaced points on the line between
the two copies (batch norm recomputed at each point from training images). Barrier: the
highest error minus the mean of the two ends'; stable when at most 2 points.
Caveat: the paper finds each level's mask by IMP rewound to k; here the mask is the run's own
(found with its --rewind), the same for every k.
Costs two trainings from k to the end per (seed, level, k). Writes RUN_DIR/instability/
(trained copies, result.json per cell, instability.json/.csv, figures); an interrupted
analysis resumes (a trained copy is never trained again)."""


def _steps_list(text: str) -> tuple[str, ...]:
    from ticketlab.experiments.instability import parse_at

    try:
        return tuple(str(s) for s in parse_at(text.split(",")))
    except TicketlabError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_instability(sub: argparse._SubParsersAction) -> None:
    from ticketlab.experiments.instability import POINTS

    p = sub.add_parser("instability", help="linear mode connectivity of two copies trained "
                       "from step k (error barrier)", description=INSTABILITY_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--levels", type=_ints, required=True, metavar="LIST",
                   help="levels to analyse, e.g. 0,3,7 (0: the dense network), each finished "
                   "in the run")
    p.add_argument("--at", type=_steps_list, required=True, metavar="STEPS",
                   help="steps k the copies start from, before the end of training, e.g. "
                   "0,100,500,2000it (a bare count takes the unit of the next item with one)")
    p.add_argument("--seeds", type=_ints, metavar="LIST", help="which seeds (default: every "
                   "seed whose dense network is finished)")
    p.add_argument("--points", type=int, default=POINTS, help="points on the line, both ends "
                   "included")
    add_reading_options(p, quiet="no progress bars")
    p.set_defaults(func=cmd_instability)
    show_defaults(p)


def cmd_instability(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ticketlab.config import Runtime
    from ticketlab.experiments.instability import (
        MATCHING_RULE,
        analysis_dir,
        run_instability,
    )
    from ticketlab.report.plots import pct_label
    from ticketlab.training import interrupt

    store = RunStore.open(args.run_dir)
    runtime = Runtime(device=args.device, data_dir=args.data_dir,  # default: the run's
                      threads=args.threads or store.config().get("threads", "auto"))
    with interrupt.graceful(), Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[acc]}"), console=err,
            disable=args.quiet, transient=True) as progress:

        def start(description: str, first: int, last: int):
            task = progress.add_task(description, total=last - first, acc="")

            def report(step: int, accuracy: float | None) -> None:
                progress.update(task, completed=step - first, acc="" if accuracy is None
                                else f"val {100 * accuracy:.2f}%")
            return report

        try:
            rows = run_instability(args.run_dir, levels=args.levels, at=args.at,
                                   seeds=args.seeds, runtime=runtime, points=args.points,
                                   progress=start)
        except interrupt.Interrupted as e:
            err.print(f"{e}; progress is saved: run the same command again to resume",
                      highlight=False)
            return 130
    table = Table(title=f"instability of {Path(args.run_dir).name}: test error barrier between "
                  "two copies trained from step k", caption=f"stable: barrier <= 2 points; "
                  f"{MATCHING_RULE}")
    for column in ("seed", "level", "weights (%)", "k (it)", "barrier (pts)", "stable",
                   "test acc (%)", "matches"):
        table.add_column(column, justify="right")
    for r in rows:
        acc = r["test_accuracy"]
        table.add_row(str(r["seed"]), str(r["level"]), pct_label(100 * r["density"]),
                      str(r["k"]), f"{100 * r['barrier']:.2f}", "yes" if r["stable"] else "no",
                      "" if acc is None else f"{100 * acc:.2f}",
                      {True: "yes", False: "no", None: "-"}[r["matches"]])
    out.print(table)
    if any(r.get("retrain_reproduces_run") is False for r in rows):
        err.print("note: level 0 trained again did not reproduce the run's rewind snapshot "
                  "bit-exactly (another device or --threads than the run's); W_k may differ "
                  "in its last bits", highlight=False)
    out.print(f"written: {analysis_dir(store)}", highlight=False,
              soft_wrap=True)
    return 0
