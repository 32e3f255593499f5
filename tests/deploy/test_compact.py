"""The compact export: dead filters and neurons removed, outputs unchanged (`deploy.compact`)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ticketlab.deploy.compact import compact, resize_like
from ticketlab.errors import TicketlabError
from ticketlab.models import build_model
from ticketlab.pruning import Mask, prune, prune_structured
from ticketlab.pruning.channels import trace_followers, with_companions

pytest.importorskip("torch_pruning")

# Deleting a channel that is exactly zero removes only zero terms from sums, but the smaller
# matrices take other kernels and add in another order: float32 differences of a few ulps of
# the outputs (measured: at most 3e-7 on outputs of size ~1 here), far below this bound.
TOL = 1e-5


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial biases and batch-norm statistics, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.normal_(1, 0.3, generator=g)
                m.bias.normal_(0, 0.3, generator=g)
                m.running_mean.normal_(0, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2, generator=g)
            elif isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
                m.bias.normal_(0, 0.1, generator=g)
    return model


def ticket(model: nn.Module, example: Tensor, rate: float = 0.5, granularity: str = "filter",
           seed: int = 0) -> tuple[nn.Module, Mask]:
    """A structured ticket as the Sparsifier leaves it: filters/neurons pruned at random
    scores, their companions (bias, batch-norm gamma and beta) zeroed."""
    randomize(model, seed)
    mask = Mask.dense(model)
    g = torch.Generator().manual_seed(seed + 1)
    scores = {k: torch.rand(v.shape, generator=g) for k, v in mask.items()}
    mask = prune_structured(mask, scores, rate, granularity, exclude=("output",))
    with_companions(mask, trace_followers(model, example)).apply_(model)
    return model.eval(), mask


def masked_output(model: nn.Module, mask: Mask, x: Tensor) -> Tensor:
    net = mask.apply_(copy.deepcopy(model)).eval()
    with torch.no_grad():
        return net(x)


def max_diff(a: nn.Module, ref: Tensor, x: Tensor) -> float:
    with torch.no_grad():
        return float((a.eval()(x) - ref).abs().max())


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def alive_rows(mask: Mask, name: str) -> int:
    m = mask[name]
    return int(m.reshape(m.shape[0], -1).any(1).sum())


class ConvBN(nn.Module):
    """conv-BN-ReLU, conv-BN-ReLU, max-pool, fc: the shapes of Conv-2 with batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(x.flatten(1))


class Residual(nn.Module):
    """stem conv-BN-ReLU, one branch conv-BN added to the stem's output, ReLU, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.branch = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn_branch = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(x + self.bn_branch(self.branch(x)))
        return self.fc(x.mean((2, 3)))


def test_mlp_loses_its_dead_neurons_and_computes_the_same():
    x = torch.randn(16, 1, 28, 28)
    model, mask = ticket(build_model("lenet_300_100", (1, 28, 28), 10), x)
    ref = masked_output(model, mask, x)
    small, records = compact(model, mask, x)
    assert max_diff(small, ref, x) <= TOL
    h1, h2 = alive_rows(mask, "fc1.weight"), alive_rows(mask, "fc2.weight")
    assert (h1, h2) == (150, 50)
    assert count(small) == 784 * h1 + h1 + h1 * h2 + h2 + h2 * 10 + 10
    assert [(r["layer"], r["kept"], r["removed"], r["kept_dead"]) for r in records] == [
        ("fc1", 150, 150, 0), ("fc2", 50, 50, 0)]
    assert type(small) is type(model) and type(small.fc1) is nn.Linear  # plain torch, same classes


def test_batch_norm_conv_net_shrinks_through_flatten_and_stays_exact():
    x = torch.randn(8, 3, 8, 8)
    model, mask = ticket(ConvBN(), x)
    before = copy.deepcopy(model.state_dict())
    ref = masked_output(model, mask, x)
    small, records = compact(model, mask, x)
    assert max_diff(small, ref, x) <= TOL
    c1, c2 = alive_rows(mask, "conv1.weight"), alive_rows(mask, "conv2.weight")
    assert (c1, c2) == (4, 3)
    assert (small.conv1.out_channels, small.bn1.num_features, small.conv2.in_channels) == (4, 4, 4)
    assert small.fc.in_features == 3 * 16 and small.bn2.running_mean.shape == (3,)
    assert count(small) == 3 * 9 * c1 + 2 * c1 + c1 * 9 * c2 + 2 * c2 + c2 * 16 * 5 + 5
    assert {r["layer"]: r["removed"] for r in records} == {"conv1": 4, "conv2": 3}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


@pytest.mark.parametrize("name", ["conv2", "cifar_resnet_8_4", "cifar_vgg_11"])
def test_registry_models_stay_exact(name):
    x = torch.randn(4, 3, 32, 32) if "vgg" in name else torch.randn(4, 3, 8, 8)
    model, mask = ticket(build_model(name, tuple(x.shape[1:]), 10), x)
    ref = masked_output(model, mask, x)
    small, records = compact(model, mask, x)
    assert max_diff(small, ref, x) <= TOL
    assert count(small) < 0.6 * count(model)
    assert records and all(r["kept"] + r["removed"] == r["channels"] for r in records)


def test_residual_channel_dead_in_one_branch_only_is_kept():
    x = torch.randn(8, 3, 6, 6)
    model = randomize(Residual())
    mask = Mask.dense(model)
    stem, branch = mask["stem.weight"].clone(), mask["branch.weight"].clone()
    stem[[0, 1]] = False   # channel 0: dead in the stem only; channel 1: dead in both
    branch[[1]] = False
    mask = mask.with_tensors({**dict(mask.items()), "stem.weight": stem, "branch.weight": branch})
    with_companions(mask, trace_followers(model, x)).apply_(model)
    ref = masked_output(model, mask, x)
    small, records = compact(model, mask, x)
    assert max_diff(small, ref, x) <= TOL
    assert (small.stem.out_channels, small.branch.out_channels, small.fc.in_features) == (3, 3, 3)
    by_layer = {r["layer"]: r for r in records}
    assert by_layer["stem"] == {"layer": "stem", "channels": 4, "kept": 3, "removed": 1,
                                "kept_dead": 1}
    assert by_layer["branch"]["kept_dead"] == 0 and by_layer["branch"]["removed"] == 1


def test_a_dead_filter_with_a_live_bias_stays():
    """Companions not zeroed: the channel outputs its bias, so it cannot go."""
    x = torch.randn(8, 4)
    model = randomize(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))
    mask = Mask.dense(model)
    rows = mask["0.weight"].clone()
    rows[[0, 1, 2]] = False
    mask = mask.with_tensors({**dict(mask.items()), "0.weight": rows})
    with torch.no_grad():
        model[0].bias[[1, 2]] = 0.0  # 1 and 2 are dead; 0 still outputs relu(bias)
        model[0].bias[0] = 0.5
    ref = masked_output(model, mask, x)
    small, records = compact(model, mask, x)
    assert max_diff(small, ref, x) <= TOL
    assert records[0] == {"layer": "0", "channels": 6, "kept": 4, "removed": 2, "kept_dead": 1}


def kill_rows(model: nn.Module, rows: dict[str, list[int]]) -> Mask:
    mask = Mask.dense(model)
    tensors = dict(mask.items())
    for name, idx in rows.items():
        tensors[name] = tensors[name].clone()
        tensors[name][idx] = False
    return mask.with_tensors(tensors)


def grouped() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 64, 2))


def layer_norm() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 6, bias=False), nn.LayerNorm(6),
                         nn.ReLU(), nn.Linear(6, 2))


@pytest.mark.parametrize("make, layer, zero_companions", [
    (ConvBN, "conv1", False),      # gamma, beta left as trained: the channel outputs beta
    (grouped, "0", True),          # a grouped conv reads it: Torch-Pruning breaks its groups
    (layer_norm, "1", True),       # a layer norm reads it: its mean and variance would change
])
def test_channels_that_cannot_go_exactly_stay(make, layer, zero_companions):
    x = torch.randn(4, 3, 8, 8)
    model = randomize(make()).eval()
    mask = kill_rows(model, {f"{layer}.weight": [0, 1]})
    if zero_companions:
        with_companions(mask, trace_followers(model, x)).apply_(model)
    ref = masked_output(model, mask, x)
    small, records = compact(model, mask, x)
    assert max_diff(small, ref, x) <= TOL
    assert count(small) == count(model)
    assert records == [{"layer": layer, "channels": records[0]["channels"],
                        "kept": records[0]["channels"], "removed": 0, "kept_dead": 2}]


def test_depthwise_conv_loses_channels_dead_on_both_sides():
    x = torch.randn(4, 3, 4, 4)
    model = randomize(nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(),
                                    nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.ReLU(),
                                    nn.Flatten(), nn.Linear(6 * 16, 2))).eval()
    mask = kill_rows(model, {"0.weight": [0, 1], "2.weight": [1, 4]})
    with_companions(mask, trace_followers(model, x)).apply_(model)
    ref = masked_output(model, mask, x)
    small, records = compact(model, mask, x)
    assert max_diff(small, ref, x) <= TOL
    assert small[2].groups == small[2].out_channels == 5 and small[5].in_features == 5 * 16
    assert {r["layer"]: (r["removed"], r["kept_dead"]) for r in records} == {
        "0": (1, 1), "2": (1, 1)}


def test_output_layer_keeps_its_outputs():
    x = torch.randn(4, 4)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    mask = Mask.dense(model)
    out = mask["2.weight"].clone()
    out[1] = False
    mask = mask.with_tensors({**dict(mask.items()), "2.weight": out})
    with torch.no_grad():
        model[2].bias.zero_()
    small, records = compact(model, mask, x)
    assert small[2].out_features == 3
    assert records == [{"layer": "2", "channels": 3, "kept": 3, "removed": 0, "kept_dead": 1}]


@pytest.mark.parametrize("name", ["conv2", "cifar_resnet_8_4"])
def test_round_to_keeps_dead_channels_up_to_a_multiple(name):
    x = torch.randn(4, 3, 8, 8)
    model, mask = ticket(build_model(name, (3, 8, 8), 10), x, rate=0.6)
    ref = masked_output(model, mask, x)
    plain, _ = compact(model, mask, x)
    small, records = compact(model, mask, x, round_to=4)
    assert max_diff(small, ref, x) <= TOL
    widths = [m.weight.shape[0] for m in small.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert all(w % 4 == 0 for w in widths[:-1]) and widths[-1] == 10
    assert count(plain) < count(small) < count(model)
    assert sum(r["kept_dead"] for r in records) > 0


def test_unstructured_and_sub_channel_masks_are_refused():
    x = torch.randn(2, 3, 8, 8)
    model = randomize(ConvBN())
    dense = Mask.dense(model)
    scores = {k: torch.rand(v.shape) for k, v in dense.items()}
    for mask in (prune(dense, scores, 0.5),
                 prune_structured(dense, scores, 0.5, "channel"),
                 prune_structured(dense, scores, 0.5, "kernel", exclude=("output",))):
        with pytest.raises(TicketlabError, match="--format sparse"):
            compact(model, mask, x)
    other = Mask.dense(build_model("conv2", (3, 8, 8), 10))
    with pytest.raises(TicketlabError, match="made for this architecture"):
        compact(model, other, x)


def test_a_zero_channel_made_non_zero_is_reported_not_exported():
    x = torch.randn(4, 4)
    model = nn.Sequential(nn.Linear(4, 6, bias=False), nn.Sigmoid(), nn.Linear(6, 2))
    mask = Mask.dense(model)
    rows = mask["0.weight"].clone()
    rows[0] = False  # sigmoid(0) = 0.5 still feeds the next layer
    mask = mask.with_tensors({**dict(mask.items()), "0.weight": rows})
    with pytest.raises(TicketlabError, match="differs from the masked model"):
        compact(model, mask, x)


@pytest.mark.parametrize("name", ["conv2", "cifar_resnet_8_4"])
def test_resize_like_loads_a_compact_state_into_a_fresh_model(name):
    x = torch.randn(4, 3, 8, 8)
    model, mask = ticket(build_model(name, (3, 8, 8), 10), x)
    small, _ = compact(model, mask, x)
    state = small.state_dict()
    loaded = resize_like(build_model(name, (3, 8, 8), 10, seed=7), state).eval()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))
    assert count(loaded) == count(small)


def test_resize_like_refuses_a_state_of_another_architecture():
    x = torch.randn(2, 3, 8, 8)
    model, mask = ticket(ConvBN(), x)
    state = compact(model, mask, x)[0].state_dict()
    with pytest.raises(TicketlabError, match="does not fit"):
        resize_like(build_model("conv2", (3, 8, 8), 10), state)
    bad = dict(state, **{"conv1.weight": torch.zeros(4, 3, 5, 5)})
    with pytest.raises(TicketlabError, match="does not fit layer 'conv1'"):
        resize_like(ConvBN(), bad)
