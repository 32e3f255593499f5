"""The 8x8 handwritten digits bundled with scikit-learn, with a fixed test split.

The set has no official test split; a fixed 20% one (a frozen legacy-numpy permutation,
whose stream numpy guarantees never to change) lets it stand in for MNIST in quick runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ticketlab.data.raw import RawSplits
from ticketlab.errors import TicketlabError

N_IMAGES = 1797
TEST_FRACTION = 0.2
N_TEST = round(N_IMAGES * TEST_FRACTION)  # 359
N_TRAIN = N_IMAGES - N_TEST  # 1438
_TEST_SPLIT_SEED = 0  # never change: it defines the digits test set


def load_digits() -> RawSplits:
    """The digits as uint8 (values 0..16), 1 x 8 x 8, split 1438 train / 359 test."""
    images, labels = _read()
    order = np.random.RandomState(_TEST_SPLIT_SEED).permutation(N_IMAGES)
    test, train = np.sort(order[:N_TEST]), np.sort(order[N_TEST:])
    return RawSplits(
        x_train=images[train],
        y_train=labels[train],
        x_test=images[test],
        y_test=labels[test],
        num_classes=10,
        value_range=(0.0, 16.0),
    )


def _read() -> tuple[np.ndarray, np.ndarray]:
    # Reading the CSV directly avoids importing scikit-learn (about a second).
    spec = importlib.util.find_spec("sklearn")
    origin = spec.origin if spec is not None else None
    csv = Path(origin).parent / "datasets" / "data" / "digits.csv.gz" if origin else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",")
        data, target = table[:, :-1], table[:, -1]
    else:
        try:
            from sklearn.datasets import load_digits as sklearn_digits
        except ImportError:
            raise TicketlabError(
                "the digits dataset ships with scikit-learn, which is not installed: "
                "pip install scikit-learn"
            ) from None
        bunch = sklearn_digits()
        data, target = bunch.data, bunch.target
    if data.shape != (N_IMAGES, 64) or target.shape != (N_IMAGES,):
        raise TicketlabError(
            f"scikit-learn's digits data has shape {data.shape}, expected ({N_IMAGES}, 64): "
            "reinstall scikit-learn"
        )
    return data.astype(np.uint8).reshape(N_IMAGES, 1, 8, 8), target.astype(np.int64)
