"""Shared fixtures: the shared MNIST files and a tiny, fast IMP configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from ticketlab.config import ExperimentConfig, Runtime, apply_overrides

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST files not found in {SHARED_DATA}")
    return SHARED_DATA


def tiny_config(**overrides) -> ExperimentConfig:
    """LeNet-300-100 on digits, 60 iterations per level: a few seconds per run."""
    base = {"dataset": "digits", "model": "lenet_300_100", "train": "60it",
            "eval_every": "20it", "levels": 2, "seeds": (0,), "controls": ("reinit", "random")}
    return apply_overrides(ExperimentConfig(), {**base, **overrides})


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return Runtime(out=tmp_path / "runs", device="cpu", quiet=True)
