"""Reader for the MNIST-format datasets (MNIST, Fashion-MNIST): four gzipped IDX files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ticketlab.data.idx import check_md5, read_idx
from ticketlab.data.raw import RawSplits
from ticketlab.data.sources import SOURCES, locate_files
from ticketlab.errors import TicketlabError


def load_idx_dataset(name: str, data_dir: str | Path | None, download: bool) -> RawSplits:
    """The official splits; each file's md5 is checked (once per process) before parsing."""
    paths = locate_files(name, data_dir, download)
    arrays = {}
    for role, path in paths.items():
        check_md5(path, SOURCES[name].files[role].md5)
        arrays[role] = read_idx(path)
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise TicketlabError(
                f"{name} {split} files hold images {x.shape} and labels {y.shape}, expected "
                f"N x H x W and N: replace the files in {paths[f'{split}_images'].parent} "
                "with the original ones"
            )
    return RawSplits(
        x_train=arrays["train_images"][:, None],
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=arrays["test_images"][:, None],
        y_test=arrays["test_labels"].astype(np.int64),
        num_classes=10,
        value_range=(0.0, 255.0),
    )
