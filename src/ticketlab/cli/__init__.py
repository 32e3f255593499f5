"""`ticketlab`: a thin shell over the engine the Python API uses.

Bad input exits with code 2 and one line on stderr naming the problem and the fix.

Each command's options sit next to what it does: `experiments` (find, sparsify, criteria,
and the plan `find --plan` prints), `sweep` (a grid of runs as one plan), `analysis`
(report, masks compare, supermask, sensitivity, instability), `deploy` (export, bench), `listings`
(presets, models, datasets); `options` turns the settings into options, `display` shows
progress.
"""

from __future__ import annotations

import sys

from ticketlab.cli.analysis import (
    add_instability,
    add_masks,
    add_report,
    add_sensitivity,
    add_supermask,
)
from ticketlab.cli.deploy import add_bench, add_export
from ticketlab.cli.display import RichReporter, err, estimate_eta, format_eta
from ticketlab.cli.experiments import add_criteria, add_find, add_sparsify
from ticketlab.cli.listings import add_datasets, add_models, add_presets
from ticketlab.cli.options import (
    FIND_ONLY,
    RUNTIME_KEYS,
    Parser,
    _setting,
    experiment_defaults,
    resolve,
)
from ticketlab.cli.sweep import add_sweep
from ticketlab.errors import TicketlabError
from ticketlab.threads import apply_threads

__all__ = ["FIND_ONLY", "RUNTIME_KEYS", "RichReporter", "_setting", "build_parser",
           "estimate_eta", "experiment_defaults", "format_eta", "main", "resolve"]


def build_parser() -> Parser:
    parser = Parser(prog="ticketlab", description="Find and study lottery tickets.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    add_find(sub)
    add_sparsify(sub)
    add_criteria(sub)
    add_sweep(sub)
    add_report(sub)
    add_masks(sub)
    add_supermask(sub)
    add_sensitivity(sub)
    add_instability(sub)
    add_export(sub)
    add_bench(sub)
    add_presets(sub)
    add_models(sub)
    add_datasets(sub)
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
