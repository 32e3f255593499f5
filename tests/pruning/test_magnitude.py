import pytest
import torch

from ticketlab import Mask, TicketlabError, prune, prune_magnitude, random_like
from ticketlab.models import build_model


def toy_mask(*shapes, groups=None) -> Mask:
    names = [f"t{i}" for i in range(len(shapes))]
    groups = groups or ["fc"] * len(shapes)
    return Mask({n: torch.ones(s, dtype=torch.bool) for n, s in zip(names, shapes)},
                dict(zip(names, groups)))


def test_removes_a_fraction_of_the_remaining_weights():
    model = build_model("lenet_300_100", (1, 28, 28), 10)
    mask = Mask.dense(model)
    expected = {"fc1.weight": 235_200, "fc2.weight": 30_000, "fc3.weight": 1_000}
    for _ in range(3):
        mask = prune_magnitude(model, mask, {"fc": 0.2, "output": 0.1})
        for name, kept in list(expected.items()):
            rate = 0.1 if name == "fc3.weight" else 0.2
            expected[name] = kept - round(rate * kept)
            assert mask.counts()[name][0] == expected[name]
    # The paper's P(3) = 51.3%.
    assert round(100 * mask.density(), 1) == 51.3


def test_lowest_scores_go_first_and_ties_by_position():
    mask = toy_mask((5,))
    scores = {"t0": torch.tensor([3.0, 1.0, 1.0, 1.0, 2.0])}
    new = prune(mask, scores, 0.4)  # removes 2 of 5: the first two of the three tied 1.0s
    assert new["t0"].tolist() == [True, False, False, True, True]
    assert prune(mask, scores, 0.4) == new  # deterministic


def test_only_remaining_weights_are_counted_and_ranked():
    mask = toy_mask((6,))
    mask["t0"][:2] = False  # already pruned; their (lowest) scores must not matter
    scores = {"t0": torch.tensor([0.0, 0.0, 5.0, 4.0, 3.0, 6.0])}
    new = prune(mask, scores, 0.5)  # 4 remaining -> remove 2: the 3.0 and the 4.0
    assert new["t0"].tolist() == [False, False, True, False, False, True]
    assert new.counts()["t0"] == (2, 6)


def test_layerwise_rates_per_group_and_exclude():
    mask = toy_mask((10,), (10,), (10,), groups=["conv", "fc", "output"])
    scores = {k: torch.arange(10.0) for k in mask}
    new = prune(mask, scores, {"conv": 0.1, "fc": 0.2, "output": 0.5}, exclude=("output",))
    assert [new.counts()[k][0] for k in ("t0", "t1", "t2")] == [9, 8, 10]
    assert new["t1"].tolist() == [False, False] + [True] * 8


def test_global_uses_one_threshold_across_tensors():
    torch.manual_seed(0)
    mask = toy_mask((50,), (30,), (20,), groups=["fc", "fc", "output"])
    weights = {"t0": torch.randn(50), "t1": 3 * torch.randn(30), "t2": torch.randn(20)}
    new = prune_magnitude(weights, mask, 0.4, scope="global", exclude=("output",))
    assert new.counts()["t2"] == (20, 20)  # excluded
    assert new.counts()["t0"][0] + new.counts()["t1"][0] == 80 - 32
    kept = torch.cat([weights[k].abs()[new[k]] for k in ("t0", "t1")])
    pruned = torch.cat([weights[k].abs()[~new[k]] for k in ("t0", "t1")])
    assert kept.min() > pruned.max()
    # Not the same fraction per tensor: the larger-scaled t1 keeps relatively more.
    assert new.density_by_tensor()["t1"] > new.density_by_tensor()["t0"]


def test_global_ties_are_exact():
    mask = toy_mask((4,), (4,))
    scores = {"t0": torch.ones(4), "t1": torch.ones(4)}
    new = prune(mask, scores, 0.25, scope="global")  # 2 of 8, ties -> first two of t0
    assert new["t0"].tolist() == [False, False, True, True]
    assert new["t1"].all()


def test_bad_rates():
    mask = toy_mask((4,))
    with pytest.raises(TicketlabError):
        prune(mask, {"t0": torch.ones(4)}, 1.5)
    with pytest.raises(TicketlabError):
        prune(mask, {"t0": torch.ones(4)}, {"fc": 0.2}, scope="global")


def test_random_like_keeps_per_tensor_counts():
    model = build_model("lenet_300_100", (1, 28, 28), 10)
    mask = prune_magnitude(model, Mask.dense(model), {"fc": 0.5, "output": 0.3})
    r1, r2 = random_like(mask, seed=1), random_like(mask, seed=1)
    assert r1 == r2
    assert r1.counts() == mask.counts()
    assert r1 != mask
    assert random_like(mask, seed=2) != r1
    # Uniform over the tensor: its overlap with the magnitude mask is near chance (0.5).
    overlap = (r1["fc1.weight"] & mask["fc1.weight"]).sum() / mask["fc1.weight"].sum()
    assert 0.48 < float(overlap) < 0.52
