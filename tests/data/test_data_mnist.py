"""MNIST and Fashion-MNIST from the real files (class counts as published in SOURCES.md)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ticketlab.data import load_dataset, load_raw
from ticketlab.errors import TicketlabError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_dataset("mnist", data_dir=mnist_dir.parent)


def test_raw_files(mnist_dir):
    raw = load_raw("mnist", mnist_dir.parent)
    assert raw.x_train.shape == (60000, 1, 28, 28) and raw.x_train.dtype == np.uint8
    assert raw.x_test.shape == (10000, 1, 28, 28) and raw.y_test.dtype == np.int64
    assert np.bincount(raw.y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(raw.y_test).tolist() == TEST_COUNTS
    assert raw.value_range == (0.0, 255.0) and raw.x_train.max() == 255


def test_splits(mnist, mnist_dir):
    d = mnist
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (55000, 5000, 10000)
    assert len(d.y_train) == 55000 and len(d.y_val) == 5000 and len(d.y_test) == 10000
    assert d.x_train.dtype == d.x_val.dtype == d.x_test.dtype == torch.float32
    assert d.y_train.dtype == d.y_val.dtype == d.y_test.dtype == torch.int64
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10 and d.name == "mnist"
    assert d.x_train.device.type == "cpu"
    # train + val is exactly the official training set; the test set is untouched
    assert torch.bincount(torch.cat([d.y_train, d.y_val])).tolist() == TRAIN_COUNTS
    raw = load_raw("mnist", mnist_dir.parent)
    assert torch.equal(d.y_test, torch.from_numpy(raw.y_test))
    assert d.iterations_per_epoch(60) == 916


def test_normalisation(mnist):
    assert abs(mnist.x_train.mean().item()) < 1e-4
    assert abs(mnist.x_train.std().item() - 1) < 1e-4
    assert abs(mnist.x_test.mean().item()) < 0.05 and abs(mnist.x_val.mean().item()) < 0.05
    assert mnist.mean[0] == pytest.approx(0.1307, abs=2e-3)
    assert mnist.std[0] == pytest.approx(0.3081, abs=2e-3)


def test_split_is_seeded(mnist, mnist_dir):
    again = load_dataset("mnist", data_dir=mnist_dir.parent, split_seed=0)
    assert torch.equal(again.x_val, mnist.x_val) and torch.equal(again.y_train, mnist.y_train)
    other = load_dataset("mnist", data_dir=mnist_dir.parent, split_seed=1, validation_size=1000)
    assert (len(other.y_train), len(other.y_val)) == (59000, 1000)
    assert not torch.equal(other.y_val, mnist.y_val[:1000])
    assert torch.equal(other.y_test, mnist.y_test)


def test_wrong_md5(tmp_path, mnist_dir):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in mnist_dir.iterdir():
        (folder / f.name).symlink_to(f)
    damaged = folder / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0xFF
    damaged.unlink()
    damaged.write_bytes(bytes(data))
    with pytest.raises(TicketlabError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(damaged) in message
    assert "ec29112dd5afa0611ce80d1b7f02629c" in message and "--download" in message


def test_missing_file(tmp_path, mnist_dir):
    shutil.copyfile(mnist_dir / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(TicketlabError, match=r"train-images-idx3-ubyte\.gz.*--data-dir"):
        load_dataset("mnist", data_dir=tmp_path)


def test_fashion_mnist(fashion_dir):
    raw = load_raw("fashion_mnist", fashion_dir.parent)
    assert raw.x_train.shape == (60000, 1, 28, 28) and raw.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(raw.y_train).tolist() == [6000] * 10
    assert np.bincount(raw.y_test).tolist() == [1000] * 10
