import pytest
import torch
from torch import nn

from ticketlab import Mask, TicketlabError, prunable_groups, prune_magnitude
from ticketlab.models import build_model


def lenet() -> nn.Module:
    return build_model("lenet_300_100", (1, 28, 28), 10, seed=0)


def test_dense_mask_covers_weights_not_biases():
    model = lenet()
    mask = Mask.dense(model)
    assert set(mask) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert mask.groups == {"fc1.weight": "fc", "fc2.weight": "fc", "fc3.weight": "output"}
    assert mask.density() == 1.0
    assert sum(m.numel() for m in mask.values()) == 266_200


def test_densities_per_tensor_group_and_model():
    model = lenet()
    mask = prune_magnitude(model, Mask.dense(model), {"fc": 0.2, "output": 0.1})
    assert mask.counts()["fc1.weight"] == (188_160, 235_200)
    assert mask.density_by_tensor()["fc3.weight"] == pytest.approx(0.9)
    assert mask.density_by_group() == pytest.approx({"fc": 0.8, "output": 0.9})
    assert mask.density() == pytest.approx((188_160 + 24_000 + 900) / 266_200)
    # Whole model: biases (410) count as kept.
    assert mask.model_density(model) == pytest.approx((188_160 + 24_000 + 900 + 410) / 266_610)


def test_density_counts_the_mask_not_zero_weights():
    model = lenet()
    with torch.no_grad():
        model.fc1.weight.zero_()  # zero but trainable: still counted as kept
    assert Mask.dense(model).density() == 1.0


def test_apply_zeroes_pruned_weights_only(tmp_path):
    model = lenet()
    bias = model.fc1.bias.detach().clone()
    kept_before = model.fc1.weight.detach().clone()
    mask = prune_magnitude(model, Mask.dense(model), 0.5)
    mask.apply_(model)
    w = model.fc1.weight.detach()
    assert torch.all(w[~mask["fc1.weight"]] == 0)
    assert torch.equal(w[mask["fc1.weight"]], kept_before[mask["fc1.weight"]])
    assert torch.equal(model.fc1.bias.detach(), bias)


def test_save_load_round_trip_and_plain_names(tmp_path):
    model = lenet()
    mask = prune_magnitude(model, Mask.dense(model), 0.3)
    path = tmp_path / "mask.safetensors"
    mask.save(path)
    loaded = Mask.load(path)
    assert loaded == mask
    assert loaded.groups == mask.groups
    from safetensors.torch import load_file
    assert set(load_file(path)) == set(dict(model.named_parameters())) & set(mask)
    other = build_model("lenet_300_100", (1, 28, 28), 10, seed=1)
    loaded.apply_(other)  # applies to another model of the same architecture
    for k, m in mask.items():
        assert torch.all(dict(other.named_parameters())[k].detach()[~m] == 0)


def test_load_errors(tmp_path):
    with pytest.raises(TicketlabError, match="not found"):
        Mask.load(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(TicketlabError, match="damaged"):
        Mask.load(bad)


def test_mask_must_fit_the_model():
    mask = Mask.dense(lenet())
    other = build_model("mlp_128_64", (1, 28, 28), 10)
    with pytest.raises(TicketlabError, match="shape"):
        mask.apply_(other)


def test_any_module_gets_groups():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.mid = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

    # The last Linear layer registered is the output layer; BatchNorm is never prunable.
    groups = prunable_groups(Net())
    assert groups == {"conv.weight": "conv", "mid.weight": "fc", "head.weight": "output"}

    class Own(Net):
        def prunable_groups(self):
            return {"conv.weight": "conv"}

    assert prunable_groups(Own()) == {"conv.weight": "conv"}
