"""Supermasks: an untrained LeNet on digits, masked well, beats chance; the model is untouched."""

import copy

import pytest
import torch
from torch.nn import functional as F

from ticketlab import Mask, TicketlabError, build_model, random_like
from ticketlab.data.dataset import load_dataset
from ticketlab.pruning import apply_mask1, prune_by_criterion
from ticketlab.supermask import evaluate_supermask, train_supermask
from ticketlab.training import evaluate


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def untrained(data):
    return build_model("lenet_300_100", data.input_shape, data.num_classes, seed=0)


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


@pytest.fixture(scope="module")
def trained_state(digits):
    """The dense LeNet-300-100 after 200 Adam steps (about 97% on the digits test set)."""
    model = untrained(digits)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        batch = torch.randint(0, digits.n_train, (60,), generator=gen)
        loss = F.cross_entropy(model(digits.x_train[batch]), digits.y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert evaluate(model, digits.x_test, digits.y_test)[1] > 0.9
    return state_of(model)


def test_evaluation_changes_no_weight_and_matches_a_masked_copy(digits, trained_state):
    model = untrained(digits).eval()
    before = state_of(model)
    mask = prune_by_criterion("large_final", before, trained_state, Mask.dense(model), 0.8)
    result = evaluate_supermask(model, mask, digits.x_test, digits.y_test)
    assert_unchanged(model, before)
    assert not model.training  # its mode is kept too
    masked = copy.deepcopy(model)
    mask.apply_(masked)
    assert result == evaluate(masked, digits.x_test, digits.y_test)


def test_same_sign_supermask_beats_a_random_mask_of_the_same_density(digits, trained_state):
    model = untrained(digits)
    init = state_of(model)
    mask = prune_by_criterion("large_final_same_sign", init, trained_state,
                              Mask.dense(model), 0.8)
    control = random_like(mask, seed=0)
    assert control.density() == mask.density() == pytest.approx(0.2, abs=1e-3)
    _, supermask_acc = evaluate_supermask(model, mask, digits.x_test, digits.y_test, init=init)
    _, random_acc = evaluate_supermask(model, control, digits.x_test, digits.y_test, init=init)
    assert random_acc < 0.25  # chance is 0.1
    assert supermask_acc > 0.5
    _, signed_acc = evaluate_supermask(model, mask, digits.x_test, digits.y_test, init=init,
                                       action="signed_constant")
    assert signed_acc > 0.5  # the signs carry it


def test_evaluation_uses_the_given_initial_weights(digits, trained_state):
    model = untrained(digits)
    mask = Mask.dense(model)
    trained = evaluate_supermask(model, mask, digits.x_test, digits.y_test, init=trained_state)
    assert trained[1] > 0.9
    own = evaluate_supermask(model, mask, digits.x_test, digits.y_test)
    assert own[1] < 0.3


def test_learned_supermask_beats_chance_with_frozen_weights(digits):
    model = untrained(digits)
    before = state_of(model)
    mask, metrics = train_supermask(model, digits, steps=300, lr=0.1, batch_size=64, seed=0)
    assert_unchanged(model, before)
    assert metrics.test_accuracy > 0.7
    assert metrics.sampled_test_accuracy > 0.7
    assert 0.2 < metrics.density < 0.8
    assert metrics.density == mask.density()
    # The returned mask is the thresholded one the metrics describe.
    loss, acc = evaluate_supermask(model, mask, digits.x_val, digits.y_val)
    assert (loss, acc) == pytest.approx((metrics.val_loss, metrics.val_accuracy))
    again, _ = train_supermask(model, digits, steps=300, lr=0.1, batch_size=64, seed=0)
    assert again == mask  # seeded


def test_learned_supermask_on_signed_constants(digits):
    model = untrained(digits)
    constants = apply_mask1("signed_constant", state_of(model), Mask.dense(model))
    _, metrics = train_supermask(model, digits, steps=200, lr=0.1, seed=1, init=constants)
    assert metrics.test_accuracy > 0.5


def test_learned_supermask_checks_its_arguments(digits):
    model = untrained(digits)
    with pytest.raises(TicketlabError, match="steps must be positive"):
        train_supermask(model, digits, steps=0)
    with pytest.raises(TicketlabError, match="batch size"):
        train_supermask(model, digits, steps=1, batch_size=10**6)
