import copy

import pytest
import torch
from torch import nn

from ticketlab import Mask, prune_magnitude
from ticketlab.config import TrainingHparams
from ticketlab.data import load_dataset
from ticketlab.errors import TicketlabError
from ticketlab.models import build_model
from ticketlab.training import (
    STABLE_BARRIER,
    barrier,
    error_along_line,
    evaluate,
    interpolate,
    is_stable,
    recompute_batch_norm,
    train,
)

STEPS = 30


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def lenet(data, seed):
    return build_model("lenet_300_100", data.input_shape, data.num_classes, seed=seed)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def trained(digits):
    """Two LeNets trained a few steps with different initialisations and data orders."""
    models = []
    for seed in (0, 1):
        model = lenet(digits, seed)
        train(model, digits, TrainingHparams(), seed=seed, end=STEPS, eval_every=STEPS)
        models.append(model)
    return models


def conv_bn(seed=0, momentum=0.3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=momentum),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def test_interpolate_ends_are_exact_and_middle_is_linear(trained):
    a, b = state(trained[0]), state(trained[1])
    at0, at1, half = interpolate(a, b, 0.0), interpolate(a, b, 1.0), interpolate(a, b, 0.5)
    assert all(torch.equal(at0[k], a[k]) for k in a)
    assert all(torch.equal(at1[k], b[k]) for k in a)
    assert not torch.equal(a["fc1.weight"], b["fc1.weight"])
    torch.testing.assert_close(half["fc1.weight"], (a["fc1.weight"] + b["fc1.weight"]) / 2)


def test_integer_buffers_come_from_a():
    a, b = state(conv_bn(0)), state(conv_bn(1))
    a["1.num_batches_tracked"].fill_(7)
    b["1.num_batches_tracked"].fill_(9)
    mid = interpolate(a, b, 0.5)
    assert mid["1.num_batches_tracked"].item() == 7
    assert mid["1.num_batches_tracked"].dtype == torch.int64


def test_mismatched_state_dicts_are_refused(trained):
    a, b = state(trained[0]), state(trained[1])
    with pytest.raises(TicketlabError, match="different keys") as missing:
        interpolate(a, {k: v for k, v in b.items() if k != "fc1.bias"}, 0.5)
    with pytest.raises(TicketlabError, match=r"fc1\.bias") as shape:
        interpolate(a, {**b, "fc1.bias": b["fc1.bias"][:-1]}, 0.5)
    assert "\n" not in str(missing.value) + str(shape.value)


def test_identical_networks_have_no_barrier(trained, digits):
    a = state(trained[0])
    errors = error_along_line(copy.deepcopy(trained[0]), a, a, digits.x_test, digits.y_test,
                              points=7)
    assert len(errors) == 7 and len(set(errors)) == 1
    assert barrier(errors) == 0.0 and is_stable(barrier(errors))


def test_endpoint_errors_are_the_trained_networks_errors(trained, digits):
    a, b = state(trained[0]), state(trained[1])
    model = lenet(digits, seed=5)
    before = state(model)
    errors = error_along_line(model, a, b, digits.x_test, digits.y_test, points=5)
    assert len(errors) == 5 and all(0.0 <= e <= 1.0 for e in errors)
    assert errors[0] == 1.0 - evaluate(trained[0], digits.x_test, digits.y_test)[1]
    assert errors[-1] == 1.0 - evaluate(trained[1], digits.x_test, digits.y_test)[1]
    assert barrier(errors) >= 0.0
    assert all(torch.equal(before[k], v) for k, v in state(model).items())  # restored
    with pytest.raises(TicketlabError, match="points"):
        error_along_line(model, a, b, digits.x_test, digits.y_test, points=1)


def test_barrier_and_stability():
    assert barrier([0.1, 0.3, 0.2]) == pytest.approx(0.3 - 0.15)
    assert barrier([0.1, 0.05, 0.1]) == pytest.approx(0.0)
    assert is_stable(STABLE_BARRIER) and not is_stable(STABLE_BARRIER + 0.001)
    with pytest.raises(TicketlabError):
        barrier([0.1])


def test_recompute_batch_norm_matches_a_hand_computation(digits):
    model = conv_bn()
    model.eval()
    images, batch = digits.x_train[:200], 50
    recompute_batch_norm(model, images, batch_size=batch)
    bn = model[1]
    with torch.no_grad():
        inputs = model[0](images)  # what the first batch norm sees
    torch.testing.assert_close(bn.running_mean, inputs.mean(dim=(0, 2, 3)))
    per_batch = [inputs[i:i + batch].transpose(0, 1).flatten(1).var(dim=1)
                 for i in range(0, len(images), batch)]
    torch.testing.assert_close(bn.running_var, torch.stack(per_batch).mean(0))
    assert bn.momentum == 0.3 and not model.training
    assert bn.num_batches_tracked.item() == len(images) // batch


def test_error_along_line_recomputes_batch_norm_at_each_point(digits):
    a, b = state(conv_bn(0)), state(conv_bn(1))
    model = conv_bn(2)
    calls = []

    def recompute(m):
        calls.append(m[1].weight.detach().clone())
        recompute_batch_norm(m, digits.x_train[:100])

    error_along_line(model, a, b, digits.x_test, digits.y_test, points=3, recompute_bn=recompute)
    assert len(calls) == 3
    torch.testing.assert_close(calls[1], (a["1.weight"] + b["1.weight"]) / 2)

    # a tensor of images does the same as recomputing by hand
    by_tensor = error_along_line(model, a, b, digits.x_test, digits.y_test, points=3,
                                 recompute_bn=digits.x_train[:100])
    for alpha, error in zip((0.0, 0.5, 1.0), by_tensor, strict=True):
        model.load_state_dict(interpolate(a, b, alpha))
        recompute_batch_norm(model, digits.x_train[:100])
        assert error == 1.0 - evaluate(model, digits.x_test, digits.y_test)[1]
    assert model[1].momentum == 0.3

    # no batch norm: nothing to recompute
    calls.clear()
    plain = lenet(digits, 0)
    error_along_line(plain, state(plain), state(plain), digits.x_test, digits.y_test, points=3,
                     recompute_bn=recompute)
    assert calls == []


def test_pruned_weights_stay_zero_along_the_line(digits):
    ticket = lenet(digits, 0)
    mask = prune_magnitude(ticket, Mask.dense(ticket), 0.7)
    mask.apply_(ticket)
    ends = []
    for seed in (0, 1):
        model = copy.deepcopy(ticket)
        train(model, digits, TrainingHparams(), seed=seed, end=STEPS, eval_every=STEPS,
              mask=mask)
        ends.append(state(model))
    assert not torch.equal(ends[0]["fc1.weight"], ends[1]["fc1.weight"])

    name_of = {m: n for n, m in ticket.named_modules() if isinstance(m, nn.Linear)}
    zero = []
    for m in name_of:
        m.register_forward_pre_hook(lambda module, inputs: zero.append(bool(torch.all(
            module.weight.detach()[~mask[f"{name_of[module]}.weight"]] == 0))))
    error_along_line(ticket, ends[0], ends[1], digits.x_test, digits.y_test, points=6)
    assert len(zero) == 6 * len(name_of) and all(zero)
