"""A finished unit of a `find` run, picked and loaded again: what the analyses and exports of
trained tickets (sensitivity, export, bench) start from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ticketlab.config import ExperimentConfig
from ticketlab.data.dataset import Dataset
from ticketlab.errors import TicketlabError
from ticketlab.experiments.imp import resolve_device
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.models import build_model
from ticketlab.pruning import Mask


def pick_unit(store: RunStore, level: int | None = 0, seed: int | None = None,
              variant: str | None = "ticket") -> Unit:
    """The finished unit asked for (seed None: the first; level None: the last of that seed;
    variant None: ticket, or the run's only variant, as in a sparsify run), or a one-line
    error listing what there is."""
    records = store.records()
    if variant is None:
        variants = sorted({r["variant"] for r in records})
        variant = "ticket" if "ticket" in variants or len(variants) != 1 else variants[0]
    done = [r for r in records if r["variant"] == variant]
    seeds = sorted({r["seed"] for r in done})
    if not seeds:
        raise TicketlabError(f"{store.root} has no finished {variant} unit: choose another "
                             "--variant or finish the run with ticketlab find")
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise TicketlabError(f"seed {seed} has no finished {variant} unit here: choose one of "
                             f"{','.join(map(str, seeds))}")
    levels = sorted(r["level"] for r in done if r["seed"] == seed)
    level = levels[-1] if level is None else level
    if level not in levels:
        raise TicketlabError(f"level {level} of seed {seed} ({variant}) is not finished in "
                             f"this run: choose one of {','.join(map(str, levels))}")
    return Unit(seed, level, variant)


@dataclass
class Trained:
    """A unit's trained network (final weights, mask NOT applied), its mask and its data."""

    unit: Unit
    config: ExperimentConfig
    model: nn.Module
    mask: Mask
    data: Dataset


def load_trained(store: RunStore, unit: Unit, *, data_dir: Path | None = None,
                 device: str = "auto", data: Dataset | None = None) -> Trained:
    """`data`: the run's dataset already loaded (on `device`), when several units are read."""
    config = ExperimentConfig.from_science(store.config()["science"])
    dev = resolve_device(device)
    if data is None:
        data = config.data.load(store.data_dir() if data_dir is None else data_dir, device=dev)
    model = build_model(config.model.model, data.input_shape, data.num_classes,
                        config.model.init, 0).to(dev)
    model.load_state_dict(store.load_weights(unit, "final", str(dev)))
    return Trained(unit, config, model, store.load_mask(unit).to(dev), data)
