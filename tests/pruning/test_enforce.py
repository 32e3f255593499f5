"""enforce_mask keeps pruned weights at zero in a user's own loop, for any optimizer."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ticketlab import Mask, enforce_mask, prune_magnitude


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(20, 32)
        self.b = nn.Linear(32, 5)

    def forward(self, x):
        return self.b(self.a(x).relu())


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    "sgd-nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5),
}


def user_loop(model, optimizer, steps=30, check=None):
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = torch.randn(16, 20, generator=gen), torch.randint(0, 5, (16,), generator=gen)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if check:
            check()


def pruned_values(model, mask):
    params = dict(model.named_parameters())
    return torch.cat([params[k].detach()[~m] for k, m in mask.items()])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_pruned_weights_stay_zero_after_every_step(name):
    model = UserNet()
    # Train a little first so the optimizer already has state for every weight.
    optimizer = OPTIMIZERS[name](model.parameters())
    user_loop(model, optimizer, steps=5)
    mask = prune_magnitude(model, Mask.dense(model), 0.6)
    after_each_step = []
    with enforce_mask(model, mask, optimizer):
        user_loop(model, optimizer,
                  check=lambda: after_each_step.append(bool((pruned_values(model, mask) == 0)
                                                            .all())))
    assert len(after_each_step) == 30 and all(after_each_step)
    # Optimizer state of pruned entries was cleared and stays clear.
    for k, m in mask.items():
        p = dict(model.named_parameters())[k]
        for value in optimizer.state[p].values():
            if torch.is_tensor(value) and value.shape == p.shape:
                assert torch.all(value[~m] == 0)


def test_without_enforcement_the_optimizer_revives_pruned_weights():
    """The control that shows the test above can fail."""
    model = UserNet()
    optimizer = OPTIMIZERS["adam"](model.parameters())
    mask = prune_magnitude(model, Mask.dense(model), 0.6)
    mask.apply_(model)
    user_loop(model, optimizer, steps=3)
    assert (pruned_values(model, mask) != 0).any()


def test_removing_the_enforcement_stops_it():
    model = UserNet()
    optimizer = OPTIMIZERS["adam"](model.parameters())
    mask = prune_magnitude(model, Mask.dense(model), 0.6)
    handle = enforce_mask(model, mask, optimizer)
    user_loop(model, optimizer, steps=3)
    assert (pruned_values(model, mask) == 0).all()
    handle.remove()
    user_loop(model, optimizer, steps=3)
    assert (pruned_values(model, mask) != 0).any()


def _closure_loop(model, optimizer, steps=10, after=None):
    """The backward pass inside optimizer.step(closure), as LBFGS and Lightning run it."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = torch.randn(16, 20, generator=gen), torch.randint(0, 5, (16,), generator=gen)

        def closure(x=x, y=y):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        optimizer.step(closure)
        if after:
            after()


@pytest.mark.parametrize("sparsifier", [False, True])
def test_a_closure_optimizer_keeps_pruned_momentum_zero(sparsifier):
    """The step pre-hook runs before the closure's backward; the gradient hook catches it."""
    from ticketlab.sparsify import Sparsifier

    model = UserNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if sparsifier:
        sp = Sparsifier(model, optimizer, target=0.6, start=0, end=3)
        _closure_loop(model, optimizer, after=sp.step)
        mask = sp.mask
    else:
        mask = prune_magnitude(model, Mask.dense(model), 0.6)
        with enforce_mask(model, mask, optimizer):
            _closure_loop(model, optimizer)
    params = dict(model.named_parameters())
    for k, m in mask.items():
        assert (~m).any()
        assert torch.all(optimizer.state[params[k]]["momentum_buffer"][~m] == 0), k
