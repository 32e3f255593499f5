"""Mask-1 and Mask-0 actions on hand-made tensors; frozen pruned weights through training."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ticketlab import Mask, TicketlabError, prune_magnitude
from ticketlab.pruning import (
    MASK1_ACTIONS,
    FrozenEnforcer,
    apply_mask1,
    enforce_frozen,
    frozen_values,
)

INIT = {"w": torch.tensor([[1.0, -2.0], [3.0, -4.0]]), "b": torch.tensor([0.5, -0.5])}
KEEP = torch.tensor([[True, False], [True, True]])
MASK = Mask({"w": KEEP}, {"w": "fc"})
SIGMA = math.sqrt(7.25)  # population std of 1, -2, 3, -4 (mean -0.5)


def test_rewind_is_the_ticket_and_copies_everything_else():
    state = apply_mask1("rewind", INIT, MASK)
    assert state["w"].tolist() == [[1.0, 0.0], [3.0, -4.0]]
    assert state["b"].tolist() == [0.5, -0.5]
    state["b"][0] = 7.0
    assert INIT["b"][0] == 0.5  # a copy, not a view of init


def test_reinit_takes_the_kept_weights_from_a_fresh_draw():
    fresh = {"w": torch.tensor([[10.0, 20.0], [30.0, 40.0]]), "b": torch.tensor([9.0, 9.0])}
    state = apply_mask1("reinit", INIT, MASK, fresh=fresh)
    assert state["w"].tolist() == [[10.0, 0.0], [30.0, 40.0]]
    assert state["b"].tolist() == [0.5, -0.5]  # only the kept weights change
    with pytest.raises(TicketlabError, match="reinit action needs fresh"):
        apply_mask1("reinit", INIT, MASK)


def test_reshuffle_permutes_the_kept_initial_values():
    gen = torch.Generator().manual_seed(0)
    init = {"w": torch.randn(20, 10, generator=gen)}
    mask = Mask({"w": torch.rand(20, 10, generator=gen) < 0.4}, {"w": "fc"})
    m = mask["w"]
    a = apply_mask1("reshuffle", init, mask, seed=1)["w"]
    assert torch.equal(a[m].sort().values, init["w"][m].sort().values)
    assert (a[~m] == 0).all()
    assert not torch.equal(a[m], init["w"][m])
    assert torch.equal(a, apply_mask1("reshuffle", init, mask, seed=1)["w"])
    assert not torch.equal(a, apply_mask1("reshuffle", init, mask, seed=2)["w"])


def test_signed_constant_keeps_only_the_original_signs():
    w = apply_mask1("signed_constant", INIT, MASK)["w"]
    expected = torch.tensor([[SIGMA, 0.0], [SIGMA, -SIGMA]])
    assert torch.allclose(w, expected)


def test_random_signed_constant_has_the_magnitude_but_random_signs():
    gen = torch.Generator().manual_seed(0)
    init = {"w": torch.randn(400, generator=gen)}
    mask = Mask({"w": torch.arange(400) % 4 != 0}, {"w": "fc"})
    w = apply_mask1("random_signed_constant", init, mask, seed=3)["w"]
    m = mask["w"]
    sigma = float(init["w"].std(correction=0))
    assert torch.allclose(w[m].abs(), torch.full((300,), sigma))
    assert (w[~m] == 0).all()
    agree = float((torch.sign(w[m]) == torch.sign(init["w"][m])).float().mean())
    assert 0.4 < agree < 0.6


def test_unknown_actions_list_the_choices():
    with pytest.raises(TicketlabError, match=r"unknown mask-1 action 'rewound'.*rewind, reinit"):
        apply_mask1("rewound", INIT, MASK)
    with pytest.raises(TicketlabError, match=r"unknown mask-0 action 'frozen'.*zero, "):
        frozen_values("frozen", INIT, INIT, MASK)
    assert set(MASK1_ACTIONS) == {"rewind", "reinit", "reshuffle", "signed_constant",
                                  "random_signed_constant"}


# ------------------------------------------------------------------ mask-0 actions

# Pruned: (0, 1) moved away from zero (-2 -> -3), (1, 0) moved toward it (3 -> 1).
FINAL = {"w": torch.tensor([[0.5, -3.0], [1.0, 1.0]])}
MASK0 = Mask({"w": torch.tensor([[True, False], [False, True]])}, {"w": "fc"})


@pytest.mark.parametrize(("name", "expected"), [
    ("zero", [[0.0, 0.0], [0.0, 0.0]]),
    ("freeze_init", [[0.0, -2.0], [3.0, 0.0]]),
    ("freeze_init_zero_mask", [[0.0, -2.0], [0.0, 0.0]]),
])
def test_mask0_actions_give_the_frozen_values(name, expected):
    assert frozen_values(name, INIT, FINAL, MASK0)["w"].tolist() == expected


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(12, 16)
        self.b = nn.Linear(16, 4)

    def forward(self, x):
        return self.b(self.a(x).relu())


def pruned_values(model, mask):
    params = dict(model.named_parameters())
    return torch.cat([params[k].detach()[~m] for k, m in mask.items()])


OPTIMIZERS = {
    "adam-wd": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.1),
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
}


@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
@pytest.mark.parametrize("action", ["freeze_init", "freeze_init_zero_mask"])
def test_frozen_weights_stay_exactly_at_their_values_through_training(optimizer_name, action):
    model = Net()
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    final = {k: v + 0.3 * torch.randn_like(v) for k, v in init.items()}
    mask = prune_magnitude(final, Mask.dense(model), 0.6)
    frozen = frozen_values(action, init, final, mask)
    model.load_state_dict(apply_mask1("rewind", init, mask))
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    expected = torch.cat([frozen[k][~m] for k, m in mask.items()])
    assert (expected != 0).any()
    gen = torch.Generator().manual_seed(0)
    with enforce_frozen(model, mask, frozen, optimizer):
        assert torch.equal(pruned_values(model, mask), expected)
        for _ in range(5):
            x, y = torch.randn(8, 12, generator=gen), torch.randint(0, 4, (8,), generator=gen)
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            assert torch.equal(pruned_values(model, mask), expected)
    params = dict(model.named_parameters())
    kept_now = torch.cat([params[k].detach()[m] for k, m in mask.items()])
    kept_init = torch.cat([init[k][m] for k, m in mask.items()])
    assert not torch.equal(kept_now, kept_init)  # the kept weights did train


def test_frozen_enforcer_needs_matching_frozen_values():
    model = Net()
    mask = prune_magnitude(model, Mask.dense(model), 0.5)
    with pytest.raises(TicketlabError, match="no frozen values for"):
        FrozenEnforcer(model, mask, {})
    with pytest.raises(TicketlabError, match=r"frozen values of 'a\.weight' have shape"):
        FrozenEnforcer(model, mask, {"a.weight": torch.zeros(3), "b.weight": torch.zeros(4, 16)})
