"""Structured IMP's pieces: the random control by whole groups, global one-shot to a weight
density, layer-wise one-shot rates at a granularity, and the checks made before training."""

import math

import pytest
import torch

from ticketlab import Mask, TicketlabError
from ticketlab.pruning import (
    CRITERIA,
    NEGATIVE_SCORES,
    check_structured,
    criterion_scores,
    group_dims,
    prune_structured,
    prune_structured_to_density,
    random_like,
    rates_for_density,
)

SHAPES = {"c1": (8, 3, 3, 3), "c2": (6, 8, 3, 3), "f1": (10, 24), "out": (4, 10)}
GROUPS = {"c1": "conv", "c2": "conv", "f1": "fc", "out": "output"}


def dense() -> Mask:
    return Mask({n: torch.ones(s, dtype=torch.bool) for n, s in SHAPES.items()}, GROUPS)


def scores(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=gen).abs() for n, s in SHAPES.items()}


def slices(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    rest = [d for d in range(t.dim()) if d not in dims]
    return t.permute(*dims, *rest).reshape(math.prod(t.shape[d] for d in dims), -1)


def removed(mask: Mask, name: str, granularity: str) -> set[int]:
    """Indices of the groups `mask` removes from tensor `name`; asserts groups are whole."""
    g = slices(mask[name], group_dims(mask[name].shape, granularity))
    assert bool((g.all(1) | ~g.any(1)).all()), f"{name}: a group is only partly pruned"
    return set((~g.any(1)).nonzero().squeeze(1).tolist())


@pytest.mark.parametrize("granularity", ["filter", "channel", "kernel"])
def test_random_like_removes_as_many_whole_groups_elsewhere(granularity):
    exclude = ("fc", "output") if granularity == "kernel" else ("output",)
    ticket = prune_structured(dense(), scores(), 0.5, granularity, exclude=exclude)
    r1 = random_like(ticket, seed=3, granularity=granularity)
    assert r1 == random_like(ticket, seed=3, granularity=granularity)  # seeded
    assert r1 != random_like(ticket, seed=4, granularity=granularity)
    assert r1.counts() == ticket.counts()
    for name in ("c1", "c2"):
        gone, gone_random = removed(ticket, name, granularity), removed(r1, name, granularity)
        assert len(gone_random) == len(gone) > 0
    assert any(removed(ticket, n, granularity) != removed(r1, n, granularity) for n in ("c1", "c2"))
    for name in ("out", "f1") if granularity == "kernel" else ("out",):  # excluded: whole
        assert bool(ticket[name].all()) and bool(r1[name].all())


def test_random_like_by_groups_is_uniform_over_positions():
    """Over many seeds every filter is removed sometimes: no position is favoured by order."""
    ticket = prune_structured(dense(), scores(), 0.25, "filter", exclude=("output",))
    hits = torch.zeros(SHAPES["c1"][0])
    for seed in range(200):
        for i in removed(random_like(ticket, seed, "filter"), "c1", "filter"):
            hits[i] += 1
    assert hits.sum() == 200 * 2  # round(0.25 * 8) filters each time
    assert hits.min() > 20 and hits.max() < 80  # expectation 50 each


def test_random_like_keeps_partial_groups_and_weight_path():
    mask = prune_structured(dense(), scores(), 0.5, "filter", exclude=("output",))
    partial = dict(mask.items())
    partial["f1"] = partial["f1"].clone()
    partial["f1"][0, :5] = False  # one row only partly pruned
    partial = mask.with_tensors(partial)
    r = random_like(partial, seed=0, granularity="row")
    assert r.counts() == partial.counts()
    rows = r["f1"].sum(1).tolist()
    assert sorted(rows) == sorted(partial["f1"].sum(1).tolist())  # the row moved whole
    # weight granularity is the original draw, bit for bit
    assert random_like(mask, 5, "weight") == random_like(mask, 5)


@pytest.mark.parametrize("density", [0.7, 0.4, 0.2])  # 0.18: one filter per layer
@pytest.mark.parametrize("reduce", ["l1", "mean"])
def test_global_structured_one_shot_is_the_closest_group_count(density, reduce):
    mask, s = dense(), scores(1)
    got = prune_structured_to_density(mask, s, density, "filter", reduce, exclude=("output",))
    pool = sum(SHAPES[n][0] for n in ("c1", "c2", "f1"))
    options = [prune_structured(mask, s, n / pool, "filter", reduce, scope="global",
                                exclude=("output",)) for n in range(pool)]
    best = min(abs(m.density() - density) for m in options)
    assert abs(got.density() - density) == best
    assert got in options and got["out"].all()
    for name in ("c1", "c2", "f1"):
        removed(got, name, "filter")
    one_group = max(math.prod(SHAPES[n][1:]) for n in ("c1", "c2", "f1"))
    assert abs(got.density() - density) <= one_group / sum(math.prod(v) for v in SHAPES.values())


def test_global_structured_one_shot_refuses_unreachable_densities():
    with pytest.raises(TicketlabError, match="below what global filter pruning can reach"):
        prune_structured_to_density(dense(), scores(), 0.05, "filter", exclude=("output",))
    half = prune_structured(dense(), scores(), 0.5, "filter", exclude=("output",))
    with pytest.raises(TicketlabError, match="pruning cannot add weights back"):
        prune_structured_to_density(half, scores(), 0.9, "filter", exclude=("output",))


@pytest.mark.parametrize("density", [0.6, 0.3, 0.1])
def test_layerwise_one_shot_rates_hit_each_layer_up_to_one_group(density):
    """rates_for_density at a granularity: each tensor loses the fraction of its groups that
    its rate says, so its weight density is (1 - r)^t up to one group, and the overall
    density is the target up to one group per tensor."""
    mask, paper = dense(), {"conv": 0.1, "fc": 0.2}
    rates = rates_for_density(mask, paper, density, exclude=("output",))
    got = prune_structured(mask, scores(), rates, "filter", exclude=("output",))
    slack = 0
    for name, (kept, total) in got.counts().items():
        groups = SHAPES[name][0]
        removed(got, name, "filter")
        if name == "out":
            assert kept == total
            continue
        exact = total * (1 - rates[GROUPS[name]])
        assert abs(kept - exact) <= total / groups / 2 + 1e-9  # rounding to whole groups
        slack += total / groups / 2
    total = sum(t for _, t in got.counts().values())
    assert abs(got.density() - density) * total <= slack + 1e-6


def test_negative_scores_lists_exactly_the_criteria_that_can_score_below_zero():
    gen = torch.Generator().manual_seed(0)
    init, final = torch.randn(2000, generator=gen), torch.randn(2000, generator=gen)
    m = Mask({"w": torch.ones(2000, dtype=torch.bool)}, {"w": "fc"})
    for name in CRITERIA.names():
        s = criterion_scores(name, {"w": init}, {"w": final}, m, seed=1)["w"]
        negative = bool((s[torch.isfinite(s)] < 0).any())
        assert negative == (name in NEGATIVE_SCORES), name


def test_check_structured_refuses_before_training():
    check_structured(dense(), "weight", "l1", "small_final")  # weight: nothing to check
    check_structured(dense(), "kernel", "l2", "large_final", exclude=("fc", "output"))
    with pytest.raises(TicketlabError, match="f1 \\(group 'fc'\\) is 2-D: add --exclude fc"):
        check_structured(dense(), "kernel", "l1", "large_final", exclude=("output",))
    with pytest.raises(TicketlabError, match=r"criterion small_final scores can be negative .* "
                                             r"use --reduce mean"):
        check_structured(dense(), "filter", "l1", "small_final")
    check_structured(dense(), "filter", "mean", "small_final")
