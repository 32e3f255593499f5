"""Config fields that carry their own help, command-line parser and hash rule.

Every setting is a dataclass field made with `setting(...)`: the CLI's flags, the checks of
TOML values and the run hash are all derived from these fields, so a setting is declared in
one place. Types come from the annotations; `parse` turns a command-line string into the
value (derived from the type when not given); `canonical` gives one spelling per value.

Hash rules (which settings name a run):
- "unless_default" (the rule for every setting added from now on): part of the hash only
  when set to something other than its default, so adding a setting renames no run;
- "always": the settings of the first version, whose run names are pinned
  (tests/test_config.py): dropping them at their defaults would rename every existing run;
- "never": what to compute (seeds, levels, controls), not what the numbers are.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from ticketlab.errors import TicketlabError

HASH_RULES = ("always", "unless_default", "never")


def setting(default: Any = MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
            parse: Callable[[str], Any] | None = None, metavar: str | None = None,
            choices: Callable[[], list[str]] | tuple[str, ...] | None = None,
            canonical: Callable[[Any], Any] | None = None, hash: str = "unless_default",
            flag: str | None = "", action: str | None = None) -> Any:
    """A dataclass field with what the CLI, the checks and the run hash need to know.

    choices: a fixed tuple (the CLI refuses others) or a callable giving the names of a
    registry (shown in --help; validate() refuses others with the registry's message).
    flag: the option's name (default `--<name-with-dashes>`), None for no option.
    action: "store_true" or "optional" (--x/--no-x) for booleans.
    """
    if hash not in HASH_RULES:
        raise ValueError(f"unknown hash rule {hash!r}")
    meta = {"help": help, "parse": parse, "metavar": metavar, "choices": choices,
            "canonical": canonical, "hash": hash, "flag": flag, "action": action}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def meta(f: dataclasses.Field) -> dict[str, Any]:
    """A field's setting metadata (plain fields get the defaults of `setting`)."""
    defaults = {"help": "", "parse": None, "metavar": None, "choices": None,
                "canonical": None, "hash": "unless_default", "flag": "", "action": None}
    return {**defaults, **dict(f.metadata)}


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


# ---------------------------------------------------------------------------- text parsers
# Command-line strings -> values; each raises TicketlabError with an example of the form.

def parse_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise TicketlabError(f"'{text}' is not a list of integers, e.g. 0,1,2") from None


def parse_fractions(text: str) -> tuple[float, ...]:
    if text.strip() in ("", "none"):
        return ()
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise TicketlabError(f"'{text}' is not a list of fractions, e.g. 0.5,0.2,0.1") from None


def parse_names(text: str) -> tuple[str, ...]:
    return () if text.strip() in ("", "none") else tuple(s.strip() for s in text.split(","))


def parse_rate_map(text: str) -> dict[str, float]:
    try:
        pairs = [item.split("=") for item in text.split(",") if item]
        return {k.strip(): float(v) for k, v in pairs}
    except ValueError:
        raise TicketlabError(
            f"'{text}' is not a list of group=rate, e.g. fc=0.2,output=0.1,conv=0.1") from None


def parser_for(hint: Any) -> Callable[[str], Any]:
    """The command-line parser a type implies (int, float, str, lists, group=rate maps)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return parser_for(next(a for a in args if a is not type(None)))
    if origin is tuple:
        return {int: parse_ints, float: parse_fractions}.get(args[0], parse_names)
    if origin is dict:
        return parse_rate_map
    if hint in (int, float, Path):
        return hint
    return str


# ---------------------------------------------------------------------------- types

def as_floats(value: Any, hint: Any) -> Any:
    """Whole numbers where the type says float become floats (TOML `lr = 1` is 1.0)."""
    if value is None or isinstance(value, bool):
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is float and isinstance(value, int):
        return float(value)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if float in inner and isinstance(value, int):
            return float(value)
        return as_floats(value, inner[0])
    if origin is tuple and isinstance(value, tuple):
        return tuple(as_floats(v, args[0]) for v in value)
    if origin is dict and isinstance(value, dict):
        return {k: as_floats(v, args[1]) for k, v in value.items()}
    return value


def type_name(hint: Any) -> str:
    """How a type reads in a message: 'a number', 'a list of integers', ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(type_name(a) for a in inner) + " (or left out)"
    if origin is tuple:
        return f"a list of {type_name(args[0]).split(' ', 1)[1]}s"
    if origin is dict:
        return (f"a table of {type_name(args[0]).split(' ', 1)[1]} = "
                f"{type_name(args[1]).split(' ', 1)[1]} entries")
    return {bool: "a boolean (true or false)", int: "an integer", float: "a number",
            str: "a string", Path: "a path string"}.get(hint, getattr(hint, "__name__", "?"))


def fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, list | tuple) and all(fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            fits(k, args[0]) and fits(v, args[1]) for k, v in value.items())
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is Path:
        return isinstance(value, str | Path)
    return isinstance(value, hint)


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value) if isinstance(value, str | bool | int | float) else repr(value)


def check_type(key: str, value: Any, hint: Any, default: Any = None) -> Any:
    """`value` converted to the field's type (lists to tuples, whole numbers to floats),
    or a one-line error naming the key, the value and the type expected."""
    if not fits(value, hint):
        example = f", e.g. {key} = {toml_value(default)}" if default not in (None, ()) else ""
        raise TicketlabError(f"setting '{key}' is {toml_value(value)} "
                             f"({type(value).__name__}): expected {type_name(hint)}{example}")
    if isinstance(value, list):
        value = tuple(value)
    if hint is Path or (value is not None and Path in typing.get_args(hint)):
        value = Path(value)
    return as_floats(value, hint)


# ---------------------------------------------------------------------------- flat keys

@dataclasses.dataclass(frozen=True)
class FlatField:
    """One setting as the CLI and TOML files name it: `lr`, not `training.lr`."""

    key: str
    section: str | None  # None: a field of the top-level dataclass itself
    field: dataclasses.Field
    hint: Any

    @property
    def meta(self) -> dict[str, Any]:
        return meta(self.field)

    @property
    def default(self) -> Any:
        return default_of(self.field)


def flat_fields(cls: type, sections: tuple[str, ...]) -> dict[str, FlatField]:
    """Flat key -> field, for a dataclass whose `sections` fields are dataclasses too.

    Two sections defining the same key would make one silently override the other on the
    command line and in TOML files: that is an error here, raised at import.
    """
    out: dict[str, FlatField] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in sections:
            sub = typing.get_type_hints(hints[f.name])
            items = [(g.name, FlatField(g.name, f.name, g, sub[g.name]))
                     for g in dataclasses.fields(hints[f.name])]
        else:
            items = [(f.name, FlatField(f.name, None, f, hints[f.name]))]
        for key, flat in items:
            if key in out:
                where = [x or cls.__name__ for x in (out[key].section, flat.section)]
                raise TypeError(f"setting '{key}' is defined twice, in {where[0]} and "
                                f"{where[1]}: flat keys must be unique, rename one")
            out[key] = flat
    return out
