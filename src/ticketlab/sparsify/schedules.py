"""Pruning schedules: how far towards the target sparsity training has gone, as a pure function.

A `Schedule` maps the progress `p` in [0, 1] through the pruning window to the *fraction of the
way* from the initial sparsity to the target, also in [0, 1] (keyword parameters, such as
iterative's `n`, come after `p`). Keeping the target out of the schedule makes each one a
single curve that can be tested, plotted and reused at any target; `sparsity_at` does the rest:

    sparsity = initial + (target - initial) * schedule(p),  p = (step - start) / (end - start)

Before `start` the sparsity is `initial` (0: dense); from `end` on it is the schedule's value at
p = 1: the target for every schedule but `dsd`, which returns to `initial` (dense again).

fasterai (Hubens) writes its schedules as `sched(start, end, pos)` returning the sparsity itself,
in percent in its older releases; the differences of each schedule are in its docstring.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Protocol

from ticketlab.config.step import Step
from ticketlab.errors import TicketlabError
from ticketlab.registry import Registry

_EPS = 1e-9  # p * n computed in floating point may land just below a whole number


class Schedule(Protocol):
    def __call__(self, p: float, /) -> float: ...


SCHEDULES: Registry[Callable[..., float]] = Registry("schedule")


def _progress(p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise TicketlabError(f"schedule progress {p} is outside [0, 1]: pass "
                             "(step - start) / (end - start), or call sparsity_at")
    return p


@SCHEDULES.register()
def one_shot(p: float) -> float:
    """All of the target at once, at the window's start (prune once, then fine-tune).

    fasterai's `one_shot` also returns the target everywhere; here `sparsity_at` keeps the
    initial sparsity before `start`, so `start` says when the single pruning happens.
    Equal to `iterative(p, n=1)`.
    """
    _progress(p)
    return 1.0


@SCHEDULES.register()
def iterative(p: float, n: int = 3) -> float:
    """n equal pruning steps, at p = 0, 1/n, ... (n-1)/n; the target is held over the last 1/n.

    fasterai rounds p * n up (`ceil`), so its first step waits until just after the start and
    p = 0 is dense; here the first step is at the start itself, as for `one_shot`, and each
    step is followed by 1/n of the window to recover before the next.
    """
    p = _progress(p)
    if int(n) != n or n < 1:
        raise TicketlabError(f"iterative schedule needs n >= 1 whole pruning steps, got {n}: "
                             "pass n=1 for one-shot, or n=3 and up")
    n = int(n)
    return min(math.floor(p * n + _EPS) + 1, n) / n


@SCHEDULES.register()
def agp(p: float, power: float = 3.0) -> float:
    """Automated gradual pruning (Zhu & Gupta, 2017): 1 - (1 - p)^3, fast early, slow late.

    In sparsity: s = s_f + (s_i - s_f) * (1 - p)^3, the paper's equation and fasterai's
    `sched_agp`. Zhu & Gupta prune only every Δt steps; here the curve is continuous and how
    often to prune is the caller's choice. `power` other than 3 generalises the cubic.
    """
    p = _progress(p)
    if power <= 0:
        raise TicketlabError(f"agp power must be positive, got {power}: the paper uses 3")
    return 1.0 - (1.0 - p) ** power


@SCHEDULES.register()
def one_cycle(p: float, alpha: float = 14.0, beta: float = 6.0) -> float:
    """Logistic S-curve of One-Cycle Pruning (Hubens et al., 2021): slow, steep, then flat.

    fasterai's `sched_onecycle` is (1 + e^(β-α)) / (1 + e^(β-αp)), which starts at 0.25% of
    the target rather than 0; here it is shifted and rescaled to be exactly 0 at p = 0 and 1 at
    p = 1 (same α = 14, β = 6; the two differ by at most 0.25% of the target).
    """
    p = _progress(p)
    if alpha <= 0:
        raise TicketlabError(f"one_cycle alpha must be positive, got {alpha}: the default is 14")

    def logistic(x: float) -> float:
        return (1.0 + math.exp(beta - alpha)) / (1.0 + math.exp(beta - alpha * x))

    low = logistic(0.0)
    return min(1.0, max(0.0, (logistic(p) - low) / (1.0 - low)))


@SCHEDULES.register()
def cos(p: float) -> float:
    """Half a cosine, (1 - cos πp) / 2: slow at both ends; fastai's `sched_cos`, unchanged."""
    p = _progress(p)
    return (1.0 - math.cos(math.pi * p)) / 2.0


@SCHEDULES.register()
def lin(p: float) -> float:
    """Linear ramp, p; fastai's `sched_lin`, unchanged."""
    return _progress(p)


@SCHEDULES.register()
def dsd(p: float, shape: str = "cos") -> float:
    """Dense-sparse-dense: up to the target at mid-window, back to dense at its end.

    `shape="cos"` is fasterai's tutorial `sched_dsd` (half a cosine up, half down), which is
    sin²(πp): the target only at p = 1/2. `shape="square"` is closer to Han et al. (2017):
    dense for the first third, the target for the middle third, dense for the last. Either
    way the sparsity after `end` is the initial one: dsd is the one schedule not ending at the
    target, and its masks must be lifted (weights regrow from zero), not merely kept.
    """
    p = _progress(p)
    if shape == "cos":
        return math.sin(math.pi * min(p, 1.0 - p)) ** 2  # exactly 0 at both ends
    if shape == "square":
        return 1.0 if 1 / 3 - _EPS <= p < 2 / 3 - _EPS else 0.0
    raise TicketlabError(f"unknown dsd shape '{shape}': choose cos or square")


def get_schedule(schedule: str | Schedule | Callable[..., float],
                 **params: Any) -> Schedule:
    """A schedule by name (or a callable) with its parameters bound, checked once at p = 0."""
    fn = SCHEDULES.get(schedule) if isinstance(schedule, str) else schedule
    bound = functools.partial(fn, **params) if params else fn
    try:
        bound(0.0)
    except TypeError as e:
        name = schedule if isinstance(schedule, str) else getattr(fn, "__name__", "schedule")
        raise TicketlabError(f"bad parameters {params} for schedule '{name}': {e}; "
                             "see its docstring for the parameters it takes") from None
    return bound


def window(start: int | str | Step, end: int | str | Step,
           iterations_per_epoch: int | None = None) -> tuple[int, int]:
    """The pruning window in iterations, from counts or steps such as "500it" and "1ep"."""
    def iters(point: int | str | Step, what: str) -> int:
        if isinstance(point, int) and not isinstance(point, bool):
            return point
        step = Step.parse(point)
        if step.unit == "ep" and step.count and not iterations_per_epoch:
            raise TicketlabError(f"schedule {what} '{step}' is in epochs: pass "
                                 "iterations_per_epoch, or write it in iterations (500it)")
        return step.iterations(iterations_per_epoch or 0)

    first, last = iters(start, "start"), iters(end, "end")
    if first < 0:
        raise TicketlabError(f"schedule start {first} is negative: start at 0 or later")
    if last <= first:
        raise TicketlabError(f"schedule end ({end}) must come after its start ({start}): "
                             "pass an end later than the start")
    return first, last


def _fraction(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise TicketlabError(f"{what} sparsity {value} is not a fraction: pass a value in "
                             "[0, 1] (0.9 for 90%)")
    return value


def sparsity_at(step: int, target: float, schedule: str | Schedule | Callable[..., float],
                start: int | str | Step, end: int | str | Step, *, initial: float = 0.0,
                iterations_per_epoch: int | None = None, **params: Any) -> float:
    """The sparsity to prune to after `step` optimizer steps (0-based count of steps taken).

    `initial` before `start`; the schedule through [start, end]; its value at p = 1 after
    `end` (the target; the initial sparsity again for dsd). `params` go to the schedule.
    """
    target, initial = _fraction(target, "target"), _fraction(initial, "initial")
    fn = get_schedule(schedule, **params)
    first, last = window(start, end, iterations_per_epoch)
    if step < first:
        return initial
    p = min(1.0, (step - first) / (last - first))
    return initial + (target - initial) * fn(p)
