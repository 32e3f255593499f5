"""Training durations and points (`500it`, `2ep`) and the seeds derived from a trial's seed."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ticketlab.errors import TicketlabError

_STEP_RE = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")


@dataclass(frozen=True)
class Step:
    """A training duration or point, written `500it` (iterations) or `2ep` (epochs)."""

    count: int
    unit: str  # "it" or "ep"

    @classmethod
    def parse(cls, text: str | Step) -> Step:
        if isinstance(text, Step):
            return text
        m = _STEP_RE.match(str(text))
        if not m:
            raise TicketlabError(
                f"'{text}' is not a step: write a count with a unit, e.g. 500it (iterations) "
                "or 2ep (epochs)"
            )
        return cls(int(m.group(1)), m.group(2))

    def iterations(self, iterations_per_epoch: int) -> int:
        return self.count if self.unit == "it" else self.count * iterations_per_epoch

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"

    @classmethod
    def canonical(cls, text: str) -> str:
        """One spelling per duration (`05it`, ` 5 it` -> `5it`; `0ep` -> `0it`), or `text`
        unchanged when it is not a step (validate() says so)."""
        try:
            step = cls.parse(text)
        except TicketlabError:
            return text
        return "0it" if step.count == 0 else str(step)


def parse_steps(text: str) -> list[str]:
    """A list of steps, `0,100,500,2000it`: a bare count takes the unit written after it
    (the next one that has a unit), so one unit can close the list; a bare 0 needs none.
    Canonical spellings."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p for p in parts):
        raise TicketlabError(f"'{text}' is not a list of steps: e.g. 0,100,500,2000it")
    steps: list[str] = []
    unit = None
    for part in reversed(parts):
        m = re.fullmatch(r"(\d+)\s*(it|ep)?", part)
        if not m:
            Step.parse(part)  # names the bad item
        if (m.group(2) or unit) is None and int(m.group(1)) != 0:
            raise TicketlabError(f"'{part}' in '{text}' needs a unit: e.g. 0,100,500,2000it")
        unit = m.group(2) or unit
        steps.append(Step.canonical(f"{m.group(1)}{unit or 'it'}"))
    return steps[::-1]


def derive_seed(seed: int, *purpose: object) -> int:
    """A stable 63-bit seed for one use of one trial (init, data order, a control...)."""
    text = "/".join(str(p) for p in (seed, *purpose))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1
