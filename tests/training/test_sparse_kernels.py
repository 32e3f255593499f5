"""Sparse kernels (`training.sparse`): the same products as the dense masked layer, kept
weights only, and a model that is plain again after training."""

import dataclasses

import pytest
import torch
from torch import nn

from ticketlab import Mask
from ticketlab.config import TrainingHparams
from ticketlab.data import load_dataset
from ticketlab.errors import TicketlabError
from ticketlab.models import build_model
from ticketlab.training import sparse, train
from ticketlab.training.sparse import SparseLinear, sparse_layer_names


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def small_layers_too(monkeypatch):
    """Digits' LeNet is below the size sparse kernels pay off at (`MIN_WEIGHTS`); these
    tests are about what the kernels compute, so every layer qualifies here."""
    monkeypatch.setattr(sparse, "MIN_WEIGHTS", 0)


def lenet(data, seed=0):
    return build_model("lenet_300_100", data.input_shape, data.num_classes, seed=seed)


def sparse_mask(model, density=0.1):
    """Keeps exactly `density` of every prunable layer, at random positions (any pattern
    must work)."""
    dense = Mask.dense(model)
    g = torch.Generator().manual_seed(0)
    kept = {}
    for k, m in dense.items():
        keep = torch.zeros(m.numel(), dtype=torch.bool)
        keep[torch.randperm(m.numel(), generator=g)[:round(density * m.numel())]] = True
        kept[k] = keep.view(m.shape)
    return dense.with_tensors(kept)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("needs_input_grad", [False, True])
def test_products_equal_the_dense_masked_layer(needs_input_grad):
    # float64, so the only difference is summation order: equal to 1e-12, not approximately
    torch.manual_seed(0)
    lin = nn.Linear(50, 30).double()
    keep = torch.rand(30, 50) < 0.3
    with torch.no_grad():
        lin.weight.mul_(keep)
    layer = SparseLinear(lin, keep)
    x = torch.randn(7, 50, dtype=torch.float64, requires_grad=needs_input_grad)
    y = layer.forward(x)
    dy = torch.randn_like(y)
    y.backward(dy)
    x_dense = x.detach().clone().requires_grad_(needs_input_grad)
    dense = lin(x_dense)
    dense.backward(dy)
    assert torch.allclose(y, dense, atol=1e-12, rtol=0)
    assert torch.allclose(layer.values.grad, lin.weight.grad[keep], atol=1e-12, rtol=0)
    assert torch.allclose(lin.bias.grad, 2 * dy.sum(0), atol=1e-12, rtol=0)  # both passes
    if needs_input_grad:
        assert torch.allclose(x.grad, x_dense.grad, atol=1e-12, rtol=0)
    else:
        assert x.grad is None


def test_the_rule_is_the_density_alone(digits):
    model = lenet(digits)
    mask = sparse_mask(model, 0.1)
    assert sparse_layer_names(model, mask, None) == []
    assert sparse_layer_names(model, mask, 0.0) == []
    assert sparse_layer_names(model, mask, 0.1) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert sparse_layer_names(model, mask, 0.05) == []
    half = mask.with_tensors({**mask, "fc3.weight": torch.ones_like(mask["fc3.weight"])})
    assert sparse_layer_names(model, half, 0.2) == ["fc1.weight", "fc2.weight"]


def test_small_layers_keep_dense_kernels(monkeypatch):
    monkeypatch.setattr(sparse, "MIN_WEIGHTS", 65_536)
    model = build_model("lenet_300_100", (1, 28, 28), 10, seed=0)  # 235,200 / 30,000 / 1,000
    assert sparse_layer_names(model, sparse_mask(model, 0.01), 0.2) == ["fc1.weight"]
    digits_lenet = build_model("lenet_300_100", (1, 8, 8), 10, seed=0)  # 19,200 at most
    assert sparse_layer_names(digits_lenet, sparse_mask(digits_lenet, 0.01), 0.2) == []


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_follows_the_dense_kernels(digits, optimizer):
    """Same trajectory up to float rounding: a few steps, before rounding compounds (Adam
    divides by the root of tiny second moments, so over thousands of steps it does)."""
    hp = TrainingHparams(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1.2e-3,
                         momentum=0.9 if optimizer == "sgd" else 0.0, weight_decay=1e-4)
    mask = sparse_mask(lenet(digits), 0.1)
    dense, sparse = lenet(digits), lenet(digits)
    expected = train(dense, digits, hp, seed=0, end=5, eval_every=5, mask=mask)
    got = train(sparse, digits, dataclasses.replace(hp, sparse_below=0.2), seed=0, end=5,
                eval_every=5, mask=mask)
    for k, v in weights(dense).items():
        assert torch.allclose(weights(sparse)[k], v, atol=1e-6, rtol=1e-5), k
    assert [(e.iteration, e.split) for e in got] == [(e.iteration, e.split) for e in expected]
    for a, b in zip(got, expected):
        assert a.loss == pytest.approx(b.loss, rel=1e-4) and abs(a.accuracy - b.accuracy) <= 0.01


def test_pruned_weights_stay_zero_and_the_model_is_plain_after(digits):
    model = lenet(digits)
    mask = sparse_mask(model, 0.05)
    hp = TrainingHparams(sparse_below=0.2, weight_decay=1e-3)
    train(model, digits, hp, seed=0, end=30, eval_every=10, mask=mask)
    for k, keep in mask.items():
        w = dict(model.named_parameters())[k]
        assert bool((w[~keep] == 0).all()), k
        assert bool((w[keep] != 0).any()), k  # the kept weights were trained into the model
    assert all("forward" not in m.__dict__ for m in model.modules())  # its own forward again
    plain = lenet(digits, seed=5)
    plain.load_state_dict(model.state_dict())  # a plain model takes the ticket's weights
    x = digits.x_test[:20]
    assert torch.equal(plain(x), model(x))


def test_snapshot_is_the_dense_state_of_that_step(digits):
    model = lenet(digits)
    mask = sparse_mask(model, 0.1)
    hp = TrainingHparams(sparse_below=0.2)
    seen = {}
    train(model, digits, hp, seed=0, end=20, eval_every=10, mask=mask, snapshot_at=7,
          on_snapshot=seen.update)
    reference = lenet(digits)
    train(reference, digits, hp, seed=0, end=7, eval_every=10, mask=mask)
    assert set(seen) == set(reference.state_dict())
    assert all(torch.equal(seen[k], v) for k, v in reference.state_dict().items())


def test_the_setting_is_checked_and_names_the_run():
    from ticketlab.config import ExperimentConfig, apply_overrides

    base = ExperimentConfig()
    assert apply_overrides(base, {"sparse_below": None}).run_name() == base.run_name()
    named = apply_overrides(base, {"sparse_below": 0.2})
    assert named.run_name() != base.run_name()
    assert named.dense_science() == base.dense_science()  # level 0 is shared: always dense
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(TicketlabError, match="sparse-below"):
            apply_overrides(base, {"sparse_below": bad}).validate()
    with pytest.raises(TicketlabError, match="sparse-below"):
        apply_overrides(base, {"sparse_below": 0.2, "target": 0.9}).validate()


def test_gradual_pruning_refuses_both_settings():
    from ticketlab.config import ExperimentConfig, apply_overrides

    for setting, flag in (("sparse_below", "--sparse-below"), ("test_curve", "--test-curve")):
        value = 0.2 if setting == "sparse_below" else True
        with pytest.raises(TicketlabError, match=flag):
            apply_overrides(ExperimentConfig(), {setting: value, "target": 0.9}).validate()
