"""Structured pruning on hand-made tensors: group scores, exact group counts, whole slices."""

import math

import pytest
import torch

from ticketlab import Mask, TicketlabError
from ticketlab.pruning import (
    CRITERIA,
    criterion_scores,
    group_dims,
    group_scores,
    prune,
    prune_structured,
)

CONV = (4, 3, 2, 2)
LIN = (5, 4)


def dense(**shapes) -> Mask:
    groups = {n: ("output" if n == "out" else "conv" if len(s) == 4 else "fc")
              for n, s in shapes.items()}
    return Mask({n: torch.ones(s, dtype=torch.bool) for n, s in shapes.items()}, groups)


def weights(shape, seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def slices(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """(groups, group size) with groups in row-major order over dims (independent of the lib)."""
    rest = [d for d in range(t.dim()) if d not in dims]
    return t.permute(*dims, *rest).reshape(math.prod(t.shape[d] for d in dims), -1)


def removed_groups(m: torch.Tensor, dims: tuple[int, ...], whole: bool = True) -> list[int]:
    g = slices(m, dims)
    assert not whole or bool((g.all(1) | ~g.any(1)).all()), "a group is only partly pruned"
    return (~g.any(1)).nonzero().squeeze(1).tolist()


def test_norms_and_means_by_hand():
    s = torch.tensor([[1.0, -2.0, 2.0], [0.0, 3.0, -4.0]])
    assert group_scores(s, "row", "l1").tolist() == [5.0, 7.0]
    assert group_scores(s, "row", "l2").tolist() == [3.0, 5.0]
    assert group_scores(s, "row", "mean").tolist() == pytest.approx([1 / 3, -1 / 3])
    assert group_scores(s, "column", "l1").tolist() == [1.0, 5.0, 6.0]
    assert group_scores(s, "column", "l2").tolist() == pytest.approx([1, 13 ** 0.5, 20 ** 0.5])
    assert torch.equal(group_scores(s, "weight"), s)


@pytest.mark.parametrize(("granularity", "dims", "shape"), [
    ("filter", (0,), (4,)), ("channel", (1,), (3,)), ("kernel", (0, 1), (4, 3)),
    ("row", (0,), (4,)), ("column", (1,), (3,))])
def test_conv_group_scores_are_the_group_norms(granularity, dims, shape):
    w = weights(CONV)
    rest = tuple(d for d in range(4) if d not in dims)
    for reduce, ord_ in (("l1", 1), ("l2", 2)):
        got = group_scores(w.abs(), granularity, reduce)
        assert got.shape == shape
        assert torch.allclose(got, torch.linalg.vector_norm(w, ord_, dim=rest))
    assert torch.allclose(group_scores(w, granularity, "mean"), w.mean(rest))


@pytest.mark.parametrize(("shape", "granularity", "rate", "n_groups", "n_removed"), [
    (CONV, "filter", 0.5, 4, 2), (CONV, "channel", 1 / 3, 3, 1), (CONV, "kernel", 0.25, 12, 3),
    (CONV, "weight", 0.25, 48, 12), (LIN, "row", 0.4, 5, 2), (LIN, "column", 0.5, 4, 2),
    (LIN, "filter", 0.6, 5, 3), (LIN, "channel", 0.25, 4, 1)])
def test_exact_counts_whole_slices_lowest_first(shape, granularity, rate, n_groups, n_removed):
    mask = dense(t=shape)
    w = weights(shape)
    new = prune_structured(mask, {"t": w.abs()}, rate, granularity, "l2")
    dims = group_dims(shape, granularity)
    gone = removed_groups(new["t"], dims)
    assert slices(new["t"], dims).shape[0] == n_groups
    assert len(gone) == n_removed
    norms = slices(w, dims).norm(dim=1)
    kept = [i for i in range(n_groups) if i not in gone]
    assert norms[gone].max() < norms[kept].min()
    assert new.counts()["t"][0] == (n_groups - n_removed) * w.numel() // n_groups


def test_filter_and_row_are_one_granularity():
    mask, s = dense(t=LIN), {"t": weights(LIN).abs()}
    assert prune_structured(mask, s, 0.4, "filter") == prune_structured(mask, s, 0.4, "row")
    assert prune_structured(mask, s, 0.5, "channel") == prune_structured(mask, s, 0.5, "column")
    mask, s = dense(t=CONV), {"t": weights(CONV).abs()}
    assert prune_structured(mask, s, 0.5, "row") == prune_structured(mask, s, 0.5, "filter")


def test_weight_granularity_is_prune():
    mask = dense(a=CONV, b=LIN)
    s = {"a": weights(CONV).abs(), "b": weights(LIN, 1).abs()}
    for scope in ("layerwise", "global"):
        assert (prune_structured(mask, s, 0.3, "weight", scope=scope)
                == prune(mask, s, 0.3, scope=scope))
    # With targets it takes the group path, which must agree with prune per tensor.
    got = prune_structured(mask, s, 0.3, "weight", targets={"b": 0.5})
    assert torch.equal(got["a"], prune(mask, s, 0.3)["a"])
    assert torch.equal(got["b"], prune(mask, s, 0.5)["b"])


def test_pruned_entries_do_not_poison_a_group():
    s = torch.tensor([[-math.inf, 4.0, 2.0], [-math.inf, -math.inf, -math.inf], [1.0, 1.0, 1.0]])
    assert group_scores(s, "row", "mean").tolist() == [3.0, -math.inf, 1.0]
    assert group_scores(s, "row", "l1").tolist() == [6.0, -math.inf, 3.0]
    assert group_scores(s, "row", "l2").tolist() == pytest.approx([20 ** 0.5, -math.inf, 3 ** 0.5])


def test_only_remaining_groups_are_counted_and_ranked():
    mask = dense(t=CONV)
    w = weights(CONV)
    scores = {"t": w.abs() + torch.arange(4.0).view(4, 1, 1, 1) * 10}  # filter order = score
    mask["t"][3] = False  # the best filter is already pruned: its score must not matter
    mask["t"][2, 0] = False  # a partly pruned filter still remains
    first = prune_structured(mask, scores, 0.5, "filter")  # 3 remaining -> round(1.5) = 2
    assert removed_groups(first["t"], (0,), whole=False) == [0, 1, 3]
    assert int(first["t"][2].sum()) == 8  # the partly pruned filter kept, as it was
    # Scores of weights the mask already prunes are ignored, whatever they are.
    scores["t"][2, 0] = -100.0
    assert prune_structured(mask, scores, 0.5, "filter", "mean") == first
    second = prune_structured(first, scores, 0.5, "filter")  # 1 remaining -> round(0.5) = 0
    assert second == first
    third = prune_structured(first, scores, 0.9, "filter")
    assert removed_groups(third["t"], (0,), whole=False) == [0, 1, 2, 3]


def test_a_second_round_prunes_a_fraction_of_what_remains():
    mask = dense(t=(10, 3))
    s = {"t": weights((10, 3)).abs()}
    one = prune_structured(mask, s, 0.5, "row")
    two = prune_structured(one, s, 0.4, "row")
    assert len(removed_groups(one["t"], (0,))) == 5
    assert len(removed_groups(two["t"], (0,))) == 7  # 5 + round(0.4 * 5)
    assert set(removed_groups(one["t"], (0,))) < set(removed_groups(two["t"], (0,)))


def test_global_ranks_groups_across_tensors_and_counts_groups():
    mask = dense(a=CONV, b=LIN)
    conv = torch.tensor([5.0, 1.0, 7.0, 3.0]).view(4, 1, 1, 1).expand(CONV)
    lin = torch.tensor([2.0, 6.0, 0.5, 8.0, 4.0]).view(5, 1).expand(LIN)
    new = prune_structured(mask, {"a": conv, "b": lin}, 1 / 3, "filter", "mean", scope="global")
    # 9 groups, a third of them: the scores 0.5, 1 and 2, whatever their sizes (12 vs 4).
    assert removed_groups(new["a"], (0,)) == [1]
    assert removed_groups(new["b"], (0,)) == [0, 2]
    assert new.counts() == {"a": (36, 48), "b": (12, 20)}
    # Ties go by position: parameter order first, then group order; each tensor's first
    # best group is kept whatever the rate (global pruning never empties a layer).
    same = {"a": torch.ones(CONV), "b": torch.ones(LIN)}
    tied = prune_structured(mask, same, 5 / 9, "filter", "mean", scope="global")
    assert removed_groups(tied["a"], (0,)) == [1, 2, 3]
    assert removed_groups(tied["b"], (0,)) == [1, 2]


def test_global_never_removes_a_layers_last_group():
    """l1 grows with group size: the 4-weight rows of b all score below a's 12-weight filters,
    and a high global rate would empty b, cutting the network in two."""
    mask = dense(a=CONV, b=LIN)
    s = {"a": torch.full(CONV, 1.0), "b": torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7]).view(5, 1)
         .expand(LIN).contiguous()}
    new = prune_structured(mask, s, 0.6, "filter", "l1", scope="global")  # 5 of 9 groups
    assert removed_groups(new["b"], (0,)) == [1, 2, 3, 4]  # all of b's but its best row
    assert removed_groups(new["a"], (0,)) == [1]  # a tie: by position, after the kept 0
    everything = prune_structured(mask, s, 1.0 - 1e-9, "filter", "l1", scope="global")
    assert everything.counts() == {"a": (12, 48), "b": (4, 20)}  # one group each


def test_exclude_leaves_groups_unpruned():
    mask = dense(a=CONV, out=LIN)
    s = {"a": weights(CONV).abs(), "out": weights(LIN).abs()}
    for scope in ("layerwise", "global"):
        new = prune_structured(mask, s, 0.5, "filter", scope=scope, exclude=("output",))
        assert new["out"].all()
        assert len(removed_groups(new["a"], (0,))) == 2


def test_targets_override_rates():
    mask = dense(a=CONV, b=LIN, c=(6, 4))
    s = {k: weights(tuple(v.shape), i).abs() for i, (k, v) in enumerate(mask.items())}
    new = prune_structured(mask, s, 0.5, "filter", targets={"b": 0.2, "conv": 0.0})
    assert [len(removed_groups(new[k], (0,))) for k in "abc"] == [0, 1, 3]
    # A tensor's own name wins over its group's.
    new = prune_structured(mask, s, 0.5, "filter", targets={"fc": 0.5, "c": 0.0})
    assert [len(removed_groups(new[k], (0,))) for k in "abc"] == [2, 2, 0]
    # rates as a dict by group, targets on top.
    new = prune_structured(mask, s, {"fc": 0.4}, "filter", targets={"c": 0.5})
    assert [len(removed_groups(new[k], (0,))) for k in "abc"] == [0, 2, 3]
    # Global: targeted tensors get their own fraction; the rest share one ranking.
    new = prune_structured(mask, s, 0.5, "filter", scope="global", targets={"c": 0.5})
    assert len(removed_groups(new["c"], (0,))) == 3
    assert sum(len(removed_groups(new[k], (0,))) for k in "ab") == round(0.5 * 9)


@pytest.mark.parametrize(("call", "message"), [
    (lambda m, s: prune_structured(m, s, 0.5, "kernel"), "kernel granularity needs a conv"),
    (lambda m, s: prune_structured(m, s, 0.5, "neuron"), "unknown granularity 'neuron'"),
    (lambda m, s: prune_structured(m, s, 0.5, "row", "max"), "unknown reduction 'max'"),
    (lambda m, s: prune_structured(m, s, 1.5, "row"), "must be a fraction"),
    (lambda m, s: prune_structured(m, s, 0.5, "row", scope="local"), "unknown scope"),
    (lambda m, s: prune_structured(m, s, {"fc": 0.5}, "row", scope="global"), "one rate"),
    (lambda m, s: prune_structured(m, s, 0.5, "row", targets={"nope": 0.5}), "targets name"),
    (lambda m, s: prune_structured(m, s, 0.5, "row", targets={"t": -0.1}), "target of t"),
    (lambda m, s: prune_structured(m, s, 0.5, "row", exclude=("fc",), targets={"t": 0.1}),
     "exclude leaves unpruned"),
])
def test_bad_input_is_a_one_line_error(call, message):
    mask = dense(t=LIN)
    with pytest.raises(TicketlabError, match=message) as err:
        call(mask, {"t": weights(LIN).abs()})
    assert "\n" not in str(err.value)


def test_one_dimensional_weights_need_weight_granularity():
    with pytest.raises(TicketlabError, match="weight granularity or exclude"):
        group_scores(torch.ones(3), "filter")


@pytest.mark.parametrize("name", CRITERIA.names())
def test_every_criterion_at_every_granularity(name):
    mask = dense(a=CONV, b=LIN)
    init = {"a": weights(CONV, 1), "b": weights(LIN, 2)}
    final = {"a": weights(CONV, 3), "b": weights(LIN, 4)}
    for granularity in ("weight", "filter", "channel", "kernel", "row", "column"):
        current = mask if granularity != "kernel" else Mask({"a": mask["a"]}, {"a": "conv"})
        for _ in range(2):  # the second round sees -inf for what the first removed
            s = criterion_scores(name, init, final, current, seed=0)
            new = prune_structured(current, s, 0.5, granularity, "mean")
            for k in current:
                dims = group_dims(current[k].shape, granularity)
                before = slices(current[k], dims).any(1)
                after = slices(new[k], dims).any(1)
                assert int(after.sum()) == int(before.sum()) - round(0.5 * int(before.sum()))
                if granularity != "weight":
                    removed_groups(new[k], dims)  # whole slices
                g = group_scores(s[k], granularity, "mean").reshape(-1)
                gone, kept = g[before & ~after], g[after]
                if gone.numel() and kept.numel():
                    assert gone.max() <= kept.min()
            current = new
