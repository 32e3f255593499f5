"""One registry type for everything chosen by name: models, datasets, criteria, variants.

A registry maps a name to a value (a builder, a function, a class) and a one-line doc.
Its names feed `--help`, the listings (`ticketlab models`...) and validation, so a list of
names is never written twice. Besides fixed names, a registry can hold *families*: a
pattern such as `cifar_resnet_<depth>[_<width>]` whose numbers are the builder's
hyperparameters (`cifar_resnet_56_32`), or a prefix such as `imagefolder:<path>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from ticketlab.errors import TicketlabError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    doc: str


@dataclass(frozen=True)
class Family(Generic[T]):
    """Names matching `regex` (whole name), turned into a value by `build(match)`.

    `build` raises TicketlabError for a name that matches but makes no sense (say, a ResNet
    depth that is not 6n+2). `examples` are names shown in listings.
    """

    pattern: str  # how the name is written, for people: cifar_resnet_<depth>[_<width>]
    regex: re.Pattern[str]
    build: Callable[[re.Match[str]], T]
    doc: str
    examples: tuple[str, ...] = ()


class Registry(Generic[T]):
    """Name -> value with a one-line doc; unknown names get one line naming the choices."""

    def __init__(self, what: str):
        self.what = what  # "model", "dataset", "criterion", "variant"...
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._families: list[Family[T]] = []

    def add(self, name: str, value: T, doc: str = "", aliases: tuple[str, ...] = ()) -> T:
        for key in (name, *aliases):
            if key in self._aliases:
                raise ValueError(f"{self.what} name '{key}' is already registered")
            self._aliases[key] = name
        self._entries[name] = Entry(name, value, doc or _first_line(value))
        return value

    def register(self, name: str | None = None, doc: str = "",
                 aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator: registers a function or class under `name` (default: its __name__ or
        its `name` attribute); the doc defaults to the first line of its docstring."""
        def decorate(value: T) -> T:
            key = name or getattr(value, "name", None) or value.__name__  # type: ignore[attr-defined]
            return self.add(key, value, doc, aliases)
        return decorate

    def add_family(self, pattern: str, regex: str, build: Callable[[re.Match[str]], T],
                   doc: str, examples: tuple[str, ...] = ()) -> None:
        self._families.append(Family(pattern, re.compile(regex), build, doc, examples))

    def canonical(self, name: str) -> str:
        """The registered spelling of `name` (aliases resolved); refuses an unknown name."""
        return self._lookup(name)[0]

    def get(self, name: str) -> T:
        return self._lookup(name)[1]

    def _lookup(self, name: str) -> tuple[str, T]:
        """(registered spelling, value); a family's value is built once, which also refuses a
        senseless match (say, a ResNet depth that is not 6n+2)."""
        key = str(name).strip()
        for spelling in (key, key.lower()):
            if spelling in self._aliases:
                registered = self._aliases[spelling]
                return registered, self._entries[registered].value
        for family in self._families:
            match = family.regex.fullmatch(key)
            if match:
                return key, family.build(match)
        raise TicketlabError(f"unknown {self.what} '{name}': choose one of "
                             f"{', '.join(self.choices())}")

    def __contains__(self, name: object) -> bool:
        try:
            self.canonical(str(name))
        except TicketlabError:
            return False
        return True

    def names(self) -> list[str]:
        """The fixed names, in registration order (families are not enumerable)."""
        return list(self._entries)

    def choices(self) -> list[str]:
        """What a message or `--help` offers: the fixed names, then each family's pattern."""
        return [*self._entries, *(f.pattern for f in self._families)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(k, e.value) for k, e in self._entries.items()]

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def families(self) -> list[Family[T]]:
        return list(self._families)

    def doc(self, name: str) -> str:
        key = self.canonical(name)
        if key in self._entries:
            return self._entries[key].doc
        return next(f.doc for f in self._families if f.regex.fullmatch(key))

    def listing(self) -> list[tuple[str, str]]:
        """(name or pattern, doc) rows for `ticketlab models` and the like."""
        rows = [(e.name, e.doc) for e in self._entries.values()]
        for f in self._families:
            examples = f" (e.g. {', '.join(f.examples)})" if f.examples else ""
            rows.append((f.pattern, f.doc + examples))
        return rows


def _first_line(value: object) -> str:
    doc = getattr(value, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
