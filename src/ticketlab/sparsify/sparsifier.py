"""Gradual sparsification inside any training loop: prune on a schedule while training.

    sparsifier = Sparsifier(model, optimizer, target=0.9, end=2000)
    for x, y in batches:
        loss_fn(model(x), y).backward(); optimizer.step(); optimizer.zero_grad()
        sparsifier.step()                     # or once: sparsifier.attach()

This is pruning *during* one run (Zhu & Gupta's gradual pruning, fasterai's SparsifyCallback),
not a lottery ticket: `ticketlab find` is true IMP (train, prune, rewind, retrain).
`lth=True` is fasterai's in-run imitation of IMP; see `Sparsifier` for how it differs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ticketlab.config.step import Step
from ticketlab.errors import TicketlabError
from ticketlab.pruning.channels import OUTPUT_GRANULARITIES, trace_followers, with_companions
from ticketlab.pruning.criteria import NEGATIVE_SCORES, criterion_scores, get_criterion
from ticketlab.pruning.enforce import MaskEnforcer
from ticketlab.pruning.granularity import check_names, group_dims, prune_structured
from ticketlab.pruning.mask import Mask
from ticketlab.sparsify.schedules import get_schedule, sparsity_at, window

_SCOPES = {"local": "layerwise", "layerwise": "layerwise", "global": "global"}
_BELOW_ONE = math.nextafter(1.0, 0.0)


def _fraction(value: float, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TicketlabError(f"{what} must be a fraction in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0:
        raise TicketlabError(f"{what} {value} is not a fraction: pass a value in [0, 1] "
                             "(0.9 for 90% sparsity)")
    return value


class _Handle:
    """What `attach` returns; `remove()` stops the automatic `step()`."""

    def __init__(self, handles: list):
        self._handles = handles

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class Sparsifier:
    """Prunes `model` towards `target` sparsity over [start, end] optimizer steps.

    After step t (t optimizer steps taken) the scheduled sparsity s_t is
    `sparsity_at(t, target, schedule, start, end)`; every `every` steps, and at `start` and
    `end`, each tensor (scope "local"/"layerwise") or the pool of tensors (scope "global")
    whose sparsity is below s_t loses the fraction 1 - (1 - s_t) / (1 - s_now) of its
    *remaining* weights or groups, lowest `criterion` scores first (init = the weights when
    the Sparsifier was created, final = the current weights). Counts are exact
    (round(rate * remaining) per tensor, as in `prune`), so the sparsity reached may differ
    from s_t by rounding, up to one weight or group per tensor. Global scope at a structured
    granularity ranks groups, not weights, so its weight sparsity only approximates s_t.
    Sparsity is of the prunable weights the mask covers (`Mask.dense(model)`); `exclude`d
    groups are never pruned but count in `sparsity()`. Left out (None), `exclude` is
    ("output",) at a structured granularity, where a pruned row of the output layer would
    remove a class, and () at `weight` granularity. `targets` ({tensor or group: target})
    overrides `target` for those tensors, which follow their own schedule.

    With `optimizer`, pruned weights stay exactly zero as under `enforce_mask`: hooks zero
    their gradients before each optimizer step and the weights after it, and each prune
    zeroes the newly pruned weights and their optimizer state (momentum, Adam moments).
    `step()` must still be called after each optimizer step, or once `attach()`.

    The schedule is evaluated after optimizer steps only, so `start=0` first prunes after
    step 1. dsd: once the schedule has returned to dense (its end), the mask is lifted and
    the weights pruned earlier train again, restarting from zero; between dsd's peak and its
    end the sparsity is held, not reduced gradually. `end` defaults to `total`, the length of
    training in steps; with `total`, `finish()` runs by itself after that many steps.

    Rewinding (fasterai's `lth`, `rewind_epoch`, `reset_end`). The whole state dict (weights,
    batch-norm parameters and running statistics) is saved after `rewind` steps (0: now).
    With `lth=True`, every step that prunes then resets the model to that state, the new
    mask applied, and (with `reset_optimizer`, the default) the optimizer state to fresh;
    the criterion's "initial" weights are the rewind point's, as in IMP. `reset_end=True`
    makes `finish()` leave the final mask on the rewind-point state: an untrained ticket to
    retrain. How lth differs from true IMP (`ticketlab find`): the rounds share one run, so
    one learning-rate schedule and data order run through all of them instead of restarting
    at the rewind step for each level; a round lasts until the schedule's next pruning step,
    not a full training; and the last round's accuracy is read where the user's loop reads it.
    fasterai differs further: it keeps the optimizer's momentum across rounds
    (`reset_optimizer=False` reproduces that) and re-initialises batch norm rather than
    rewinding it. lth is meant for schedules that prune in few steps (iterative, one_shot):
    with agp and `every=1` it would rewind after every step.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 target: float, granularity: str = "weight", scope: str = "local",
                 criterion: str = "large_final", reduce: str = "mean", schedule: Any = "agp",
                 start: int | str | Step = 0, end: int | str | Step | None = None,
                 total: int | str | Step | None = None,
                 iterations_per_epoch: int | None = None, every: int = 1,
                 exclude: tuple[str, ...] | None = None,
                 targets: Mapping[str, float] | None = None,
                 schedule_params: Mapping[str, Any] | None = None, seed: int = 0,
                 lth: bool = False, rewind: int | str | Step = 0, reset_end: bool = False,
                 reset_optimizer: bool = True):
        self.target = _fraction(target, "target sparsity")
        check_names(granularity, reduce)
        if scope not in _SCOPES:
            raise TicketlabError(f"unknown scope '{scope}': choose local (layerwise) or global")
        get_criterion(criterion)  # refuses an unknown name now, not at the first prune
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise TicketlabError(f"every must be a whole number of steps >= 1, got {every!r}")
        self.model, self.optimizer = model, optimizer
        self.granularity, self.scope, self.criterion = granularity, _SCOPES[scope], criterion
        self.reduce, self.every, self.seed = reduce, every, seed
        self.schedule, self.schedule_params = schedule, dict(schedule_params or {})
        get_schedule(schedule, **self.schedule_params)
        if end is None and total is None:
            raise TicketlabError("the pruning window needs an end: pass end= (or total=, the "
                                 "training length, which end then defaults to)")
        self.start, self.end = window(start, total if end is None else end,
                                      iterations_per_epoch)
        self.total = None if total is None else window(0, total, iterations_per_epoch)[1]
        if self.total is not None and self.end > self.total:
            raise TicketlabError(f"pruning ends at step {self.end}, after training's {self.total}"
                                 ": pass an end within total")
        self.rewind = window(0, rewind, iterations_per_epoch)[1] if rewind not in (0, "0it") \
            else 0
        if lth and self.rewind > self.start:
            raise TicketlabError(f"lth rewinds to step {self.rewind}, after pruning starts "
                                 f"({self.start}): rewind to the start or earlier")
        self.lth, self.reset_end, self.reset_optimizer = bool(lth), bool(reset_end), \
            bool(reset_optimizer)
        self._rewound: dict[str, torch.Tensor] | None = None
        self.finished = False
        self.changed_at = 0  # the step the mask last changed at: from then on it is final
        self._mask = Mask.dense(model)
        self._counts = self._mask.counts()  # (kept, total) per tensor: changes with the mask
        if exclude is None:
            exclude = ("output",) if granularity != "weight" else ()
        self.exclude = tuple(exclude)
        self._targets = self._resolve_targets(targets)
        for name in self._mask:  # checks granularity against each pruned tensor's shape
            if self._target_of(name) > 0:
                group_dims(self._mask[name].shape, granularity, name)
        if criterion in NEGATIVE_SCORES and granularity != "weight" and reduce != "mean":
            raise TicketlabError(f"criterion {criterion} scores can be negative and the {reduce} "
                                 "norm ignores sign (it would rank like another criterion): "
                                 "use reduce='mean'")
        params = dict(model.named_parameters())
        self._init = {k: params[k].detach().clone() for k in self._mask}
        self._count = 0
        self._followers: dict[str, list[str]] | None = None
        self._trace: Any = None
        if granularity in OUTPUT_GRANULARITIES:  # a removed filter takes its bias and BN
            self._trace = model.register_forward_pre_hook(self._trace_followers)
        self._enforcer = MaskEnforcer(model, self._mask)
        self._hooks: list = []
        if self.rewind == 0 and (self.lth or self.reset_end):
            self._save_rewind_point()
        if optimizer is not None:
            self.bind(optimizer)

    def bind(self, optimizer: torch.optim.Optimizer) -> None:
        """Enforces the mask around `optimizer`'s steps (done by the constructor when it is
        given the optimizer; a training loop that creates its own calls this)."""
        for h in self._hooks:  # a previous optimizer's
            h.remove()
        self.optimizer = optimizer
        params = dict(self.model.named_parameters())

        def grad_hook(name: str):  # the mask changes: look the enforcer up at each backward
            return lambda p: self._enforcer.zero_grad_of(name, p)

        self._hooks = [
            optimizer.register_step_pre_hook(lambda *_: self._enforcer.zero_grads()),
            optimizer.register_step_post_hook(lambda *_: self._enforcer.zero_weights()),
            # a closure's backward runs inside step(), after the pre-hook (LBFGS, Lightning)
            *(p.register_post_accumulate_grad_hook(grad_hook(k)) for k, p in params.items()
              if p.requires_grad),  # weights, and biases and BN of removed channels
        ]

    # ------------------------------------------------------------------ set-up

    def _resolve_targets(self, targets: Mapping[str, float] | None) -> dict[str, float]:
        out: dict[str, float] = {}
        if not targets:
            return out
        known = set(self._mask) | set(self._mask.groups.values())
        for key, value in targets.items():
            if key not in known:
                raise TicketlabError(f"targets name '{key}', neither a tensor nor a group of "
                                     f"the model's mask: use one of {sorted(known)}")
            if key in self.exclude:
                raise TicketlabError(f"targets name '{key}', which exclude leaves unpruned: "
                                     "drop it from targets or from exclude")
            _fraction(value, f"target sparsity of {key}")
        for name in self._mask:
            if name in targets:
                out[name] = float(targets[name])
            elif self._mask.groups[name] in targets:
                out[name] = float(targets[self._mask.groups[name]])
        return out

    def _target_of(self, name: str) -> float:
        if name in self._targets:
            return self._targets[name]
        return 0.0 if self._mask.groups[name] in self.exclude else self.target

    def _scheduled(self, target: float) -> float:
        return sparsity_at(self._count, target, self.schedule, self.start, self.end,
                           **self.schedule_params)

    # ------------------------------------------------------------------ the loop

    @property
    def mask(self) -> Mask:
        return self._mask

    @property
    def steps(self) -> int:
        """Optimizer steps counted so far."""
        return self._count

    def sparsity(self) -> float:
        """Fraction of the prunable weights (those the mask covers) pruned."""
        kept = sum(k for k, _ in self._counts.values())
        return 1.0 - kept / max(1, sum(t for _, t in self._counts.values()))

    def step(self) -> None:
        """Call once after each optimizer step: counts it and prunes when the schedule says."""
        if self.finished:
            return
        self._count += 1
        t = self._count
        if t == self.rewind and self._rewound is None and (self.lth or self.reset_end):
            self._save_rewind_point()
        if (t % self.every == 0 or t in (self.start, self.end)) and self._update():
            self.changed_at = t
            if self.lth:
                self._restore_rewind_point()
        self._enforcer.zero_weights()
        if t == self.total:
            self.finish()

    def finish(self) -> None:
        """The end of training: with `reset_end`, the final mask goes onto the rewind-point
        state (weights, batch norm). Runs once; after `total` steps it runs by itself."""
        if self.finished:
            return
        self.finished = True
        if self.reset_end:
            self._restore_rewind_point()

    def attach(self) -> _Handle:
        """Calls `step()` after every optimizer step, so the loop needs no change."""
        if self.optimizer is None:
            raise TicketlabError("attach() needs the optimizer: pass it to Sparsifier(model, "
                                 "optimizer, ...) or call step() after each optimizer step")
        return _Handle([self.optimizer.register_step_post_hook(lambda *_: self.step())])

    def remove(self) -> None:
        """Stops enforcing the mask (the pruned weights stay zero until trained)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self._trace is not None:  # removed before the first forward pass
            self._trace.remove()
            self._trace = None

    # ------------------------------------------------------------------ pruning

    def rewind_state(self) -> dict[str, torch.Tensor] | None:
        """The rewind point's state dict with the current mask applied (None before it was
        reached, or without lth and reset_end): the ticket reset_end leaves."""
        if self._rewound is None:
            return None
        enforced = self._enforced(self._mask)
        return {k: v * enforced[k].to(v.dtype) if k in enforced else v.clone()
                for k, v in self._rewound.items()}

    def _trace_followers(self, module: nn.Module, args: tuple) -> None:
        """At the first forward: which biases and batch norms each layer's channels feed."""
        self._trace.remove()
        self._trace = None
        if args and torch.is_tensor(args[0]):
            self._followers = trace_followers(self.model, args[0][:1])
            if self._mask.density() < 1.0:
                self._set_mask(self._mask)  # pruned before any forward: add companions now

    def _enforced(self, mask: Mask) -> Mask:
        """What is held at zero: the mask, and at filter/row granularity the biases and
        batch-norm channels of removed filters (`pruning.channels`)."""
        followers = self._followers
        if followers is None and self.granularity in OUTPUT_GRANULARITIES:
            followers = {f"{n}.weight": [f"{n}.bias"] for n, m in self.model.named_modules()
                         if getattr(m, "bias", None) is not None and f"{n}.weight" in mask}
        return with_companions(mask, followers)

    def _save_rewind_point(self) -> None:
        state = self.model.state_dict()
        self._rewound = {k: v.detach().clone() for k, v in state.items()}
        if self.lth:  # the criterion's "initial" weights: the rewind point's, as in IMP
            self._init = {k: self._rewound[k].clone() for k in self._mask}

    def _restore_rewind_point(self) -> None:
        if self._rewound is None:
            raise TicketlabError(f"the rewind point (step {self.rewind}) was not reached by "
                                 f"step {self._count}: rewind earlier")
        self.model.load_state_dict(self._rewound)
        self._enforcer.zero_weights()
        if self.optimizer is not None and self.reset_optimizer:
            self.optimizer.state.clear()  # a fresh optimizer's state, as each IMP level's

    def _update(self) -> bool:
        """Prunes to the scheduled sparsity; whether the mask changed."""
        counts = self._counts  # no pass over the masks at steps that do not prune
        if self._count >= self.end and self.sparsity() > 0.0 and all(
                self._scheduled(self._target_of(k)) == 0.0 for k in self._mask):
            self._set_mask(Mask.dense(self.model))  # dsd: back to dense, weights regrow
            return True
        rates: dict[str, float] = {}
        for name, (kept, total) in counts.items():
            target = self._target_of(name)
            if target == 0.0 or kept == 0:
                continue
            rate = self._rate(self._scheduled(target), 1 - kept / total)
            if rate > 0:
                rates[name] = rate
        rate_global = 0.0
        if self.scope == "global":
            names = [k for k in self._mask
                     if k not in self._targets and self._mask.groups[k] not in self.exclude]
            kept = sum(counts[k][0] for k in names)
            total = sum(counts[k][1] for k in names)
            for k in names:
                rates.pop(k, None)
            if kept:
                rate_global = self._rate(self._scheduled(self.target), 1 - kept / total)
        if not rates and rate_global <= 0:
            return False
        params = dict(self.model.named_parameters())
        scores = criterion_scores(self.criterion, self._init, params, self._mask,
                                  seed=self.seed + self._count)
        if self.scope == "global":
            new = prune_structured(self._mask, scores, rate_global, self.granularity,
                                   self.reduce, scope="global", exclude=self.exclude,
                                   targets=rates or None)
        else:
            new = prune_structured(self._mask, scores, 0.0, self.granularity, self.reduce,
                                   scope="layerwise", exclude=self.exclude, targets=rates)
        changed = any(not torch.equal(new[k], self._mask[k]) for k in new)
        self._set_mask(new)
        return changed

    @staticmethod
    def _rate(scheduled: float, now: float) -> float:
        if scheduled <= now or now >= 1.0:
            return 0.0
        return min(max(1.0 - (1.0 - scheduled) / (1.0 - now), 0.0), _BELOW_ONE)

    def _set_mask(self, mask: Mask) -> None:
        self._mask = mask
        self._counts = mask.counts()
        self._enforcer = MaskEnforcer(self.model, self._enforced(mask))
        self._enforcer.zero_weights()
        if self.optimizer is not None:
            self._enforcer.zero_optimizer_state(self.optimizer)

    # ------------------------------------------------------------------ resuming

    def state_dict(self) -> dict[str, Any]:
        """Step count, mask and initial weights: with the model's and optimizer's state dicts,
        a resumed run continues exactly."""
        state = {"step": self._count, "finished": self.finished, "changed_at": self.changed_at,
                 "mask": {k: v.clone() for k, v in self._mask.items()},
                 "init": {k: v.clone() for k, v in self._init.items()}}
        if self._rewound is not None:
            state["rewind"] = {k: v.clone() for k, v in self._rewound.items()}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {"step", "mask", "init"} - set(state)
        if missing:
            raise TicketlabError(f"sparsifier state lacks {sorted(missing)}: pass what "
                                 "Sparsifier.state_dict() returned")
        for what in ("mask", "init"):
            got = state[what]
            if set(got) != set(self._mask) or any(
                    tuple(got[k].shape) != tuple(self._mask[k].shape) for k in got):
                raise TicketlabError(f"sparsifier state's {what} does not fit this model: "
                                     "load a state saved for the same architecture")
        self._count = int(state["step"])
        self.finished = bool(state.get("finished", False))
        self.changed_at = int(state.get("changed_at", 0))
        if "rewind" in state:
            own = self.model.state_dict()
            if set(state["rewind"]) != set(own):
                raise TicketlabError("sparsifier state's rewind point does not fit this model: "
                                     "load a state saved for the same architecture")
            self._rewound = {k: v.detach().clone().to(own[k].device)
                             for k, v in state["rewind"].items()}
        self._init = {k: v.detach().clone().to(self._init[k].device)
                      for k, v in state["init"].items()}
        device = {k: v.device for k, v in self._mask.items()}
        self._set_mask(self._mask.with_tensors(
            {k: torch.as_tensor(v).to(device[k]) for k, v in state["mask"].items()}))
