"""The argparse side of the settings: every field of ExperimentConfig and Runtime as an
option (generated from the dataclasses), "(default: X)" in each help, and `resolve`, which
layers defaults, preset, config file and options into the configuration a command runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

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
from ticketlab.presets import preset_settings


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------- value parsers

def _ints(text: str) -> tuple[int, ...]:
    return _option_type(parse_ints)(text)


def _fractions(text: str) -> tuple[float, ...]:
    return _option_type(parse_fractions)(text)


_names = parse_names


SECTION_GROUPS = {"data": "model and data", "model": "model and data", "pruning": "pruning",
                  None: "pruning", "training": "training", "sparsify": "gradual pruning"}
FIND_ONLY = ("levels", "controls", "one_shot", "rates", "rate", "threshold",
             "criterion_examples")  # not sparsify's


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
                                                  "criteria_list", "report", "plan")})
    hints, default = runtime_hints(), Runtime()
    runtime = Runtime(**{k: check_type(k, values.pop(k), hints[k], getattr(default, k))
                         for k in RUNTIME_KEYS if k in values})
    runtime.validate()
    return apply_overrides(ExperimentConfig(), values), runtime


def _setting(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return str(value)
