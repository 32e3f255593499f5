import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ticketlab import Mask, TicketlabError
from ticketlab.models import build_model
from ticketlab.pruning import (
    grasp_scores,
    magnitude_init_scores,
    mask_from_scores,
    random_like,
    snip_scores,
    synflow_mask,
    synflow_scores,
)

W1 = [[1.0, -0.5], [0.5, 1.5]]
W2 = [[2.0, -1.0]]
# batch 1 activates both hidden units, batch 2 only the second (pre-activation [-2, 2.5])
BATCHES = [(torch.tensor([[1.0, 0.5]]), torch.tensor([[1.0]])),
           (torch.tensor([[-1.0, 2.0]]), torch.tensor([[0.0]]))]


def tiny(w1=W1, w2=W2) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, len(w1), bias=False), nn.ReLU(),
                        nn.Linear(len(w1), len(w2), bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1))
        net[2].weight.copy_(torch.tensor(w2))
    return net


def lenet() -> nn.Module:
    return build_model("lenet_300_100", (1, 28, 28), 10, seed=0)


def test_snip_is_weight_times_gradient_summed_over_batches():
    w1, w2 = torch.tensor(W1), torch.tensor(W2)
    g1, g2 = torch.zeros(2, 2), torch.zeros(1, 2)
    for x, y in BATCHES:  # L_b = (w2 relu(w1 x) - y)^2, by the chain rule
        a = w1 @ x[0]
        h = a.clamp(min=0)
        err = 2 * (w2 @ h - y[0])  # dL/d(out)
        g2 += torch.outer(err, h)
        g1 += torch.outer(w2[0] * err * (a > 0), x[0])
    scores = snip_scores(tiny(), BATCHES, loss_fn=F.mse_loss)
    assert torch.allclose(scores["0.weight"], (w1 * g1).abs())
    assert torch.allclose(scores["2.weight"], (w2 * g2).abs())


def _hessian_route(net: nn.Module, batches, loss_fn) -> dict[str, torch.Tensor]:
    """θ ⊙ Hg with H the full Hessian of Σ_b L_b over the flattened parameters."""
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(flat):
        params = dict(zip(names, [c.view(s) for c, s in
                                  zip(flat.split([s.numel() for s in shapes]), shapes)]))
        return sum(loss_fn(functional_call(net, params, (x,)), y) for x, y in batches)

    g = torch.autograd.functional.jacobian(loss, theta)
    hg = torch.autograd.functional.hessian(loss, theta) @ g
    keep = (theta * hg).split([s.numel() for s in shapes])
    return {n: k.view(s) for n, k, s in zip(names, keep, shapes)}


CE_BATCHES = [(torch.tensor([[1.0, 0.5], [0.3, -2.0]]), torch.tensor([0, 1])),
              (torch.tensor([[-1.0, 2.0]]), torch.tensor([1]))]


@pytest.mark.parametrize("net, batches, loss_fn", [
    (tiny(), BATCHES, F.mse_loss),
    (tiny(w1=[[1.0, -0.5], [0.5, 1.5], [-0.7, 0.2]], w2=[[2.0, -1.0, 0.4], [0.3, 0.8, -1.2]]),
     CE_BATCHES, F.cross_entropy),
])
def test_grasp_keep_score_is_theta_times_hessian_gradient(net, batches, loss_fn):
    expected = _hessian_route(net, batches, loss_fn)
    scores = grasp_scores(net, batches, loss_fn=loss_fn)
    assert set(scores) == set(expected)
    for k in expected:
        assert expected[k].abs().sum() > 0  # the Hessian term is not trivially zero here
        assert torch.allclose(scores[k], expected[k], atol=1e-6)
    # the paper removes the highest S = -θ ⊙ Hg: keeping the highest keep-score is that mask
    s = {k: -v for k, v in expected.items()}
    kept = mask_from_scores(Mask.dense(net), scores, 0.5)
    removed_s = torch.cat([s[k][~kept[k]] for k in s])
    kept_s = torch.cat([s[k][kept[k]] for k in s])
    assert removed_s.min() >= kept_s.max()


def test_synflow_score_by_hand():
    w1, w2 = torch.tensor(W1).abs(), torch.tensor(W2).abs()
    h = w1 @ torch.ones(2)  # all positive: the ReLU passes everything
    scores = synflow_scores(tiny(), (2,))
    assert torch.allclose(scores["2.weight"], (w2 * h).double())  # ∂R/∂w2_j = h_j
    assert torch.allclose(scores["0.weight"], (w1 * w2[0][:, None]).double())  # |w2_j| * 1
    # with a mask, the pruned weight is gone from the network and scores -inf
    mask = Mask.dense(tiny())
    mask["0.weight"][1, 1] = False
    masked = synflow_scores(tiny(), (2,), mask)
    h = (w1 * mask["0.weight"]) @ torch.ones(2)
    assert masked["0.weight"][1, 1] == -math.inf
    assert torch.allclose(masked["2.weight"], (w2 * h).double())


def test_magnitude_init_is_absolute_initial_weights():
    net = tiny()
    mask = Mask.dense(net)
    mask["2.weight"][0, 0] = False
    scores = magnitude_init_scores(net, mask)
    assert torch.equal(scores["0.weight"], torch.tensor(W1).abs())
    assert scores["2.weight"].tolist() == [[-math.inf, 1.0]]


@pytest.fixture(scope="module")
def extreme() -> tuple[Mask, Mask]:
    """LeNet-300-100 at density 0.001 (266 weights): SynFlow's mask and magnitude's."""
    model = lenet()
    dense = Mask.dense(model)
    return (synflow_mask(model, 0.001, (1, 28, 28)),
            mask_from_scores(dense, magnitude_init_scores(model), 0.001))


def test_synflow_keeps_every_layer_at_extreme_sparsity(extreme):
    synflow, magnitude = extreme
    assert all(kept > 0 for kept, _ in synflow.counts().values()), synflow.counts()
    # the property is not automatic: global magnitude at init empties a layer (fc1), and so
    # does SynFlow in one round (the iterations are what avoid layer collapse)
    one_shot = synflow_mask(lenet(), 0.001, (1, 28, 28), rounds=1)
    for mask in (magnitude, one_shot):
        assert any(kept == 0 for kept, _ in mask.counts().values()), mask.counts()


def test_synflow_rescores_with_the_current_mask_each_round():
    model = lenet()
    dense = Mask.dense(model)
    first = mask_from_scores(dense, synflow_scores(model, (1, 28, 28)), 0.1)
    second = mask_from_scores(first, synflow_scores(model, (1, 28, 28), first), 0.01)
    assert synflow_mask(model, 0.01, (1, 28, 28), rounds=2) == second


def test_densities_are_as_asked(extreme):
    total = sum(t for _, t in Mask.dense(lenet()).counts().values())
    for mask in extreme:
        kept = sum(k for k, _ in mask.counts().values())
        assert abs(kept - 0.001 * total) <= 1


@pytest.mark.parametrize("method", ["snip", "grasp", "magnitude", "synflow"])
def test_masks_only_remove_weights(method):
    model = lenet()
    start = random_like(mask_from_scores(Mask.dense(model), magnitude_init_scores(model), 0.5),
                        seed=1)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 1, 28, 28, generator=gen), torch.randint(0, 10, (16,),
                                                                          generator=gen))]
    if method == "synflow":
        new = synflow_mask(model, 0.1, (1, 28, 28), rounds=3, mask=start)
    else:
        scores = {"snip": lambda: snip_scores(model, batches, start),
                  "grasp": lambda: grasp_scores(model, batches, start),
                  "magnitude": lambda: magnitude_init_scores(model, start)}[method]()
        for k, s in scores.items():
            assert torch.all(s[~start[k]] == -math.inf)
        new = mask_from_scores(start, scores, 0.1)
    for k in start:
        assert not (new[k] & ~start[k]).any()  # nothing revived
    assert new.density() == pytest.approx(0.1, abs=1 / 266_200)


def test_scoring_leaves_the_model_alone():
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [(torch.randn(4, 2), torch.tensor([0, 1, 1, 0]))]
    mask = Mask.dense(net)
    mask["0.weight"][0] = False
    snip_scores(net, batches, mask)
    grasp_scores(net, batches, mask)
    synflow_mask(net, 0.5, (2,), rounds=2, mask=mask)
    assert net.training
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_bad_input():
    net = tiny()
    with pytest.raises(TicketlabError, match="no batches"):
        snip_scores(net, [])
    with pytest.raises(TicketlabError, match="density"):
        mask_from_scores(Mask.dense(net), magnitude_init_scores(net), 1.5)
    with pytest.raises(TicketlabError, match="density"):
        synflow_mask(net, 0.0, (2,))
    with pytest.raises(TicketlabError, match="round"):
        synflow_mask(net, 0.5, (2,), rounds=0)
