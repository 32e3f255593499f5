"""Shared fixtures: the shared MNIST files and a tiny, fast IMP configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A command run in-process sets torch's thread count for the whole process, as it
    should; put it back, so every test runs with the count the suite started with (1 and 2
    threads both get tested: OMP_NUM_THREADS=2 python -m pytest)."""
    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


def unit_files(root: Path) -> dict[str, object]:
    """Every unit's numbers (`RunStore.contents`): equal for runs that computed the same."""
    from ticketlab.experiments.store import RunStore
    return RunStore(root).contents()
