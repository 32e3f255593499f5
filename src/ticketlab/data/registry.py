"""The datasets by name: adding one is one `register` call with a loader and its facts.

Fixed datasets and aliases live in one `ticketlab.registry.Registry`; `imagefolder:PATH` is a
family of it, whose facts come from listing the folder (no decoding).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ticketlab.data import cifar, digits, imagefolder
from ticketlab.data.mnist import load_idx_dataset
from ticketlab.data.raw import RawSplits
from ticketlab.errors import TicketlabError
from ticketlab.registry import Registry

# (data_dir, download) -> the official splits.
Loader = Callable[[str | Path | None, bool], RawSplits]
MIN_IMAGE_SIZE = 8


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
    # Datasets decoded at a chosen size (image folders): image size -> the info at that size.
    # None: the images have one fixed size.
    resize: Callable[[int], DatasetInfo] | None = None
    # What `--augment auto` means for it: "crop_flip" for natural images (CIFAR's standard
    # augmentation, Frankle & Carbin and OpenLTH), "none" for digits, where a flip changes
    # the class.
    augment: str = "none"

    def describe(self) -> str:
        c, h, w = self.input_shape
        return (
            f"{self.name}: {self.n_train:,} train / {self.n_test:,} test images, {c}x{h}x{w}, "
            f"{self.num_classes} classes; {self.source}"
        )


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register(info: DatasetInfo) -> None:
    DATASETS.add(info.name, info, info.source, info.aliases)


def dataset_names() -> list[str]:
    """The fixed names, sorted (families such as imagefolder:PATH are not enumerable)."""
    return sorted(DATASETS.names())


def dataset_choices() -> list[str]:
    """What `--help` and messages offer: the fixed names, then the families' patterns."""
    return [*dataset_names(), *(f.pattern for f in DATASETS.families())]


def get_dataset(name: str, image_size: int | None = None) -> DatasetInfo:
    """The dataset registered under `name` or an alias (case-insensitive), or an image folder.

    `image_size` is the side image folders are decoded at (default 64); datasets with a
    fixed image size refuse it.
    """
    info = DATASETS.get(name)
    if image_size is None:
        return info
    if info.resize is None:
        c, h, w = info.input_shape
        raise TicketlabError(
            f"dataset {info.name} has fixed {c}x{h}x{w} images: leave out --image-size, which "
            "sets the size that imagefolder:PATH datasets are decoded at"
        )
    if isinstance(image_size, bool) or not isinstance(image_size, int) \
            or image_size < MIN_IMAGE_SIZE:
        raise TicketlabError(f"image size must be an integer >= {MIN_IMAGE_SIZE} (pixels per "
                             f"side), got {image_size!r}: e.g. --image-size 64")
    return info.resize(image_size)


def describe_datasets() -> list[str]:
    """One line per dataset, then one per family, for `ticketlab datasets`."""
    lines = [DATASETS.get(n).describe() for n in dataset_names()]
    return lines + [f"{pattern}: {doc}" for pattern, doc in DATASETS.listing()[len(DATASETS):]]


def load_raw(name: str, data_dir: str | Path | None = None, download: bool = False,
             image_size: int | None = None) -> RawSplits:
    return get_dataset(name, image_size).loader(data_dir, download)


register(DatasetInfo(
    name="cifar10",
    loader=partial(cifar.load_cifar, "cifar10"),
    n_train=50_000, n_test=10_000, input_shape=(3, 32, 32), num_classes=10,
    source="Krizhevsky 2009, binary version (files needed: --data-dir or --download)",
    validation_size=5_000,  # Frankle & Carbin hold out 5,000 training images for validation
    augment="crop_flip",
    aliases=("cifar-10", "cifar_10"),
))
register(DatasetInfo(
    name="cifar100",
    augment="crop_flip",
    loader=partial(cifar.load_cifar, "cifar100"),
    n_train=50_000, n_test=10_000, input_shape=(3, 32, 32), num_classes=100,
    source="Krizhevsky 2009, binary version, fine labels (files needed: --data-dir or "
           "--download)",
    validation_size=5_000,
    aliases=("cifar-100", "cifar_100"),
))
register(DatasetInfo(
    name="digits",
    loader=lambda data_dir, download: digits.load_digits(),
    n_train=digits.N_TRAIN, n_test=digits.N_TEST, input_shape=(1, 8, 8), num_classes=10,
    source="UCI optical digits bundled with scikit-learn (no download; fixed 20% test split)",
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
    name="mnist",
    loader=partial(load_idx_dataset, "mnist"),
    n_train=60_000, n_test=10_000, input_shape=(1, 28, 28), num_classes=10,
    source="LeCun, Cortes & Burges (files needed: --data-dir or --download)",
    validation_size=5_000,
))


def image_folder_info(path: str, size: int = imagefolder.DEFAULT_SIZE) -> DatasetInfo:
    """The facts of `imagefolder:PATH` at `size`, from listing the folder (cheap)."""
    s = imagefolder.scan(path)
    split = "its train/val split" if s.split_given else "a fixed 20% of each class as test set"
    return DatasetInfo(
        name=f"imagefolder:{path}",
        loader=lambda data_dir, download: imagefolder.load_image_folder(path, size, data_dir),
        n_train=len(s.train), n_test=len(s.test), input_shape=(3, size, size),
        num_classes=len(s.classes),
        source=f"class-per-folder images in {s.root}, {split}, decoded at {size}x{size}",
        resize=partial(image_folder_info, path),
        augment="crop_flip",
    )


def _image_folder(match: re.Match[str]) -> DatasetInfo:
    return image_folder_info(match["path"])


DATASETS.add_family(
    "imagefolder:<path>", r"imagefolder:(?P<path>.+)", _image_folder,
    "class-per-folder JPEG/PNG images (PATH/train/<class>/ with PATH/val/<class>/, or "
    f"PATH/<class>/), decoded once at --image-size (default {imagefolder.DEFAULT_SIZE}) and "
    "cached beside them",
    examples=("imagefolder:~/data/imagenette2-160",),
)
