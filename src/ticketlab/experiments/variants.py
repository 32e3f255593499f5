"""What a pruned level trains: the ticket and the variants beside it, one class each.

Every unit of level L >= 1 is a `Variant`: it chooses a mask, the model's starting weights
and, for Zhou et al.'s Mask-0 actions, values its pruned weights are held at. Adding a
variant is one class here, registered in `VARIANTS`; its name is then a valid `--controls`
entry, listed in `--help`. Level 0 (the dense training) is not a variant.

With a criterion that scores the network (`pruning.at_init.AT_INIT`: SNIP, GraSP,
SynFlow), the ticket's mask is cut from the dense network at the rewind point (the
initialisation at --rewind 0it) under the parent's mask, not from trained weights; its
scoring examples come from the training split, drawn with derive_seed(seed, "criterion",
level), the seed the random criterion uses (`at_init_scores`).

- ticket: cut from the parent's trained weights by the configured criterion (or threshold),
  kept weights reset to the rewind point;
- reinit: the ticket's mask with a fresh initialisation (another seed), trained from the
  rewind step like the ticket, so only the initial values differ (batch norm starts as a
  fresh network's: weight 1, bias 0, running mean 0 and variance 1);
- random (alias shuffle, Frankle et al. 2021's layer-wise shuffle): a random mask with the
  ticket's per-tensor counts, from the rewind-point weights (at a structured granularity: as
  many whole groups removed per tensor, at random places);
- reshuffle, signed_constant, random_signed_constant: what the kept weights start from
  (Mask-1 actions, `pruning.actions`);
- freeze_init, freeze_init_zero_mask: pruned weights held at their rewind-point values
  instead of zero (Mask-0 actions), the latter only those that grew in training.

At a structured granularity (`--granularity filter`...) the ticket's levels remove whole
groups (`structured_mask`); reinit and the mask actions need nothing else, since they act on
the kept weights of whatever mask the ticket has (a Mask-0 action then holds whole pruned
filters at their rewind values).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ticketlab.config import ExperimentConfig, derive_seed
from ticketlab.errors import TicketlabError
from ticketlab.experiments.context import Context, Prepared
from ticketlab.experiments.store import Unit
from ticketlab.pruning import (
    AT_INIT,
    Mask,
    apply_mask1,
    criterion_scores,
    frozen_values,
    magnitude_scores,
    prune_by_criterion,
    prune_magnitude,
    prune_structured,
    prune_structured_to_density,
    random_like,
    rates_for_density,
    threshold_mask,
)
from ticketlab.pruning.at_init import at_init_scores, cut
from ticketlab.registry import Registry


class Variant:
    """A unit of a pruned level. Subclasses change one of `mask`, `model` or `frozen`."""

    name: ClassVar[str]

    @classmethod
    def check(cls, config: ExperimentConfig) -> None:
        """Refuses (TicketlabError) settings this variant cannot run with, before training."""

    def mask(self, ctx: Context, unit: Unit) -> Mask:
        """The ticket's mask of this level: read back where the ticket unit saved it, else
        cut here the same way (a worker may start a control before its ticket)."""
        ticket = Unit(unit.seed, unit.level, "ticket")
        if (ctx.store.dir(ticket) / "mask.safetensors").is_file():
            return ctx.store.load_mask(ticket)
        return Ticket().mask(ctx, ticket)

    def start_state(self, ctx: Context, unit: Unit, mask: Mask, rewind: dict[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
        """The state dict the model starts from (before the mask zeroes pruned weights)."""
        return rewind

    def model(self, ctx: Context, unit: Unit, mask: Mask) -> torch.nn.Module:
        model = ctx.new_model(derive_seed(unit.seed, "init"))
        model.load_state_dict(self.start_state(ctx, unit, mask, rewind_state(ctx, unit)))
        return model

    def frozen(self, ctx: Context, unit: Unit, mask: Mask) -> dict[str, torch.Tensor] | None:
        """Values pruned weights are held at (0 at kept entries); None: held at zero."""
        return None

    def prepare(self, ctx: Context, unit: Unit) -> Prepared:
        mask = self.mask(ctx, unit)
        model = self.model(ctx, unit, mask)
        frozen = self.frozen(ctx, unit, mask)
        ctx.enforced(mask, frozen).apply_(model)  # with removed filters' biases and BN
        if frozen:
            frozen = {k: v.to(ctx.device) for k, v in frozen.items()}
            params = dict(model.named_parameters())
            with torch.no_grad():
                for k, v in frozen.items():
                    params[k].add_(v)
        return model, mask, ctx.rewind, frozen


VARIANTS: Registry[type[Variant]] = Registry("control")


def rewind_state(ctx: Context, unit: Unit) -> dict[str, torch.Tensor]:
    """The dense network's state at the rewind step: weights, biases and batch-norm
    parameters and running statistics (the whole state dict)."""
    return ctx.store.load_weights(Unit(unit.seed, 0, "ticket"), "rewind")


def parent(ctx: Context, unit: Unit) -> Unit:
    """The trained ticket a level's mask is cut from: the previous level, or the dense one."""
    return Unit(unit.seed, 0 if ctx.config.one_shot else unit.level - 1, "ticket")


@VARIANTS.register()
class Ticket(Variant):
    """the pruned network, its kept weights reset to the rewind point"""

    name = "ticket"

    def mask(self, ctx: Context, unit: Unit) -> Mask:
        c, p, seed, level = ctx.config, ctx.config.pruning, unit.seed, unit.level
        previous = parent(ctx, unit)
        mask = ctx.store.load_mask(previous)
        rates = p.rates_arg()
        if c.one_shot:
            rates = rates_for_density(mask, rates, c.one_shot[level - 1], scope=p.scope,
                                      exclude=p.exclude)
        if p.criterion in AT_INIT:
            return cut(mask, at_init_scores_of(ctx, unit, mask, rates), rates, scope=p.scope,
                       exclude=p.exclude)
        final = ctx.store.load_weights(previous, "final")
        if p.threshold is not None:
            return threshold_mask(final, mask, p.threshold)
        if p.granularity != "weight":
            return structured_mask(ctx, unit, mask, final)
        if p.criterion == "large_final":
            return prune_magnitude(final, mask, rates, scope=p.scope, exclude=p.exclude)
        # initial weights = the rewind point, what the kept weights are reset to
        return prune_by_criterion(
            p.criterion, rewind_state(ctx, unit), final, mask, rates, scope=p.scope,
            exclude=p.exclude, seed=derive_seed(seed, "criterion", level))


def at_init_scores_of(ctx: Context, unit: Unit, mask: Mask, rates: float | dict[str, float]
                      ) -> dict[str, torch.Tensor]:
    """Scores of the configured `AT_INIT` criterion for the dense network at the rewind
    point under `mask` (the parent's), on the run's device; the same for the ticket and
    its invert control. `rates`: what the level prunes, for the density SynFlow's rounds
    reach (a global criterion: one rate, or the one-shot level's density)."""
    c, p = ctx.config, ctx.config.pruning
    model = ctx.new_model(derive_seed(unit.seed, "init"))
    model.load_state_dict(rewind_state(ctx, unit))
    if c.one_shot:
        density = c.one_shot[unit.level - 1]
    else:  # a global rate removes that fraction of what the mask keeps
        rate = rates if isinstance(rates, float | int) else max(rates.values(), default=0.0)
        density = mask.density() * (1 - float(rate))
    data = ctx.data
    return at_init_scores(p.criterion, model, mask, data.x_train, data.y_train,
                          data.num_classes, seed=derive_seed(unit.seed, "criterion", unit.level),
                          density=density, examples=p.criterion_examples)


def structured_mask(ctx: Context, unit: Unit, mask: Mask, final: dict[str, torch.Tensor]
                    ) -> Mask:
    """The ticket's cut at a structured granularity: whole groups (filters, neurons...) by
    their reduced criterion scores, with the same scores and seeds as at `weight`.

    One-shot: layer-wise rates from `rates_for_density` (each tensor's groups are equal in
    size, so its weight density follows up to one group); global scope searches the number
    of pooled groups that brings the weight density closest to the target
    (`prune_structured_to_density`), since a global rate counts groups, not weights.
    The output layer is left out: the configuration adds it to `exclude` at a structured
    granularity (its rows are the classes).
    """
    c, p = ctx.config, ctx.config.pruning
    if p.criterion == "large_final":
        scores = magnitude_scores(final, mask)
    else:
        scores = criterion_scores(p.criterion, rewind_state(ctx, unit), final, mask,
                                  seed=derive_seed(unit.seed, "criterion", unit.level))
    rates = p.rates_arg()
    if c.one_shot:
        density = c.one_shot[unit.level - 1]
        if p.scope == "global":
            return prune_structured_to_density(mask, scores, density, p.granularity, p.reduce,
                                               exclude=p.exclude)
        rates = rates_for_density(mask, rates, density, scope=p.scope, exclude=p.exclude)
    return prune_structured(mask, scores, rates, p.granularity, p.reduce, scope=p.scope,
                            exclude=p.exclude)


@VARIANTS.register()
class Reinit(Variant):
    """the ticket's mask on a fresh initialisation (another seed)"""

    name = "reinit"

    def model(self, ctx: Context, unit: Unit, mask: Mask) -> torch.nn.Module:
        return ctx.new_model(derive_seed(unit.seed, "reinit", unit.level))


@VARIANTS.register()
class Invert(Variant):
    """the weights the ticket's criterion ranks lowest, with the ticket's per-tensor counts"""

    name = "invert"

    @classmethod
    def check(cls, config: ExperimentConfig) -> None:
        p = config.pruning
        if p.threshold is not None or p.granularity != "weight":
            raise TicketlabError("the invert control keeps single weights by the criterion's "
                                 "ranking: use it with --granularity weight, without --threshold")

    def mask(self, ctx: Context, unit: Unit) -> Mask:
        """Frankle et al. (2021)'s inversion: among the weights the parent keeps, the lowest
        scores of the criterion that cut the ticket (the same scores), as many per tensor as
        the ticket keeps. One-shot, that inverts the whole ranking; iterative, the last cut
        (the parent is the previous level's ticket)."""
        p = ctx.config.pruning
        ticket = super().mask(ctx, unit)
        previous = parent(ctx, unit)
        kept = ctx.store.load_mask(previous)
        if p.criterion in AT_INIT:  # SynFlow: its order of removal (`synflow_order`)
            scores = at_init_scores_of(ctx, unit, kept, p.rates_arg())
            return ticket.with_tensors({k: lowest(scores[k], kept[k], int(ticket[k].sum()))
                                        for k in ticket})
        final = ctx.store.load_weights(previous, "final")
        scores = magnitude_scores(final, kept) if p.criterion == "large_final" else \
            criterion_scores(p.criterion, rewind_state(ctx, unit), final, kept,
                             seed=derive_seed(unit.seed, "criterion", unit.level))
        return ticket.with_tensors({k: lowest(scores[k], kept[k], int(ticket[k].sum()))
                                    for k in ticket})


def lowest(scores: torch.Tensor, kept: torch.Tensor, k: int) -> torch.Tensor:
    """The `k` entries of `kept` with the lowest scores (equal scores: the earlier first)."""
    order = torch.where(kept, scores.double(), torch.inf).flatten()
    keep = torch.zeros(order.numel(), dtype=torch.bool)
    keep[torch.sort(order, stable=True).indices[:k]] = True
    return keep.view(kept.shape)


@VARIANTS.register(aliases=("shuffle",))
class Random(Variant):
    """a random mask with the ticket's per-tensor counts (of removed groups when structured)"""

    name = "random"

    def mask(self, ctx: Context, unit: Unit) -> Mask:
        return random_like(super().mask(ctx, unit), derive_seed(unit.seed, "random", unit.level),
                           granularity=ctx.config.pruning.granularity)


class _Mask1(Variant):
    """Zhou et al.'s Mask-1 actions: what the kept weights start from."""

    def start_state(self, ctx: Context, unit: Unit, mask: Mask, rewind: dict[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
        return apply_mask1(self.name, rewind, mask, derive_seed(unit.seed, self.name, unit.level))


@VARIANTS.register()
class Reshuffle(_Mask1):
    """the ticket's kept initial values permuted within each tensor"""

    name = "reshuffle"


@VARIANTS.register()
class SignedConstant(_Mask1):
    """kept weights at +-std with their initial signs"""

    name = "signed_constant"


@VARIANTS.register()
class RandomSignedConstant(_Mask1):
    """kept weights at +-std with random signs"""

    name = "random_signed_constant"


class _Mask0(Variant):
    """Zhou et al.'s Mask-0 actions: what the pruned weights are held at."""

    def frozen(self, ctx: Context, unit: Unit, mask: Mask) -> dict[str, torch.Tensor] | None:
        return frozen_values(self.name, rewind_state(ctx, unit), weights_when_pruned(ctx, unit),
                             mask)


@VARIANTS.register()
class FreezeInit(_Mask0):
    """pruned weights held at their rewind-point values"""

    name = "freeze_init"


@VARIANTS.register()
class FreezeInitZeroMask(_Mask0):
    """pruned weights that grew in training held at their rewind-point values, others 0"""

    name = "freeze_init_zero_mask"


def weights_when_pruned(ctx: Context, unit: Unit) -> dict[str, torch.Tensor]:
    """Each weight's trained value at the end of the training in which it was pruned.

    A mask-0 action decides a pruned weight's fate from its trained value (freeze_init_zero_mask:
    did it move away from zero?). In an iterative run the previous level's ticket holds every
    weight pruned before that level at exactly 0, so its weights cannot decide them: a weight
    pruned at level j is judged by ticket j-1's final weights, once, as if each mask-0
    variant ran as its own chain (Zhou et al.), where a weight held at init stays held.
    Kept weights take the parent's final values. One-shot levels all prune the dense network.
    """
    previous = parent(ctx, unit)
    weights = ctx.store.load_weights(previous, "final")  # decides the weights pruned just now
    masks = [ctx.store.load_mask(Unit(unit.seed, j, "ticket")) for j in range(previous.level + 1)]
    for j in range(1, previous.level + 1):  # pruned at level j: ticket j-1 trained them last
        final = ctx.store.load_weights(Unit(unit.seed, j - 1, "ticket"), "final")
        for k, m in masks[j].items():
            weights[k] = torch.where(masks[j - 1][k] & ~m, final[k], weights[k])
    return weights


def control_names() -> list[str]:
    return [n for n in VARIANTS.names() if n != "ticket"]


def check_controls(controls: tuple[str, ...], config: ExperimentConfig | None = None) -> None:
    """Refuses unknown controls, and (given the config) settings a control cannot run with."""
    for c in controls:
        if c == "ticket" or c not in VARIANTS:
            raise TicketlabError(f"unknown control '{c}': choose one of "
                                 f"{', '.join(control_names())}")
        if config is not None:
            VARIANTS.get(c).check(config)


def prepare(ctx: Context, unit: Unit) -> Prepared:
    """The unit's model at its starting weights, its mask, starting step and frozen values."""
    if unit.level == 0:
        model = ctx.new_model(derive_seed(unit.seed, "init"))
        return model, Mask.dense(model), 0, None
    return VARIANTS.get(unit.variant)().prepare(ctx, unit)
