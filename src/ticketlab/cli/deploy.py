"""The commands that deploy tickets: `export` (a smaller, faster model, verified) and `bench`
(its latency beside the dense network's, measured in one process)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ticketlab.cli.analysis import add_reading_options
from ticketlab.cli.display import err, out
from ticketlab.cli.options import _ints, _names, show_defaults
from ticketlab.errors import TicketlabError

EXPORT_HELP = """\
Turn a finished unit of a run into a model that is smaller on disk and faster:

  sparse   any ticket: Linear layers multiply only their kept weights (CSR where the rule in
           docs/deploy.md says it is faster, dense elsewhere); the file stores only the kept
           values and their positions
  compact  a structured ticket (find --granularity filter/row, or sparsify): whole filters
           and neurons removed, smaller dense layers (needs ticketlab[deploy])
  onnx     the compact model as ONNX, checked with onnxruntime (needs ticketlab[deploy])

The export is verified against the masked model on validation images before it is written;
sparse and compact files get a TorchScript twin (same name, .pt) that loads with torch alone:
torch.jit.load("ticket.pt")."""


def _add_unit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--level", type=int, help="which level (default: the seed's last, the "
                   "sparsest)")
    p.add_argument("--seed", type=int, help="which seed (default: the first)")
    p.add_argument("--variant", help="which variant of the level (default: ticket, or a "
                   "sparsify run's own)")
    p.add_argument("--round-to", type=int, default=1, metavar="K", help="compact and onnx: "
                   "round each layer's channel count up to a multiple of K (e.g. 8)")


def add_export(sub: argparse._SubParsersAction) -> None:
    from ticketlab.deploy.export import FORMATS

    p = sub.add_parser("export", help="a ticket as a smaller, faster model (sparse, compact, "
                       "onnx)", description=EXPORT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--format", type=str.lower, choices=FORMATS, default="sparse",
                   help="what the export is (see above)")
    p.add_argument("--out", type=Path, metavar="FILE", help="where it goes (default "
                   "RUN_DIR/export/seed_S_level_LL_VARIANT.{safetensors,onnx})")
    _add_unit_options(p)
    p.add_argument("--no-torchscript", action="store_true", help="do not write the "
                   "TorchScript twin")
    add_reading_options(p, quiet="print only the written files")
    p.set_defaults(func=cmd_export, device="cpu")
    show_defaults(p)


def cmd_export(args: argparse.Namespace) -> int:
    from ticketlab.deploy.artifact import save_export
    from ticketlab.experiments.export import export_ticket, load_ticket
    from ticketlab.report.export import export_table

    if args.round_to < 1:
        raise TicketlabError(f"--round-to must be a whole number >= 1, got {args.round_to}")
    t = load_ticket(args.run_dir, level=args.level, seed=args.seed, variant=args.variant,
                    data_dir=args.data_dir, device=args.device)
    exported, inputs = export_ticket(t, args.format, round_to=args.round_to)
    suffix = ".onnx" if args.format == "onnx" else ".safetensors"
    default = (Path(args.run_dir) / "export" / f"{t.unit.relpath().replace('/', '_')}_"
               f"{args.format}{suffix}")
    written = save_export(exported, args.out or default, inputs,
                          script=not args.no_torchscript)
    if not args.quiet:
        out.print(export_table(exported, written, title=f"{t.unit.relpath()} as {args.format}"))
    for path, size in written["files"].items():
        out.print(f"written: {path} ({size:,} bytes; dense checkpoint {written['dense_bytes']:,})",
                  highlight=False, soft_wrap=True)
    return 0


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency of a ticket's exports beside the dense network's",
                       description="Measure, in one process, the forward latency (median and "
                       "p90 over many repeats after warm-up), throughput, peak memory and "
                       "speed-up over the dense network of the same architecture, at each "
                       "batch size. TARGET is a run directory (its ticket is exported in "
                       "memory in each format) or an export file (.safetensors) made by "
                       "ticketlab export.")
    p.add_argument("target", type=Path, metavar="RUN_DIR_OR_EXPORT")
    p.add_argument("--formats", type=_names, metavar="LIST", help="run directory: which "
                   "exports to measure (default: sparse, and compact and onnx when the ticket "
                   "is structured and ticketlab[deploy] is installed)")
    p.add_argument("--batch-sizes", type=_ints, default=(1, 64, 256), metavar="LIST",
                   help="batch sizes")
    p.add_argument("--min-seconds", type=float, default=1.0, help="time each model at least "
                   "this long at each batch size")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    _add_unit_options(p)
    add_reading_options(p, quiet="no progress bar")
    p.set_defaults(func=cmd_bench, device="cpu")
    show_defaults(p)


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ticketlab.deploy.bench import measure
    from ticketlab.deploy.export import check_format
    from ticketlab.experiments.export import bench_candidates, load_artifact, load_ticket
    from ticketlab.io import write_json
    from ticketlab.report.deploy import bench_table

    if any(b < 1 for b in args.batch_sizes) or not args.batch_sizes:
        raise TicketlabError("batch sizes must be whole numbers >= 1, e.g. --batch-sizes 1,64")
    if not args.min_seconds > 0:
        raise TicketlabError(f"--min-seconds must be > 0, got {args.min_seconds}")
    for fmt in args.formats or ():
        check_format(fmt)
    target = Path(args.target)
    if target.is_file() and target.suffix in (".onnx", ".pt"):
        raise TicketlabError(f"{target} does not say its architecture, so there is no dense "
                             "network to compare it with: bench the run it came from "
                             "(ticketlab bench RUN_DIR --formats onnx) or its .safetensors")
    if target.is_file():
        dense, module, shape = load_artifact(target)
        models = {"dense": dense, target.name: module}
        title = str(target)
    else:
        if not target.is_dir():
            raise TicketlabError(f"{target} is neither a run directory nor an export file: "
                                 "check the path")
        t = load_ticket(target, level=args.level, seed=args.seed, variant=args.variant,
                        data_dir=args.data_dir, device=args.device)
        models = bench_candidates(t, tuple(args.formats) if args.formats else None,
                                  round_to=args.round_to,
                                  note=None if args.quiet else lambda m: err.print(
                                      m, highlight=False, soft_wrap=True))
        shape = tuple(t.data.input_shape)
        title = (f"{t.unit.relpath()} of {target.name}: {t.mask.density():.2%} of weights "
                 "remaining")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err, disable=args.quiet, transient=True) as progress:
        task = progress.add_task("batch sizes x models", total=None)
        rows = measure(models, shape, tuple(args.batch_sizes), baseline="dense",
                       min_seconds=args.min_seconds, device=args.device,
                       progress=lambda done, total: progress.update(task, completed=done,
                                                                   total=total))
    out.print(bench_table(rows, title=title))
    if args.json:
        write_json(args.json, {"target": str(target), "rows": rows})
        out.print(f"written: {args.json}", highlight=False, soft_wrap=True)
    return 0
