"""Supermask scans (Zhou et al. 2019): masks that make an untrained network accurate.

From a finished run's dense level (initial weights = the rewind point, final weights = the
trained dense network of one seed), each criterion is cut to each density one-shot, exactly
as `find --one-shot --criterion` would cut it, and the untrained network under that mask is
scored on the test set: no training at all. Every criterion comes with its same-sign variant
where one exists, and every density with a random mask of the same per-tensor counts. The
criteria that score the network (`pruning.at_init.AT_INIT`: snip, grasp, synflow) are cut
from the same initial weights, their examples drawn with derive_seed(seed, "criterion") as
the random criterion's scores are here.
"""

from __future__ import annotations

import copy
from typing import Any

from ticketlab.config import ExperimentConfig, derive_seed
from ticketlab.errors import TicketlabError
from ticketlab.experiments.imp import resolve_device
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.models import build_model
from ticketlab.pruning import (
    Mask,
    prune_by_criterion,
    random_like,
    rates_for_density,
    threshold_mask,
)
from ticketlab.pruning.at_init import AT_INIT, at_init_scores, check_at_init, cut
from ticketlab.pruning.criteria import CRITERIA, canonical_criterion, check_alpha
from ticketlab.supermask import evaluate_supermask, train_supermask

DEFAULT_CRITERIA = ("large_final", "magnitude_increase", "large_init_large_final",
                    "large_init", "movement", "small_final", "random")


def with_same_sign(criteria: tuple[str, ...]) -> list[str]:
    """Each criterion followed by its _same_sign variant, where one is registered."""
    names = []
    for c in criteria:
        names.append(c)
        if not c.endswith("_same_sign") and f"{c}_same_sign" in CRITERIA:
            names.append(f"{c}_same_sign")
    return list(dict.fromkeys(names))


def scan_supermasks(store: RunStore, densities: tuple[float, ...],
                    criteria: tuple[str, ...] = DEFAULT_CRITERIA, *, seed: int | None = None,
                    action: str = "rewind", alpha: float | None = None, learn: int = 0,
                    learn_lr: float = 0.1, data_dir: Any = None, device: str = "auto"
                    ) -> list[dict[str, Any]]:
    """One record per (criterion, density), plus `random_mask` rows, on the test set.

    The first record is the untrained dense network (`dense`, density 1). With `alpha`, the
    course project's threshold mask (`threshold`) is scored at the density it implies, with
    a random mask of the same per-tensor counts. With `learn` steps, a supermask is also
    learned from the same initial weights (`train_supermask`; saved beside the run as
    supermask/seed_<s>_learned_mask.safetensors) and scored like the others: `learned` is
    its thresholded mask, `learned_sampled` the mean over sampled masks (Zhou's number).
    """
    criteria = tuple(dict.fromkeys(canonical_criterion(c) for c in criteria))
    at_init = [c for c in criteria if c in AT_INIT]
    criteria = tuple(c for c in criteria if c in CRITERIA)
    for d in densities:
        if not 0 < d < 1:
            raise TicketlabError(f"density must be a fraction in (0, 1), got {d}")
    if alpha is not None:
        check_alpha(alpha)
    config = ExperimentConfig.from_science(store.config()["science"])
    if config.pruning.granularity != "weight":
        raise TicketlabError(f"{store.root.name} prunes by {config.pruning.granularity}; "
                             "supermasks are scored on single weights: scan a run made with "
                             "--granularity weight")
    seeds = sorted({r["seed"] for r in store.summary()["records"] if r["level"] == 0})
    if not seeds:
        raise TicketlabError(f"{store.root} has no finished dense level: run ticketlab find "
                             "with --levels 0 or more first")
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise TicketlabError(f"seed {seed} has no finished dense level here: choose one of "
                             f"{','.join(map(str, seeds))}")
    dev = resolve_device(device)
    if data_dir is None:  # where `find` found the data (runs made since it is recorded)
        data_dir = store.data_dir()
    data = config.data.load(data_dir, device=dev)
    model = build_model(config.model.model, data.input_shape, data.num_classes,
                        config.model.init, 0).to(dev)
    dense_unit = Unit(seed, 0, "ticket")
    init = store.load_weights(dense_unit, "rewind", str(dev))
    final = store.load_weights(dense_unit, "final", str(dev))
    dense = Mask.dense(model)
    p = config.pruning
    for name in at_init:
        check_at_init(name, scope=p.scope, exclude=p.exclude)
    records = []

    def score(name: str, mask: Mask, target: float) -> None:
        loss, acc = evaluate_supermask(model, mask, data.x_test, data.y_test, init=init,
                                       action=action, seed=derive_seed(seed, "supermask"))
        records.append({"criterion": name, "target_density": target,
                        "density": mask.density(), "test_loss": loss, "test_accuracy": acc,
                        "seed": seed, "action": action})

    score("dense", dense, 1.0)
    if alpha is not None:
        mask = threshold_mask(final, dense, alpha)
        score("threshold", mask, mask.density())
        score("random_mask", random_like(mask, derive_seed(seed, "random", alpha)),
              mask.density())
    if learn:
        model.load_state_dict(init)
        mask, m = train_supermask(model, data, steps=learn, lr=learn_lr,
                                  batch_size=config.training.batch_size, seed=seed)
        mask.save(store.root / "supermask" / f"seed_{seed}_learned_mask.safetensors")
        score("learned", mask, mask.density())
        records.append({**records[-1], "criterion": "learned_sampled",
                        "test_accuracy": m.sampled_test_accuracy, "test_loss": None})
    for d in densities:
        rates = rates_for_density(dense, p.rates_arg(), d, scope=p.scope, exclude=p.exclude)
        for name in with_same_sign(criteria):
            mask = prune_by_criterion(name, init, final, dense, rates, scope=p.scope,
                                      exclude=p.exclude, seed=derive_seed(seed, "criterion"))
            score(name, mask, d)
        for name in at_init:
            scorer = copy.deepcopy(model).train()
            scorer.load_state_dict(init)
            scores = at_init_scores(name, scorer, dense, data.x_train, data.y_train,
                                    data.num_classes, seed=derive_seed(seed, "criterion"),
                                    density=d)
            score(name, cut(dense, scores, rates, scope=p.scope, exclude=p.exclude), d)
        magnitude = prune_by_criterion("large_final", init, final, dense, rates,
                                       scope=p.scope, exclude=p.exclude)
        score("random_mask", random_like(magnitude, derive_seed(seed, "random", d)), d)
    return records
