"""The datasets by name: adding one is one `register` call with a loader and its facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ticketlab.data import digits
from ticketlab.data.mnist import load_idx_dataset
from ticketlab.data.raw import RawSplits
from ticketlab.errors import TicketlabError

# (data_dir, download) -> the official splits. A "cifar10" reader fits the same shape.
Loader = Callable[[str | Path | None, bool], RawSplits]


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's loader and the facts a listing shows without loading it."""

    name: str
    loader: Loader
    n_train: int
    n_test: int
    input_shape: tuple[int, int, int]
    num_classes: int
    source: str
    validation_size: int | None = None  # default held out; None: round(n_train * 5000/60000)
    aliases: tuple[str, ...] = ()

    def describe(self) -> str:
        c, h, w = self.input_shape
        return (
            f"{self.name}: {self.n_train:,} train / {self.n_test:,} test images, {c}x{h}x{w}, "
            f"{self.num_classes} classes; {self.source}"
        )


_DATASETS: dict[str, DatasetInfo] = {}
_ALIASES: dict[str, str] = {}


def register(info: DatasetInfo) -> None:
    for key in (info.name, *info.aliases):
        if key in _ALIASES:
            raise ValueError(f"dataset name '{key}' is already registered")
        _ALIASES[key] = info.name
    _DATASETS[info.name] = info


def dataset_names() -> list[str]:
    return sorted(_DATASETS)


def dataset_choices() -> list[str]:
    """What `--help` and messages offer: every registered name."""
    return dataset_names()


def get_dataset(name: str) -> DatasetInfo:
    """The dataset registered under `name` or one of its aliases (case-insensitive)."""
    key = str(name).strip().lower()
    if key not in _ALIASES:
        choices = ", ".join(dataset_names())
        raise TicketlabError(f"unknown dataset '{name}': choose one of {choices}")
    return _DATASETS[_ALIASES[key]]


def describe_datasets() -> list[str]:
    """One line per dataset, for `ticketlab datasets`."""
    return [_DATASETS[n].describe() for n in dataset_names()]


def load_raw(name: str, data_dir: str | Path | None = None, download: bool = False) -> RawSplits:
    return get_dataset(name).loader(data_dir, download)


register(DatasetInfo(
    name="mnist",
    loader=partial(load_idx_dataset, "mnist"),
    n_train=60_000, n_test=10_000, input_shape=(1, 28, 28), num_classes=10,
    source="LeCun, Cortes & Burges (files needed: --data-dir or --download)",
    validation_size=5_000,
))
register(DatasetInfo(
    name="fashion-mnist",
    loader=partial(load_idx_dataset, "fashion-mnist"),
    n_train=60_000, n_test=10_000, input_shape=(1, 28, 28), num_classes=10,
    source="Xiao et al. 2017 (Zalando), MIT license (files needed: --data-dir or --download)",
    validation_size=5_000,
    aliases=("fashion_mnist",),
))
register(DatasetInfo(
    name="digits",
    loader=lambda data_dir, download: digits.load_digits(),
    n_train=digits.N_TRAIN, n_test=digits.N_TEST, input_shape=(1, 8, 8), num_classes=10,
    source="UCI optical digits bundled with scikit-learn (no download; fixed 20% test split)",
))
