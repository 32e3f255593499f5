"""What every dataset reader returns: the official splits, before any held-out validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RawSplits:
    """Official train/test splits as numpy arrays; images N x C x H x W, labels int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    value_range: tuple[float, float]  # natural pixel range, e.g. (0, 255); scaled to [0, 1]

    def __post_init__(self) -> None:
        # A reader bug, not a user error: fail loudly before anything trains on it.
        splits = (self.x_train, self.y_train, "train"), (self.x_test, self.y_test, "test")
        for x, y, split in splits:
            if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(f"{split} split: images {x.shape} / labels {y.shape} mismatch")
            if y.dtype != np.int64 or (len(y) and not 0 <= y.min() <= y.max() < self.num_classes):
                raise ValueError(f"{split} labels must be int64 in [0, {self.num_classes})")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train {self.x_train.shape} and test {self.x_test.shape} differ")
