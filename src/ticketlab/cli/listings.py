"""The commands that list what is registered: `presets`, `models` and `datasets`."""

from __future__ import annotations

import argparse

from ticketlab.cli.display import out
from ticketlab.cli.options import _setting
from ticketlab.presets import PRESETS


def add_presets(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("presets", help="list the paper presets and their settings",
                   description="List the presets of `ticketlab find --preset NAME` with every "
                   "setting they fix.").set_defaults(func=cmd_presets)


def cmd_presets(args: argparse.Namespace) -> int:
    for preset in PRESETS.values():
        out.print(f"[bold]{preset.name}[/bold]  {preset.text}", soft_wrap=True)
        settings = "  ".join(f"--{k.replace('_', '-')} {_setting(v)}"
                             for k, v in preset.settings.items())
        out.print(f"    {settings}", highlight=False, markup=False, soft_wrap=True)
    return 0


def add_models(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("models", help="list the registered models",
                   description="List the registered models.").set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from ticketlab.models import MODELS
    rows = MODELS.listing()
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        out.print(f"{name:{width}s}  {text}", highlight=False, soft_wrap=True)
    return 0


def add_datasets(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("datasets", help="list the registered datasets",
                   description="List the registered datasets.").set_defaults(func=cmd_datasets)


def cmd_datasets(args: argparse.Namespace) -> int:
    from ticketlab.data import describe_datasets
    for line in describe_datasets():
        out.print(line, highlight=False)
    return 0
