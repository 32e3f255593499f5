"""The configuration: dataclasses that are the only spec passed around.

A run is fully described by an `ExperimentConfig`. Its *science* part (data, model,
training, pruning, rewind point) is hashed to name the run directory; which seeds, levels
and controls to compute are not hashed, so asking for more seeds or levels later reuses
everything already computed. Runtime choices (device, paths, verbosity) live in `Runtime`
and never affect the hash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import tomllib
import types
import typing
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

    @classmethod
    def canonical(cls, text: str) -> str:
        """One spelling per duration (`05it`, ` 5 it` -> `5it`; `0ep` -> `0it`), or `text`
        unchanged when it is not a step (validate() says so)."""
        try:
            step = cls.parse(text)
        except TicketlabError:
            return text
        return "0it" if step.count == 0 else str(step)


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
        d = self.canonical().to_dict()
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
        c = self.canonical()
        return f"{c.kind}_{c.model.model}_{c.data.dataset}_{self.run_hash()}"

    def canonical(self) -> ExperimentConfig:
        """A copy with one spelling per setting, so equivalent spellings name one run:
        steps as `<count><unit>`, the dataset by its registered name, choices in lower case,
        whole numbers in number settings as floats. Values already canonical are unchanged,
        so runs named before canonicalisation keep their names; an unknown value is left for
        validate() to refuse."""
        from ticketlab.data import get_dataset

        values: dict[str, Any] = {}
        for key, (section, hint) in _typed_fields().items():
            value = getattr(self if section is None else getattr(self, section), key)
            value = _as_floats(value, hint)
            if key in STEP_KEYS:
                value = (tuple(Step.canonical(v) for v in value) if isinstance(value, tuple)
                         else Step.canonical(value))
            elif key in CHOICE_KEYS and isinstance(value, str):
                value = value.strip().lower()
            elif key == "controls" and isinstance(value, tuple):
                value = tuple(v.strip().lower() if isinstance(v, str) else v for v in value)
            values[key] = value
        with contextlib.suppress(TicketlabError):  # unknown: validate() names the choices
            values["dataset"] = get_dataset(values["dataset"]).name
        return _replace_flat(self, values)

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
        MODELS.canonical(self.model.model)
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
        if len(set(self.seeds)) != len(self.seeds):
            raise TicketlabError(f"seeds repeat ({','.join(map(str, self.seeds))}): list each "
                                 "seed once, e.g. --seeds 0,1,2")
        if min(self.seeds) < 0:
            raise TicketlabError(f"seed {min(self.seeds)} is negative: seeds are integers >= 0, "
                                 "e.g. --seeds 0,1,2")
        if self.data.validation_size is not None and self.data.validation_size < 1:
            raise TicketlabError(f"validation size must be >= 1, got {self.data.validation_size}"
                                 ": leave it out for the default")
        _number("lr", t.lr, "> 0", t.lr > 0, "--lr 0.0012")
        if t.batch_size < 1:
            raise TicketlabError(f"batch size must be >= 1, got {t.batch_size}")
        _number("momentum", t.momentum, "in [0, 1)", 0 <= t.momentum < 1, "--momentum 0.9")
        _number("gamma", t.gamma, "> 0", t.gamma > 0, "--gamma 0.1")
        _number("weight decay", t.weight_decay, ">= 0", t.weight_decay >= 0,
                "--weight-decay 0.0001")
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
        self._check_model()

    def _check_model(self) -> None:
        """Builds the model on the dataset's input shape (no data loaded) and runs one dummy
        forward, so a model that does not fit the images, or a pruning group it does not
        have, is refused before anything trains."""
        import torch

        from ticketlab.data import get_dataset
        from ticketlab.models import MODELS, prunable_groups

        info = get_dataset(self.data.dataset)
        name, shape = self.model.model, tuple(info.input_shape)
        try:
            with torch.no_grad():
                model = MODELS.get(name)(shape, info.num_classes)
                model(torch.zeros(1, *shape))
        except (RuntimeError, ValueError):
            need = _smallest_fitting_side(name, shape, info.num_classes)
            size = "x".join(map(str, shape))
            fix = (f"it needs images of at least {need}x{need} pixels" if need else
                   "it does not fit this input")
            raise TicketlabError(
                f"model {name} does not fit dataset {info.name} ({size} images): {fix}; "
                "choose another --model or --dataset (see ticketlab models)") from None
        groups = sorted(set(prunable_groups(model).values()))
        p = self.pruning
        for what, names, allowed in (("--rates", p.rates, set(groups) | set(PAPER_RATES)),
                                     ("--exclude", p.exclude, set(groups))):
            for g in names:
                if g not in allowed:
                    raise TicketlabError(
                        f"unknown group '{g}' in {what}: {name} has the groups "
                        f"{', '.join(groups)}; name one of those")

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


def _number(what: str, value: float, rule: str, ok: bool, example: str) -> None:
    """Refuses a non-finite value (NaN passes every comparison) or one that breaks `rule`."""
    if not (math.isfinite(value) and ok):
        raise TicketlabError(f"{what} must be a finite number {rule}, got {value}: "
                             f"e.g. {example}")


def _smallest_fitting_side(name: str, shape: tuple[int, ...], num_classes: int) -> int | None:
    """The smallest square image side the model accepts (None: none up to 256)."""
    import torch

    from ticketlab.models import MODELS

    for side in range(max(shape[1:]) + 1, 257):
        try:
            with torch.no_grad():
                MODELS.get(name)((shape[0], side, side), num_classes)(
                    torch.zeros(1, shape[0], side, side))
            return side
        except (RuntimeError, ValueError):
            continue
    return None


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

    def validate(self) -> None:
        """Checks that need no torch: the device's spelling, the checkpoint interval."""
        check_device_name(self.device)
        c = self.checkpoint_every
        if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c) or c < 0:
            raise TicketlabError(f"--checkpoint-every must be a finite number of seconds >= 0, "
                                 f"got {c}: e.g. 60 (0: at every evaluation)")


DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(name: str) -> None:
    """auto, cpu, cuda, cuda:N or mps; anything else (meta, tpu...) is refused."""
    if not isinstance(name, str) or not DEVICE_RE.match(name):
        raise TicketlabError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps")


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


STEP_KEYS = ("warmup", "train", "eval_every", "rewind", "milestones")
CHOICE_KEYS = ("model", "init", "optimizer", "schedule", "scope", "criterion")


def _typed_fields() -> dict[str, tuple[str | None, Any]]:
    """Flat key -> (section, type hint), from the dataclasses' own annotations."""
    out: dict[str, tuple[str | None, Any]] = {}
    hints = typing.get_type_hints(ExperimentConfig)
    for f in fields(ExperimentConfig):
        if f.name in ExperimentConfig.SECTIONS:
            sub = typing.get_type_hints(hints[f.name])
            out.update({g.name: (f.name, sub[g.name]) for g in fields(hints[f.name])})
        else:
            out[f.name] = (None, hints[f.name])
    return out


def _replace_flat(config: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """A copy of `config` with flat keys set (no checks)."""
    config = dataclasses.replace(
        config, **{s: dataclasses.replace(getattr(config, s)) for s in config.SECTIONS}
    )
    index = field_index()
    for key, value in values.items():
        section = index[key]
        setattr(config if section is None else getattr(config, section), key, value)
    return config


def _as_floats(value: Any, hint: Any) -> Any:
    """Whole numbers where the type says float become floats (TOML `lr = 1` is 1.0)."""
    if value is None or isinstance(value, bool):
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is float and isinstance(value, int):
        return float(value)
    if origin in (typing.Union, types.UnionType):
        return _as_floats(value, next(a for a in args if a is not type(None)))
    if origin is tuple and isinstance(value, tuple):
        return tuple(_as_floats(v, args[0]) for v in value)
    if origin is dict and isinstance(value, dict):
        return {k: _as_floats(v, args[1]) for k, v in value.items()}
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


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, list | tuple) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is Path:
        return isinstance(value, str | Path)
    return isinstance(value, hint)


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value) if isinstance(value, str | bool | int | float) else repr(value)


def check_type(key: str, value: Any, hint: Any, default: Any = None) -> Any:
    """`value` converted to the field's type (lists to tuples, whole numbers to floats),
    or a one-line error naming the key, the value and the type expected."""
    if not _fits(value, hint):
        example = f", e.g. {key} = {_toml(default)}" if default not in (None, ()) else ""
        raise TicketlabError(f"setting '{key}' is {_toml(value)} ({type(value).__name__}): "
                             f"expected {type_name(hint)}{example}")
    if isinstance(value, list):
        value = tuple(value)
    if hint is Path or (value is not None and Path in typing.get_args(hint)):
        value = Path(value)
    return _as_floats(value, hint)


def runtime_hints() -> dict[str, Any]:
    return typing.get_type_hints(Runtime)


def apply_overrides(config: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """Sets flat keys (e.g. {"lr": 1e-3, "model": "conv2"}) on a copy of `config`, each
    checked against its field's type, and returns the canonical spelling of the result."""
    typed, defaults = _typed_fields(), ExperimentConfig()
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key not in typed:
            raise TicketlabError(f"unknown setting '{key}': see ticketlab find --help for names")
        section = typed[key][0]
        default = getattr(defaults if section is None else getattr(defaults, section), key)
        value = check_type(key, value, typed[key][1], default)
        if key == "rates":
            value = {**PAPER_RATES, **dict(value)}
        checked[key] = value
    return _replace_flat(config, checked).canonical()


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
            flat.update({k.replace("-", "_"): v for k, v in value.items()})
        else:
            flat[key.replace("-", "_")] = value
    return flat
