"""Named parameter groups: normalisation weights and biases get `norm_bias_weight_decay`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.training.synthetic import small_conv, synthetic
from ticketlab.config import TrainingHparams
from ticketlab.models import build_model
from ticketlab.training import train, train_replicates
from ticketlab.training.optimizers import build_optimizer, no_decay_names, param_groups


def test_norm_weights_and_all_biases_are_the_no_decay_group():
    model = small_conv(batch_norm=True)  # 0: conv (no bias), 1: batch norm, 4: linear
    assert no_decay_names(model) == {"1.weight", "1.bias", "4.bias"}
    named = dict(model.named_parameters())
    hp = TrainingHparams(optimizer="sgd", weight_decay=1e-4, norm_bias_weight_decay=0.0)
    groups = param_groups(named, no_decay_names(model), hp)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids == [{id(named["0.weight"]), id(named["4.weight"])},
                   {id(named[k]) for k in ("1.weight", "1.bias", "4.bias")}]
    optimizer = build_optimizer(groups, hp)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 0.0]

    # left out (the default): one group, every parameter at --weight-decay
    hp = TrainingHparams(optimizer="sgd", weight_decay=1e-4)
    (group,) = param_groups(named, no_decay_names(model), hp)
    assert group["name"] == "decay" and len(group["params"]) == len(named)
    assert build_optimizer([group], hp).param_groups[0]["weight_decay"] == 1e-4


def test_deep_models_batch_norm_and_biases_are_found():
    model = build_model("cifar_resnet_8_2", (3, 8, 8), 10)
    names = no_decay_names(model)
    for k, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            assert {f"{k}.weight", f"{k}.bias"} <= names
    assert "fc.bias" in names and not any(k.endswith("conv.weight") or k == "fc.weight"
                                          for k in names)


class DeadBranch(nn.Module):
    """A working classifier plus a branch whose output is multiplied by zero: its conv,
    batch-norm and linear parameters get a gradient of exactly zero, so only weight decay
    moves them."""

    def __init__(self, batch_norm: bool) -> None:
        super().__init__()
        self.live = small_conv()
        self.conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2) if batch_norm else nn.Identity()
        self.fc = nn.Linear(2, 4)
        with torch.no_grad():
            if batch_norm:
                self.bn.bias.fill_(0.5)
                self.bn.weight.fill_(2.0)
            self.fc.bias.fill_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dead = self.fc(self.bn(self.conv(x)).mean((2, 3)))
        return self.live(x) + 0.0 * dead


STEPS, LR, WD = 10, 0.1, 0.1


def check_decay(before: dict, after: dict, decayed: tuple[str, ...], kept: tuple[str, ...]
                ) -> None:
    for k in kept:
        assert torch.equal(after[k], before[k]), k
    for k in decayed:  # plain SGD, zero gradient: w <- (1 - lr * wd) w at each step
        expected = before[k] * (1 - LR * WD) ** STEPS
        assert torch.allclose(after[k], expected, rtol=1e-5), k
        assert after[k].norm() < before[k].norm(), k


@pytest.mark.parametrize("norm_bias_wd", [0.0, None])
def test_zero_decay_leaves_norm_and_bias_alone_while_weights_shrink(norm_bias_wd):
    data = synthetic()
    hp = TrainingHparams(optimizer="sgd", lr=LR, weight_decay=WD, batch_size=16,
                         norm_bias_weight_decay=norm_bias_wd)
    model = DeadBranch(batch_norm=True)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    train(model, data, hp, seed=0, end=STEPS, eval_every=STEPS)
    after = {k: v.detach().clone() for k, v in model.named_parameters()}
    norm_and_bias = ("bn.weight", "bn.bias", "fc.bias")
    if norm_bias_wd == 0.0:
        check_decay(before, after, decayed=("conv.weight", "fc.weight"), kept=norm_and_bias)
    else:  # the default: everything decays alike
        check_decay(before, after, decayed=("conv.weight", "fc.weight", *norm_and_bias),
                    kept=())


def test_replicates_use_the_same_groups():
    data = synthetic()
    hp = TrainingHparams(optimizer="sgd", lr=LR, weight_decay=WD, batch_size=16,
                         norm_bias_weight_decay=0.0)
    models = [DeadBranch(batch_norm=False) for _ in range(2)]
    before = [{k: v.detach().clone() for k, v in m.named_parameters()} for m in models]
    train_replicates(models, data, hp, seeds=[0, 1], end=STEPS, eval_every=STEPS)
    for m, b in zip(models, before):
        after = {k: v.detach().clone() for k, v in m.named_parameters()}
        check_decay(b, after, decayed=("conv.weight", "fc.weight"), kept=("fc.bias",))
