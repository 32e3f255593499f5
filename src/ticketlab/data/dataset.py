"""A dataset ready for training: seeded validation split, normalised tensors on the device.

As in Frankle & Carbin, a fixed validation set is held out of the training set with its
own seed (`split_seed`), so it is the same for every trial; the test set is untouched.
Normalisation statistics come from the remaining training images only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ticketlab.config import derive_seed
from ticketlab.data.registry import get_dataset
from ticketlab.errors import TicketlabError


@dataclass(repr=False, eq=False)
class Dataset:
    """float32 images (N x C x H x W) and int64 labels, already on one device."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]  # per channel, in units of the [0, 1]-scaled pixels
    std: tuple[float, ...]
    augment: str = "none"  # what `--augment auto` means for this dataset (DatasetInfo.augment)

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def black_pixel(self) -> tuple[float, ...]:
        """Per channel, the normalised value of the darkest raw pixel: what padding the raw
        image with zeros before normalising gives (torchvision's and OpenLTH's crop)."""
        return tuple(-m / s for m, s in zip(self.mean, self.std, strict=True))

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def iterations_per_epoch(self, batch_size: int) -> int:
        """Full batches per epoch: the last partial batch is dropped."""
        if batch_size < 1 or self.n_train // batch_size < 1:
            raise TicketlabError(
                f"batch size {batch_size} does not fit the {self.n_train} training images of "
                f"{self.name}: choose --batch-size between 1 and {self.n_train}"
            )
        return self.n_train // batch_size

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """The training-index permutation for (seed, epoch): regenerable to resume anywhere."""
        g = torch.Generator(device="cpu").manual_seed(derive_seed(seed, "data", epoch))
        return torch.randperm(self.n_train, generator=g).to(self.device)

    def __repr__(self) -> str:
        c, h, w = self.input_shape
        return (
            f"Dataset({self.name}: {self.n_train} train / {len(self.y_val)} val / "
            f"{len(self.y_test)} test, {c}x{h}x{w}, {self.num_classes} classes, {self.device})"
        )


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    validation_size: int | None = None,
    split_seed: int = 0,
    image_size: int | None = None,
) -> Dataset:
    """Loads `name`, holds out a seeded validation set and normalises with train statistics.

    `image_size`: the side image folders are decoded at (None: 64); fixed-size datasets
    refuse it."""
    info = get_dataset(name, image_size)
    raw = info.loader(data_dir, download)
    n = len(raw.y_train)
    n_val = _validation_size(info.name, n, info.validation_size, validation_size)

    perm = torch.randperm(n, generator=torch.Generator(device="cpu").manual_seed(split_seed))
    val_idx = np.sort(perm[:n_val].numpy())
    train_idx = np.sort(perm[n_val:].numpy())
    x_train = raw.x_train[train_idx]

    lo, hi = raw.value_range
    mean, std = _channel_stats(x_train)  # in natural units
    mean_scaled, std_scaled = (mean - lo) / (hi - lo), std / (hi - lo)
    shift = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    scale = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def images(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)
        return t.sub_(shift).div_(scale).to(device)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device)

    c, h, w = raw.x_train.shape[1:]
    return Dataset(
        name=info.name,
        x_train=images(x_train),
        y_train=labels(raw.y_train[train_idx]),
        x_val=images(raw.x_train[val_idx]),
        y_val=labels(raw.y_train[val_idx]),
        x_test=images(raw.x_test),
        y_test=labels(raw.y_test),
        num_classes=raw.num_classes,
        input_shape=(c, h, w),
        mean=tuple(float(m) for m in mean_scaled),
        std=tuple(float(s) for s in std_scaled),
        augment=info.augment,
    )


def _validation_size(name: str, n_train: int, default: int | None, requested: int | None) -> int:
    if requested is not None:
        size = requested
    elif default is not None:
        size = default
    else:
        size = round(n_train * 5000 / 60000)  # Frankle & Carbin's MNIST share
    if not 1 <= size < n_train:
        raise TicketlabError(
            f"validation size {size} does not fit the {n_train} training images of {name}: "
            f"choose --validation-size between 1 and {n_train - 1} (early stopping needs one)"
        )
    return size


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std in float64; exact via histograms for uint8."""
    means, stds = [], []
    for c in range(x.shape[1]):
        channel = x[:, c]
        if x.dtype == np.uint8:
            flat = torch.from_numpy(np.ascontiguousarray(channel)).reshape(-1)
            counts = torch.bincount(flat, minlength=256).double().numpy()  # 2x np.bincount
            values = np.arange(256, dtype=np.float64)
            mean = counts @ values / counts.sum()
            var = counts @ (values - mean) ** 2 / counts.sum()
        else:
            t = torch.from_numpy(np.ascontiguousarray(channel)).to(torch.float64)
            var_t, mean_t = torch.var_mean(t, correction=0)
            mean, var = float(mean_t), float(var_t)
        means.append(mean)
        stds.append(np.sqrt(var) if var > 0 else 1.0)  # a constant channel is left unscaled
    return np.array(means), np.array(stds)
