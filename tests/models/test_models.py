"""The registered models: sizes from the papers, prunable groups, seeded initialisation."""

import pytest
import torch

from ticketlab import TicketlabError
from ticketlab.models import MODELS, build_model, init_weights, prunable_groups
from ticketlab.models.base import default_prunable_groups


@pytest.mark.parametrize("name, shape, params", [
    ("lenet_300_100", (1, 28, 28), 266_610),
    ("mlp_128_64", (1, 28, 28), 109_386),
    ("conv_lenet", (1, 28, 28), 431_080),
    ("conv2", (3, 32, 32), 4_301_642),
    ("conv4", (3, 32, 32), 2_425_930),
])
def test_parameter_counts(name, shape, params):
    assert sum(p.numel() for p in build_model(name, shape, 10).parameters()) == params


@pytest.mark.parametrize("name", list(MODELS))
def test_groups_declared_and_shapes_adapt(name):
    for shape, classes in (((1, 28, 28), 10), ((3, 32, 32), 7), ((1, 8, 8), 10)):
        if name.startswith("conv") and shape[1] < 16 and name != "conv2":
            continue  # too many poolings for 8x8 inputs
        if name == "conv_lenet" and shape[1] < 28:
            continue
        model = build_model(name, shape, classes)
        assert model(torch.zeros(2, *shape)).shape == (2, classes)
        groups = prunable_groups(model)
        found = default_prunable_groups(model)  # declared = what detection finds, except
        assert groups.keys() == found.keys()  # that a ResNet calls its 1x1 convs "shortcut"
        assert {k: "conv" if g == "shortcut" else g for k, g in groups.items()} == found
        assert all(k.endswith(".weight") for k in groups)
        assert list(groups.values()).count("output") == 1


def test_glorot_normal_init_is_seeded_with_zero_biases():
    a = build_model("lenet_300_100", (1, 28, 28), 10, seed=1)
    b = build_model("lenet_300_100", (1, 28, 28), 10, seed=1)
    c = build_model("lenet_300_100", (1, 28, 28), 10, seed=2)
    assert torch.equal(a.fc1.weight, b.fc1.weight)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)
    assert torch.all(a.fc1.bias == 0)
    std = a.fc1.weight.std().item()
    assert std == pytest.approx((2 / (784 + 300)) ** 0.5, rel=0.02)  # Glorot normal


def test_init_choices():
    model = build_model("lenet_300_100", (1, 28, 28), 10)
    init_weights(model, "kaiming_normal", seed=0)
    assert model.fc1.weight.std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.02)
    with pytest.raises(TicketlabError, match="unknown init"):
        init_weights(model, "orthogonal", seed=0)
    with pytest.raises(TicketlabError, match="unknown model"):
        build_model("resnet", (1, 28, 28), 10)
