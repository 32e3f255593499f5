"""The configuration: dataclasses that are the only spec passed around.

A run is fully described by an `ExperimentConfig`. Its *science* part (data, model,
training, pruning, rewind point) is hashed to name the run directory; which seeds, levels
and controls to compute are not hashed, so asking for more seeds or levels later reuses
everything already computed. Runtime choices (device, paths, verbosity) live in `Runtime`
and never affect the hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ticketlab.errors import TicketlabError

# ---------------------------------------------------------------------------- steps

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


# ---------------------------------------------------------------------------- seeds


def derive_seed(seed: int, *purpose: object) -> int:
    """A stable 63-bit seed for one use of one trial (init, data order, a control...)."""
    text = "/".join(str(p) for p in (seed, *purpose))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


# ---------------------------------------------------------------------------- hparams

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "step")
SCOPES = ("layerwise", "global")
CONTROLS = ("reinit", "random", "reshuffle", "signed_constant", "random_signed_constant",
            "freeze_init", "freeze_init_zero_mask")
PAPER_RATES = {"fc": 0.2, "output": 0.1, "conv": 0.1}


@dataclass
class DataHparams:
    dataset: str = "digits"
    validation_size: int | None = None  # None: 5,000 (a proportional share for small sets)
    split_seed: int = 0  # fixes the validation split; independent of the trial seed


@dataclass
class ModelHparams:
    model: str = "lenet_300_100"
    init: str = "glorot_normal"


@dataclass
class TrainingHparams:
    optimizer: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | step (x gamma at each milestone)
    milestones: tuple[str, ...] = ()
    gamma: float = 0.1
    warmup: str = "0it"  # linear warm-up from 0 to lr
    train: str = "40ep"  # the budget of every level
    batch_size: int = 60
    eval_every: str = "100it"  # the paper's grid


@dataclass
class PruningHparams:
    scope: str = "layerwise"  # layerwise | global
    rates: dict[str, float] = field(default_factory=lambda: dict(PAPER_RATES))
    rate: float | None = None  # one rate for every group (layerwise) or the global rate
    exclude: tuple[str, ...] = ()  # groups never pruned, e.g. ("output",)
    criterion: str = "large_final"  # which weights to keep (pruning.criteria.CRITERIA)
    threshold: float | None = None  # alpha: one-shot mask |w| > mean|w| + alpha * std(w)

    def rates_arg(self) -> float | dict[str, float]:
        """What `prune` takes: the global rate, or one rate / {group: rate} layer-wise."""
        if self.scope == "global":
            return 0.2 if self.rate is None else self.rate
        return self.rate if self.rate is not None else dict(self.rates)


@dataclass
class ExperimentConfig:
    data: DataHparams = field(default_factory=DataHparams)
    model: ModelHparams = field(default_factory=ModelHparams)
    training: TrainingHparams = field(default_factory=TrainingHparams)
    pruning: PruningHparams = field(default_factory=PruningHparams)
    rewind: str = "0it"
    one_shot: tuple[float, ...] = ()  # densities: prune the dense ticket once to each
    # What to compute (not hashed):
    levels: int = 10
    controls: tuple[str, ...] = ("reinit", "random")
    seeds: tuple[int, ...] = (0,)

    SECTIONS = ("data", "model", "training", "pruning")
    UNHASHED = ("levels", "controls", "seeds")

    def science(self) -> dict[str, Any]:
        """The part that determines every number of every unit; it names the run."""
        d = self.to_dict()
        for key in self.UNHASHED:
            d.pop(key)
        # Settings added later are left out at their defaults: older runs keep their names.
        if not self.one_shot:
            d.pop("one_shot")
        if self.pruning.criterion == "large_final":
            d["pruning"].pop("criterion")
        if self.pruning.threshold is None:
            d["pruning"].pop("threshold")
        return d

    @property
    def kind(self) -> str:
        return "oneshot" if self.one_shot or self.pruning.threshold is not None else "imp"

    @property
    def n_levels(self) -> int:
        """Levels after the dense level 0: one per one-shot density (or the one threshold
        mask), else `levels`."""
        if self.pruning.threshold is not None:
            return 1
        return len(self.one_shot) if self.one_shot else self.levels

    def dense_science(self) -> dict[str, Any]:
        """What level 0 (the dense training) depends on: not pruning, not one-shot."""
        d = self.science()
        d.pop("pruning")
        d.pop("one_shot", None)
        return d

    def run_hash(self) -> str:
        blob = json.dumps({"kind": "imp", **self.science()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def run_name(self) -> str:
        return f"{self.kind}_{self.model.model}_{self.data.dataset}_{self.run_hash()}"

    @classmethod
    def from_science(cls, science: dict[str, Any]) -> ExperimentConfig:
        """The configuration a run directory's config.json "science" describes."""
        flat = {k: v for k, v in science.items() if k not in cls.SECTIONS}
        for section in cls.SECTIONS:
            flat.update(science.get(section, {}))
        return apply_overrides(cls(), flat)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists, a plain JSON-able tree

    def validate(self) -> None:
        """Checks that need no dataset; budgets in epochs are checked once it is loaded."""
        from ticketlab.data import get_dataset
        from ticketlab.models import INITS, MODELS

        t, p = self.training, self.pruning
        _choice("model", self.model.model, tuple(MODELS))
        _choice("init", self.model.init, INITS)
        get_dataset(self.data.dataset)
        _choice("optimizer", t.optimizer, OPTIMIZERS)
        _choice("schedule", t.schedule, SCHEDULES)
        _choice("scope", p.scope, SCOPES)
        from ticketlab.pruning.criteria import CRITERIA, check_alpha
        _choice("criterion", p.criterion, tuple(CRITERIA))
        for c in self.controls:
            _choice("control", c, CONTROLS)
        if self.levels < 0:
            raise TicketlabError(f"levels must be >= 0, got {self.levels}")
        for d in self.one_shot:
            if not 0 < d < 1:
                raise TicketlabError(f"one-shot density must be a fraction in (0, 1), got {d} "
                                     "(0.05 keeps 5% of the weights)")
        if len(set(self.one_shot)) != len(self.one_shot):
            raise TicketlabError("one-shot densities repeat: list each once")
        if p.threshold is not None:
            check_alpha(p.threshold)
            if self.one_shot:
                raise TicketlabError("--threshold and --one-shot both choose the one-shot "
                                     "masks: give one of them")
        if not self.seeds:
            raise TicketlabError("at least one seed is needed, e.g. --seeds 0")
        if t.lr <= 0:
            raise TicketlabError(f"lr must be > 0, got {t.lr}")
        if t.batch_size < 1:
            raise TicketlabError(f"batch size must be >= 1, got {t.batch_size}")
        if not 0 <= t.momentum < 1:
            raise TicketlabError(f"momentum must be in [0, 1), got {t.momentum}")
        if t.gamma <= 0:
            raise TicketlabError(f"gamma must be > 0, got {t.gamma}")
        if t.weight_decay < 0:
            raise TicketlabError(f"weight decay must be >= 0, got {t.weight_decay}")
        if t.nesterov and (t.optimizer != "sgd" or t.momentum == 0):
            raise TicketlabError("nesterov needs --optimizer sgd and a --momentum above 0")
        for s in (t.train, t.eval_every, t.warmup, self.rewind, *t.milestones):
            Step.parse(s)
        if Step.parse(t.train).count == 0:
            raise TicketlabError("the training budget must be positive, e.g. --train 50000it")
        if Step.parse(t.eval_every).count == 0:
            raise TicketlabError("--eval-every must be positive, e.g. 100it")
        rates = {"rate": p.rate} if p.rate is not None else {}
        rates.update({f"rate of group '{g}'": r for g, r in p.rates.items()})
        for what, r in rates.items():
            if not 0 < r < 1:
                raise TicketlabError(
                    f"{what} must be a fraction in (0, 1), got {r} (0.2 prunes 20% per level)"
                )

    def budget(self, iterations_per_epoch: int) -> tuple[int, int]:
        """(rewind step, training steps) in iterations, checked against each other."""
        end = Step.parse(self.training.train).iterations(iterations_per_epoch)
        rewind = Step.parse(self.rewind).iterations(iterations_per_epoch)
        if rewind >= end:
            raise TicketlabError(
                f"rewind point {self.rewind} ({rewind} it) is not before the end of training "
                f"{self.training.train} ({end} it): choose an earlier --rewind"
            )
        return rewind, end


def _choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise TicketlabError(f"unknown {what} '{value}': choose one of {', '.join(allowed)}")


@dataclass
class Runtime:
    """How to run, never what: none of this changes a number (on one device)."""

    out: Path = Path("runs")
    data_dir: Path | None = None
    download: bool = False
    device: str = "auto"
    quiet: bool = False
    checkpoint_every: float = 60.0  # seconds between mid-level checkpoints (0: every eval)
    # Train a level's seeds and controls together (same science up to rounding). None: on a
    # GPU only; on a CPU one model already keeps the cores busy (benchmarks/replicates.py).
    vectorize: bool | None = None
    # Intra-op threads: "auto" (1, or $OMP_NUM_THREADS; measured, see ticketlab.threads) or a
    # count. Recorded in config.json outside the hash: it can change a result's last bits.
    threads: int | str = "auto"
    command: str | None = None  # the command line, recorded in the run's config.json
    recompute: bool = False  # delete damaged units (and what was started from them), redo them


# ---------------------------------------------------------------------------- flat keys

def field_index() -> dict[str, str | None]:
    """Flat key (a CLI flag / TOML key, with underscores) -> its section (None: top level)."""
    index: dict[str, str | None] = {}
    for f in fields(ExperimentConfig):
        if f.name in ExperimentConfig.SECTIONS:
            section = getattr(ExperimentConfig(), f.name)
            index.update({g.name: f.name for g in fields(section)})
        else:
            index[f.name] = None
    return index


def apply_overrides(config: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """Sets flat keys (e.g. {"lr": 1e-3, "model": "conv2"}) on a copy of `config`."""
    config = dataclasses.replace(
        config, **{s: dataclasses.replace(getattr(config, s)) for s in config.SECTIONS}
    )
    index = field_index()
    for key, value in values.items():
        if key not in index:
            raise TicketlabError(f"unknown setting '{key}': see ticketlab find --help for names")
        section = index[key]
        target = config if section is None else getattr(config, section)
        if isinstance(value, list):
            value = tuple(value)
        if key == "rates":
            value = {**PAPER_RATES, **dict(value)}
        setattr(target, key, value)
    return config


def load_toml(path: Path) -> dict[str, Any]:
    """A TOML file of flat keys; [data]/[model]/[training]/[pruning] tables also accepted."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TicketlabError(f"config file {path} not found: check the path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        raise TicketlabError(f"cannot read config file {path}: {e}; fix the TOML") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ExperimentConfig.SECTIONS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key.replace("-", "_")] = value
    return flat
