"""A removed filter or neuron takes its bias and batch-norm channel with it (`channels`)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_config
from tests.sparsify.test_sparsifier import batches, train_step
from tests.training.synthetic import small_conv
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.models import build_model
from ticketlab.pruning import Mask
from ticketlab.pruning.channels import companion_masks, trace_followers, with_companions
from ticketlab.sparsify import Sparsifier


def test_followers_are_the_bias_and_the_batch_norm_reading_the_output():
    model = small_conv(batch_norm=True)  # conv (no bias) -> BN -> ReLU -> fc (bias)
    assert trace_followers(model, torch.zeros(1, 3, 8, 8)) == {
        "0.weight": ["1.weight", "1.bias"], "4.weight": ["4.bias"]}
    with torch.device("meta"):  # on the meta device, as the engine traces: no arithmetic
        resnet = build_model("cifar_resnet_8", (3, 16, 16), 10, "glorot_normal", 0)
        followers = trace_followers(resnet, torch.zeros(1, 3, 16, 16))
    convs = [k for k in followers if "conv" in k]
    assert convs and all(len(followers[k]) == 2 and followers[k][0].endswith(".weight") and
                         "bn" in followers[k][0] for k in convs)
    assert resnet.training  # the mode is put back


def test_companions_follow_whole_dead_rows_only():
    mask = Mask.dense(small_conv())
    m = mask["0.weight"].clone()
    m[1] = False          # filter 1 removed whole
    m[2, 0] = False       # filter 2 only partly pruned: alive
    mask = mask.with_tensors({**dict(mask.items()), "0.weight": m})
    extra = companion_masks(mask, {"0.weight": ["0.bias"]})
    assert extra["0.bias"].tolist() == [True, False, True, True]
    both = with_companions(mask, {"0.weight": ["0.bias"]})
    assert both.density() != mask.density() and both.groups["0.bias"] == "companion"
    assert with_companions(Mask.dense(small_conv()), {"0.weight": ["0.bias"]}) is not None


@pytest.mark.parametrize("granularity", ["filter", "weight"])
def test_a_removed_filter_outputs_exactly_zero_in_training(granularity):
    model = small_conv(batch_norm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    sp = Sparsifier(model, opt, target=0.5, granularity=granularity, start=2, end=10,
                    exclude=("output",))
    for x, y in batches(15):
        train_step(model, opt, x, y)
        sp.step()
    bn = model[1]
    dead = ~sp.mask["0.weight"].reshape(4, -1).any(1)
    if granularity == "weight":  # a weight mask keeps every channel's BN, as before
        assert not dead.any() and bool((bn.weight != 0).all())
        return
    assert int(dead.sum()) == 2
    assert torch.all(bn.weight[dead] == 0) and torch.all(bn.bias[dead] == 0)
    assert torch.all(opt.state[bn.weight]["momentum_buffer"][dead] == 0)
    x = batches(1, seed=7)[0][0]
    for mode in (True, False):
        model.train(mode)
        out = model[:3](x)  # conv, BN, ReLU
        assert torch.all(out[:, dead] == 0), mode
        assert bool((out[:, ~dead] != 0).any())


def test_structured_imp_zeroes_removed_filters_biases(runtime):
    config = tiny_config(model="conv2", granularity="filter", rate=0.5, levels=1,
                         controls=("random",), train="20it", eval_every="10it")
    run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    for variant in ("ticket", "random"):
        unit = Unit(0, 1, variant)
        mask = store.load_mask(unit)
        for kind in ("rewind", "final"):
            weights = store.load_weights(unit, kind)
            for name in ("conv1.weight", "conv2.weight", "fc1.weight"):
                m = mask[name]
                dead = ~m.reshape(m.shape[0], -1).any(1)
                bias = weights[name.replace("weight", "bias")]
                assert dead.any() and torch.all(bias[dead] == 0), (variant, kind, name)
                if kind == "final":  # biases start at 0; the alive ones trained
                    assert bool((bias[~dead] != 0).any())
