"""The configuration: dataclasses that are the only spec passed around.

A run is fully described by an `ExperimentConfig`. Its *science* part (data, model,
training, pruning, rewind point) is hashed to name the run directory; which seeds, levels
and controls to compute are not hashed, so asking for more seeds or levels later reuses
everything already computed. Runtime choices (device, paths, verbosity) live in `Runtime`
and never affect the hash. Every setting is declared once, with `setting()`
(`config.fields`): its help, command-line parser and hash rule travel with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ticketlab.config.fields import FlatField, as_floats, check_type, flat_fields, setting
from ticketlab.config.step import Step
from ticketlab.errors import TicketlabError

# ---------------------------------------------------------------------------- hparams

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "step")
SCOPES = ("layerwise", "global")
AUGMENTS = ("auto", "none", "flip", "crop_flip")
GRANULARITIES = ("weight", "filter", "channel", "kernel", "row", "column")  # pruning.granularity
REDUCTIONS = ("l1", "l2", "mean")
PAPER_RATES = {"fc": 0.2, "output": 0.1, "conv": 0.1}


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _steps(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(Step.canonical(v) if isinstance(v, str) else v for v in value)
    return Step.canonical(value) if isinstance(value, str) else value


def _zero_is_none(value: Any) -> Any:
    return None if value == 0 else value


def _model_names() -> list[str]:
    from ticketlab.models import MODELS
    return MODELS.choices()


def _dataset_names() -> list[str]:
    from ticketlab.data import dataset_choices
    return dataset_choices()


def _init_names() -> list[str]:
    from ticketlab.models import INITS
    return list(INITS)


def _criterion_names() -> list[str]:
    from ticketlab.pruning.criteria import criterion_names
    return criterion_names()


def _criterion(value: Any) -> Any:
    """The registered spelling (magnitude_init is large_init); unknown: left to validate()."""
    from ticketlab.pruning.criteria import canonical_criterion
    with contextlib.suppress(TicketlabError):
        return canonical_criterion(_lower(value))
    return _lower(value)


def _schedule_names() -> list[str]:
    from ticketlab.sparsify.schedules import SCHEDULES as SPARSITY_SCHEDULES
    return SPARSITY_SCHEDULES.names()


def _control_names() -> list[str]:
    from ticketlab.experiments.variants import VARIANTS
    return [n for n in VARIANTS.names() if n != "ticket"]


def _controls(value: Any) -> Any:
    """Registered spellings (shuffle is random), each once; unknown: left to validate()."""
    from ticketlab.experiments.variants import VARIANTS
    if not isinstance(value, tuple):
        return value
    names = [_lower(v) for v in value]
    return tuple(dict.fromkeys(VARIANTS.canonical(v) if v in VARIANTS else v for v in names))


@dataclass
class DataHparams:
    dataset: str = setting("digits", "registered dataset, or imagefolder:PATH (see `ticketlab "
                           "datasets`)", choices=_dataset_names, hash="always")
    validation_size: int | None = setting(
        None, "images held out for early stopping (default 5,000, a proportional share for "
        "small datasets)", hash="always")
    split_seed: int = setting(0, "seed of the validation split (the same for every trial)",
                              hash="always")
    image_size: int | None = setting(
        None, "side in pixels image folders are resized to (default 64); fixed-size datasets "
        "refuse it", metavar="PIXELS")

    def info(self) -> Any:
        """The dataset's registered facts (`data.DatasetInfo`) at this image size."""
        from ticketlab.data import get_dataset
        return get_dataset(self.dataset, self.image_size)

    def load(self, data_dir: Path | None = None, download: bool = False,
             device: Any = "cpu") -> Any:
        """The dataset (`data.Dataset`) these settings describe, on `device`."""
        from ticketlab.data import load_dataset
        return load_dataset(self.dataset, data_dir=data_dir, download=download, device=device,
                            validation_size=self.validation_size, split_seed=self.split_seed,
                            image_size=self.image_size)


@dataclass
class ModelHparams:
    model: str = setting("lenet_300_100", "registered model (see `ticketlab models`)",
                         choices=_model_names, canonical=_lower, hash="always")
    init: str = setting("glorot_normal", "initialisation of conv and linear weights (the "
                        "paper's is glorot_normal)", choices=_init_names, canonical=_lower,
                        hash="always")


@dataclass
class TrainingHparams:
    optimizer: str = setting("adam", "the optimizer", choices=OPTIMIZERS, canonical=_lower,
                             hash="always")
    lr: float = setting(1.2e-3, "learning rate (the peak, after warm-up)", hash="always")
    momentum: float = setting(0.0, "SGD momentum", hash="always")
    nesterov: bool = setting(False, "Nesterov momentum", action="store_true", hash="always")
    weight_decay: float = setting(0.0, "L2 weight decay", hash="always")
    norm_bias_weight_decay: float | None = setting(
        None, "weight decay of normalisation weights and all biases (default: --weight-decay)",
        metavar="WD")
    schedule: str = setting("constant", "constant, or step (x gamma at each milestone)",
                            choices=SCHEDULES, canonical=_lower, hash="always")
    milestones: tuple[str, ...] = setting((), "learning-rate milestones, e.g. 80ep,120ep or "
                                          "20000it,25000it", metavar="STEPS", canonical=_steps,
                                          hash="always")
    gamma: float = setting(0.1, "learning-rate factor at each milestone", hash="always")
    warmup: str = setting("0it", "linear warm-up length, e.g. 10000it", metavar="STEPS",
                          canonical=_steps, hash="always")
    train: str = setting("40ep", "budget per level, e.g. 50000it or 40ep", metavar="STEPS",
                         canonical=_steps, hash="always")
    batch_size: int = setting(60, "examples per step", hash="always")
    eval_every: str = setting("100it", "evaluation interval, e.g. 100it", metavar="STEPS",
                              canonical=_steps, hash="always")
    augment: str = setting("auto", "training-batch augmentation: auto (the dataset's: "
                           "crop_flip for CIFAR and image folders, none for digits and MNIST), "
                           "none, flip, or crop_flip (random crop with 4-pixel padding and "
                           "horizontal flip)", choices=AUGMENTS, canonical=_lower)
    sparse_below: float | None = setting(
        None, "train masked linear layers whose density is at most this fraction with sparse "
        "kernels (kept weights only; layers of at least 65,536 weights; docs/"
        "full_reproduction.md): faster below about 0.12 on a CPU, equal up to float rounding, "
        "which compounds over training, so it names the run; 0 means never, as the default",
        metavar="DENSITY", canonical=_zero_is_none)
    # Part of the hash when on: a run's metrics.csv files all measure the same evaluations.
    test_curve: bool = setting(
        False, "evaluate the test set at every evaluation, for curves of test accuracy over "
        "training (the paper's Figure 3); by default only at new validation minima and at the "
        "end, which is all early stopping reads", action="optional")


@dataclass
class PruningHparams:
    scope: str = setting("layerwise", "prune each layer by its rate, or rank all prunable "
                         "weights together", choices=SCOPES, canonical=_lower, hash="always")
    rates: dict[str, float] = setting(
        help="layer-wise rate per group of the model's prunable weights (conv, fc, output, "
        "shortcut)", factory=lambda: dict(PAPER_RATES), metavar="G=R,...", hash="always")
    rate: float | None = setting(None, "fraction of the remaining weights pruned per level: "
                                 "for every group (layerwise) or overall (global; default 0.2)",
                                 hash="always")
    exclude: tuple[str, ...] = setting((), "groups never pruned, e.g. output (always added at a "
                                       "structured granularity, where the output layer's rows "
                                       "are the classes)", metavar="GROUPS", hash="always")
    criterion: str = setting("large_final", "which weights to keep (Zhou et al.; large_final is "
                             "magnitude pruning; snip, grasp, synflow score the network at "
                             "the rewind point, pruning at initialisation)", metavar="NAME",
                             choices=_criterion_names, canonical=_criterion)
    criterion_examples: int | None = setting(
        None, "training examples snip or grasp scores with (default: the papers', snip one "
        "batch of 100, grasp 10 per class)", metavar="N")
    threshold: float | None = setting(
        None, "one-shot by threshold instead (the course project's LF mask): keep |w| > "
        "mean|w| + ALPHA * std(w) over all prunable trained weights; the density follows from "
        "ALPHA", metavar="ALPHA")
    granularity: str = setting(
        "weight", "what one pruning decision removes: a weight, or a whole filter (conv output "
        "channel) / row (linear output neuron), channel / column (input), kernel; filter and "
        "row are one granularity (each layer pruned by its kind), so are channel and column; "
        "the output layer is then left unpruned (--exclude output is implied)",
        choices=GRANULARITIES, canonical=_lower)
    reduce: str = setting("mean", "how a group's per-weight scores become one score: their "
                          "mean, or their l1 or l2 norm. Within a layer (groups of one size) "
                          "mean and l1 rank alike; across layers (global) a norm grows with "
                          "group size and empties the layers with small groups first",
                          choices=REDUCTIONS, canonical=_lower)

    def rates_arg(self) -> float | dict[str, float]:
        """What `prune` takes: the global rate, or one rate / {group: rate} layer-wise."""
        if self.scope == "global":
            return 0.2 if self.rate is None else self.rate
        return self.rate if self.rate is not None else dict(self.rates)


@dataclass
class SparsifyHparams:
    """Gradual pruning inside one training run (`ticketlab sparsify`, `sparsify.Sparsifier`)."""

    target: float | None = setting(
        None, "final sparsity, the fraction of prunable weights removed (0.9 keeps 10%)",
        metavar="FRACTION")
    sparsity_schedule: str = setting(
        "agp", "how sparsity grows over the pruning window (see docs/sparsify/)",
        choices=_schedule_names, canonical=_lower, metavar="NAME")
    prune_rounds: int = setting(3, "pruning steps of the iterative schedule", metavar="N")
    prune_start: str = setting("0it", "start of the pruning window, e.g. 1ep", metavar="STEP",
                               canonical=_steps)
    prune_end: str | None = setting(None, "end of the pruning window, e.g. 8ep (default: the "
                                    "end of training)", metavar="STEP", canonical=_steps)
    prune_every: str = setting("1it", "how often the schedule is applied, e.g. 100it",
                               metavar="STEP", canonical=_steps)
    lth: bool = setting(False, "fasterai's lth: after each pruning step, reset the kept weights "
                        "(and batch norm) to the --rewind point and the optimizer state to "
                        "fresh, within the one run", action="store_true")
    reset_end: bool = setting(False, "fasterai's reset_end: also keep the final mask on the "
                              "--rewind point's state (rewind.safetensors, a ticket to "
                              "retrain) beside the trained final weights",
                              action="store_true")


@dataclass
class ExperimentConfig:
    data: DataHparams = field(default_factory=DataHparams)
    model: ModelHparams = field(default_factory=ModelHparams)
    training: TrainingHparams = field(default_factory=TrainingHparams)
    pruning: PruningHparams = field(default_factory=PruningHparams)
    sparsify: SparsifyHparams = field(default_factory=SparsifyHparams)
    rewind: str = setting("0it", "rewind point: 0it (the original ticket) or later, e.g. 500it "
                          "or 1ep (late rewinding); `find` also takes a list, e.g. "
                          "0,100,500,2000it: one run per point, sharing the dense training",
                          metavar="STEP", canonical=_steps, hash="always")
    one_shot: tuple[float, ...] = setting(
        (), "one-shot pruning instead of iterative: prune the trained dense network once to "
        "each density, e.g. 0.5,0.2,0.1,0.05,0.01 (fractions kept)", metavar="DENSITIES")
    # What to compute (not hashed):
    levels: int = setting(10, "pruning levels after the dense level 0", hash="never")
    controls: tuple[str, ...] = setting(
        ("reinit", "random"), "controls and mask actions trained beside each ticket, or none "
        "(shuffle is random: the ticket's per-layer counts at random places)",
        metavar="LIST", choices=_control_names, canonical=_controls, hash="never")
    seeds: tuple[int, ...] = setting((0,), "independent trials, e.g. 0,1,2", metavar="LIST",
                                     hash="never")

    SECTIONS: ClassVar[tuple[str, ...]] = ("data", "model", "training", "pruning", "sparsify")
    UNHASHED: ClassVar[tuple[str, ...]]  # what to compute, not what it is: set below

    def science(self) -> dict[str, Any]:
        """The part that determines every number of every unit; it names the run.

        Each setting follows its hash rule (`config.fields`): settings added after the
        first version are left out at their defaults, so older runs keep their names."""
        c = self.canonical()
        d = c.to_dict()
        for flat in FIELDS.values():
            rule = flat.meta["hash"]
            owner = d if flat.section is None else d[flat.section]
            if rule == "never" or (rule == "unless_default" and
                                   _jsonable(_value(c, flat)) == _canonical_default(flat)):
                owner.pop(flat.key)
        for section in self.SECTIONS:
            if not d[section]:  # a section all at defaults (sparsify, in a find run)
                d.pop(section)
        return d

    @property
    def kind(self) -> str:
        if self.sparsify.target is not None:
            return "sparsify"
        return "oneshot" if self.one_shot or self.pruning.threshold is not None else "imp"

    @property
    def n_levels(self) -> int:
        """Levels after the dense level 0: one per one-shot density (or the one threshold
        mask), else `levels`."""
        if self.pruning.threshold is not None:
            return 1
        return len(self.one_shot) if self.one_shot else self.levels

    def dense_science(self) -> dict[str, Any]:
        """What level 0 (the dense training) depends on: not pruning, not one-shot, not the
        sparse kernels' threshold (below 1, a dense layer never qualifies), not the rewind
        point (it only chooses which step level 0 keeps a snapshot of: a run borrowing level 0
        from a run with another rewind point replays the first steps to its own,
        `experiments.imp.adopt_dense`)."""
        d = self.science()
        d.pop("pruning")
        d.pop("rewind")
        d.pop("one_shot", None)
        d.pop("sparsify", None)
        d.get("training", {}).pop("sparse_below", None)
        return d

    def run_hash(self) -> str:
        blob = json.dumps({"kind": "imp", **self.science()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def run_name(self) -> str:
        c = self.canonical()
        dataset = c.data.dataset
        if ":" in dataset:  # imagefolder:/some/path -> imagefolder-path (one directory name)
            family, path = dataset.split(":", 1)
            dataset = f"{family}-{Path(path).name or 'root'}"
        return f"{c.kind}_{c.model.model}_{dataset}_{self.run_hash()}"

    def canonical(self) -> ExperimentConfig:
        """A copy with one spelling per setting, so equivalent spellings name one run:
        steps as `<count><unit>`, the dataset by its registered name, choices in lower case,
        whole numbers in number settings as floats. Values already canonical are unchanged,
        so runs named before canonicalisation keep their names; an unknown value is left for
        validate() to refuse."""
        from ticketlab.data import get_dataset

        values: dict[str, Any] = {}
        for key, flat in FIELDS.items():
            value = as_floats(_value(self, flat), flat.hint)
            canon = flat.meta["canonical"]
            values[key] = canon(value) if canon else value
        with contextlib.suppress(TicketlabError):  # unknown: validate() names the choices
            values["dataset"] = _dataset_name(get_dataset(values["dataset"]).name)
        if values["granularity"] in GRANULARITIES[1:] and "output" not in values["exclude"]:
            values["exclude"] = (*values["exclude"], "output")  # a pruned output row: a class
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
        from ticketlab.experiments.variants import check_controls
        from ticketlab.models import INITS, MODELS
        from ticketlab.pruning.at_init import AT_INIT, check_at_init
        from ticketlab.pruning.criteria import canonical_criterion, check_alpha

        t, p = self.training, self.pruning
        MODELS.canonical(self.model.model)
        _choice("init", self.model.init, INITS)
        info = self.data.info()  # refuses an unknown dataset or a misplaced image size
        _choice("optimizer", t.optimizer, OPTIMIZERS)
        _choice("schedule", t.schedule, SCHEDULES)
        _choice("scope", p.scope, SCOPES)
        _choice("augment", t.augment, AUGMENTS)
        _choice("granularity", p.granularity, GRANULARITIES)
        _choice("reduce", p.reduce, REDUCTIONS)
        if p.threshold is not None and p.granularity != "weight":
            raise TicketlabError("--threshold keeps single weights: use it with --granularity "
                                 "weight, or drop it")
        self._check_sparsify()
        canonical_criterion(p.criterion)
        if p.criterion in AT_INIT:
            check_at_init(p.criterion, scope=p.scope, exclude=p.exclude,
                          granularity=p.granularity, threshold=p.threshold)
            if self.sparsify.target is not None:
                raise TicketlabError(f"criterion {p.criterion} scores the network at its "
                                     "rewind point once per level: use it with find")
        if p.criterion_examples is not None:
            if p.criterion not in AT_INIT or AT_INIT.get(p.criterion).examples(1) == 0:
                raise TicketlabError("--criterion-examples is for the criteria that score "
                                     "with data (snip, grasp): drop it")
            if p.criterion_examples < 1:
                raise TicketlabError(f"--criterion-examples must be >= 1, got "
                                     f"{p.criterion_examples}")
        check_controls(self.controls, self)
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
        if t.sparse_below is not None:
            _number("sparse-below", t.sparse_below, "in [0, 1) (sparse kernels never pay for "
                    "a dense layer)", 0 <= t.sparse_below < 1, "--sparse-below 0.12")
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
        self._check_model(info)

    def _check_sparsify(self) -> None:
        from ticketlab.sparsify.schedules import SCHEDULES as SPARSITY_SCHEDULES

        s = self.sparsify
        if s.target is None:
            changed = [k for k, f in FIELDS.items() if f.section == "sparsify" and
                       _jsonable(_value(self, f)) != _canonical_default(f)]
            if changed:
                raise TicketlabError(f"{', '.join(changed)} set without a target sparsity: "
                                     "gradual pruning is `ticketlab sparsify --target 0.9`")
            return
        if self.training.sparse_below is not None:
            raise TicketlabError("--sparse-below trains fixed masks (find, one-shot); gradual "
                                 "pruning changes its mask while training: leave it out")
        if self.training.test_curve:
            raise TicketlabError("--test-curve is what gradual pruning always does (its early "
                                 "stop is chosen after the mask settles): leave it out")
        _number("target sparsity", s.target, "in (0, 1)", 0 < s.target < 1, "--target 0.9")
        SPARSITY_SCHEDULES.canonical(s.sparsity_schedule)
        if s.prune_rounds < 1:
            raise TicketlabError(f"prune rounds must be >= 1, got {s.prune_rounds}")
        for step in (s.prune_start, s.prune_every, *([s.prune_end] if s.prune_end else [])):
            Step.parse(step)
        if Step.parse(s.prune_every).count == 0:
            raise TicketlabError("--prune-every must be positive, e.g. 1it or 100it")
        if self.one_shot or self.pruning.threshold is not None:
            raise TicketlabError("a sparsify run prunes on its schedule: drop --one-shot and "
                                 "--threshold (they choose find's one-shot masks)")
        if Step.parse(self.rewind).count and not (s.lth or s.reset_end):
            raise TicketlabError(f"--rewind {self.rewind} does nothing in a sparsify run "
                                 "without --lth or --reset-end: add one, or drop --rewind")

    def sparsify_window(self, iterations_per_epoch: int) -> tuple[int, int, int]:
        """(start, end, every) of a sparsify run's pruning, in iterations, checked."""
        s, total = self.sparsify, self.budget(iterations_per_epoch)[1]
        start = Step.parse(s.prune_start).iterations(iterations_per_epoch)
        end = (Step.parse(s.prune_end).iterations(iterations_per_epoch) if s.prune_end
               else total)
        if not start <= end <= total:
            raise TicketlabError(
                f"the pruning window {s.prune_start}..{s.prune_end or self.training.train} "
                f"({start}..{end} it) must lie within training ({total} it): set --prune-start "
                "and --prune-end inside --train")
        return start, end, Step.parse(s.prune_every).iterations(iterations_per_epoch)

    def _check_model(self, info: Any) -> None:
        """Builds the model on the dataset's input shape (no data loaded) and runs one dummy
        forward, so a model that does not fit the images, or a pruning group it does not
        have, is refused before anything trains."""
        from ticketlab.models import prunable_groups
        from ticketlab.pruning import Mask, check_structured

        name, shape = self.model.model, tuple(info.input_shape)
        try:
            model = _dummy_forward(name, shape, info.num_classes)
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
        check_structured(Mask.dense(model), p.granularity, p.reduce, p.criterion, p.exclude)

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
    for side in range(max(shape[1:]) + 1, 257):
        try:
            _dummy_forward(name, (shape[0], side, side), num_classes)
            return side
        except (RuntimeError, ValueError):
            continue
    return None


def _dummy_forward(name: str, shape: tuple[int, ...], num_classes: int) -> Any:
    """The model built on the meta device (no memory, no arithmetic: a 20M-parameter VGG
    costs nothing) and run on one dummy image in eval mode (batch norm in training mode
    refuses a 1x1 map of one image); raises what a misfit raises."""
    import torch

    from ticketlab.models import MODELS

    with torch.device("meta"), torch.no_grad():
        model = MODELS.get(name)(shape, num_classes).eval()
        model(torch.zeros(1, *shape))
    return model


def _dataset_name(name: str) -> str:
    """The registered name; an image folder's path made absolute (one run per folder)."""
    if name.startswith("imagefolder:"):
        return "imagefolder:" + str(Path(name.split(":", 1)[1]).expanduser().resolve())
    return name


def _value(config: ExperimentConfig, flat: FlatField) -> Any:
    return getattr(config if flat.section is None else getattr(config, flat.section), flat.key)


def _canonical_default(flat: FlatField) -> Any:
    value = as_floats(flat.default, flat.hint)
    canon = flat.meta["canonical"]
    return _jsonable(canon(value) if canon else value)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


# ---------------------------------------------------------------------------- flat keys

FIELDS = flat_fields(ExperimentConfig, ExperimentConfig.SECTIONS)  # unique keys, or TypeError
ExperimentConfig.UNHASHED = tuple(k for k, f in FIELDS.items() if f.meta["hash"] == "never")


def field_index() -> dict[str, str | None]:
    """Flat key (a CLI flag / TOML key, with underscores) -> its section (None: top level)."""
    return {k: f.section for k, f in FIELDS.items()}


def _typed_fields() -> dict[str, tuple[str | None, Any]]:
    """Flat key -> (section, type hint), from the dataclasses' own annotations."""
    return {k: (f.section, f.hint) for k, f in FIELDS.items()}


def _replace_flat(config: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """A copy of `config` with flat keys set (no checks)."""
    config = dataclasses.replace(
        config, **{s: dataclasses.replace(getattr(config, s)) for s in config.SECTIONS}
    )
    for key, value in values.items():
        section = FIELDS[key].section
        setattr(config if section is None else getattr(config, section), key, value)
    return config


def apply_overrides(config: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """Sets flat keys (e.g. {"lr": 1e-3, "model": "conv2"}) on a copy of `config`, each
    checked against its field's type, and returns the canonical spelling of the result."""
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key not in FIELDS:
            raise TicketlabError(f"unknown setting '{key}': see ticketlab find --help for names")
        flat = FIELDS[key]
        value = check_type(key, value, flat.hint, flat.default)
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
