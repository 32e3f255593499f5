"""Shared fixtures: the real MNIST files (read-only, never copied into the repo)."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

# /work/main/tests/data/conftest.py -> /work/shared/data
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _shared(folder: str) -> Path:
    path = SHARED_DATA / folder
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real {folder} files not found in {path} (expected ../shared/data/{folder})")
    return path


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return _shared("mnist")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    return _shared("fashion-mnist")


@pytest.fixture
def write_idx() -> Callable[..., Path]:
    """Writes a gzipped IDX file: a header (magic, type code, dims) then the payload."""

    def write(path: Path, array: np.ndarray, code: int = 0x08, header: bytes | None = None) -> Path:
        if header is None:
            dims = np.array(array.shape, dtype=">i4").tobytes()
            header = bytes([0, 0, code, array.ndim]) + dims
        big_endian = array.astype(array.dtype.newbyteorder(">"))
        path.write_bytes(gzip.compress(header + big_endian.tobytes()))
        return path

    return write
