"""The configuration: dataclasses that are the only spec passed around.

- `step`: training durations and points (`500it`, `2ep`) and derived seeds;
- `fields`: `setting()`, a field carrying its help, parser and hash rule, and type checks;
- `experiment`: `ExperimentConfig` (what a run computes; its science names the run);
- `runtime`: `Runtime` (how it runs; never changes a number).
"""

from ticketlab.config.experiment import (
    AUGMENTS,
    FIELDS,
    OPTIMIZERS,
    PAPER_RATES,
    SCHEDULES,
    SCOPES,
    DataHparams,
    ExperimentConfig,
    ModelHparams,
    PruningHparams,
    SparsifyHparams,
    TrainingHparams,
    _typed_fields,
    apply_overrides,
    field_index,
    load_toml,
)
from ticketlab.config.fields import FlatField, check_type, setting, type_name
from ticketlab.config.runtime import (
    RUNTIME_FIELDS,
    Runtime,
    check_device_name,
    runtime_hints,
)
from ticketlab.config.step import Step, derive_seed, parse_steps

__all__ = [
    "AUGMENTS", "FIELDS", "OPTIMIZERS", "PAPER_RATES", "RUNTIME_FIELDS", "SCHEDULES", "SCOPES",
    "DataHparams", "ExperimentConfig", "FlatField", "ModelHparams", "PruningHparams", "Runtime",
    "SparsifyHparams", "Step", "TrainingHparams", "_typed_fields", "apply_overrides",
    "check_device_name", "check_type", "derive_seed", "field_index", "load_toml", "parse_steps",
    "runtime_hints", "setting", "type_name",
]
