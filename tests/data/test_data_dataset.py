"""Registry, validation sizes and the epoch order, on the small bundled digits set."""

from __future__ import annotations

import pytest
import torch

from ticketlab.data import dataset_names, describe_datasets, get_dataset, load_dataset
from ticketlab.errors import TicketlabError


@pytest.fixture(scope="module")
def ds():
    return load_dataset("digits")


def test_registry():
    assert dataset_names() == ["cifar10", "cifar100", "digits", "fashion-mnist", "mnist"]
    assert get_dataset("fashion_mnist").name == "fashion-mnist"
    assert get_dataset("MNIST").name == "mnist"
    assert get_dataset("CIFAR-10").name == "cifar10"
    with pytest.raises(TicketlabError) as info:
        get_dataset("x")
    assert str(info.value) == ("unknown dataset 'x': choose one of cifar10, cifar100, digits, "
                               "fashion-mnist, mnist, imagefolder:<path>")
    lines = describe_datasets()
    assert len(lines) == 6 and all("\n" not in line for line in lines)
    assert lines[4].startswith("mnist: 60,000 train / 10,000 test images, 1x28x28, 10 classes")
    assert lines[0].startswith("cifar10: 50,000 train / 10,000 test images, 3x32x32, 10 classes")
    assert lines[5].startswith("imagefolder:<path>: class-per-folder")


def test_fixed_size_datasets_refuse_an_image_size():
    with pytest.raises(TicketlabError, match="dataset digits has fixed 1x8x8 images: leave out "
                                             "--image-size"):
        load_dataset("digits", image_size=32)


def test_validation_size():
    assert len(load_dataset("digits", validation_size=1).y_val) == 1
    assert len(load_dataset("digits", validation_size=300).y_train) == 1138
    for bad in (-1, 0, 1438):  # early stopping needs at least one validation image
        with pytest.raises(TicketlabError, match="--validation-size between 1 and 1437"):
            load_dataset("digits", validation_size=bad)


def test_iterations_per_epoch(ds):
    assert ds.iterations_per_epoch(60) == 1318 // 60
    assert ds.iterations_per_epoch(1318) == 1
    for bad in (0, 1319):
        with pytest.raises(TicketlabError, match="--batch-size between 1 and 1318"):
            ds.iterations_per_epoch(bad)


def test_epoch_order(ds):
    order = ds.epoch_order(seed=3, epoch=0)
    assert order.dtype == torch.int64 and order.device == ds.device
    assert torch.equal(order.sort().values, torch.arange(ds.n_train))
    assert torch.equal(order, ds.epoch_order(3, 0))
    assert not torch.equal(order, ds.epoch_order(3, 1))
    assert not torch.equal(order, ds.epoch_order(4, 0))


def test_repr(ds):
    assert repr(ds) == "Dataset(digits: 1318 train / 120 val / 359 test, 1x8x8, 10 classes, cpu)"
