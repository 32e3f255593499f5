"""Mask criteria on hand-made weights with known answers, and the course's threshold mask."""

import math

import pytest
import torch

from ticketlab import Mask, TicketlabError
from ticketlab.pruning import CRITERIA, criterion_scores, prune_by_criterion, threshold_mask

# Index:  0: grew, same sign; 1: shrank, same sign; 2 and 3: sign flipped.
W_INIT = {"w": torch.tensor([1.0, -2.0, 3.0, -4.0])}
W_FINAL = {"w": torch.tensor([4.0, -1.0, -2.0, 3.0])}


def dense(*shapes) -> Mask:
    names = [chr(ord("w") + i) for i in range(len(shapes))]
    return Mask({n: torch.ones(s, dtype=torch.bool) for n, s in zip(names, shapes)},
                dict.fromkeys(names, "fc"))


def kept(name, rate, init=W_INIT, final=W_FINAL, mask=None, **kwargs) -> list[int]:
    mask = mask if mask is not None else dense((4,))
    new = prune_by_criterion(name, init, final, mask, rate, **kwargs)
    return new["w"].nonzero().squeeze(1).tolist()


@pytest.mark.parametrize(("name", "expected"), [
    ("large_final", [0, 3]),  # |w_f| = 4 1 2 3
    ("small_final", [1, 2]),
    ("large_init", [2, 3]),  # |w_i| = 1 2 3 4
    ("small_init", [0, 1]),
    # Top-2 of both rankings share only index 3; at the common top-3 they share {2, 3}.
    ("large_init_large_final", [2, 3]),
    ("small_init_small_final", [1, 2]),
    ("magnitude_increase", [0, 3]),  # 3 -1 -1 -1: the tied -1s go by position
    ("movement", [2, 3]),  # |w_f - w_i| = 3 1 5 7
    ("large_final_same_sign", [0, 1]),  # the flips (2, 3) go first
    ("large_init_same_sign", [0, 1]),
    ("large_init_large_final_same_sign", [0, 1]),
    ("magnitude_increase_same_sign", [0, 1]),
])
def test_each_criterion_keeps_the_known_half(name, expected):
    assert kept(name, 0.5) == expected


def test_keeping_one_weight():
    assert kept("large_final", 0.75) == [0]
    # min(rank) = .25 .25 .5 .75: only index 3 is in both top-2 sets.
    assert kept("large_init_large_final", 0.75) == [3]


def test_same_sign_keeps_flipped_weights_only_when_too_few_agree():
    # Keep 3 but only 2 signs agree: one -inf weight survives, the later one by position.
    assert kept("large_final_same_sign", 0.25) == [0, 1, 3]
    scores = criterion_scores("magnitude_increase_same_sign", W_INIT, W_FINAL, dense((4,)))
    assert scores["w"].tolist() == [3.0, -1.0, -math.inf, -math.inf]


def _top(v: torch.Tensor, q: int) -> set[int]:
    return set(torch.sort(v, descending=True, stable=True).indices[:q].tolist())


@pytest.mark.parametrize(("name", "sign"), [("large_init_large_final", 1),
                                            ("small_init_small_final", -1)])
def test_both_criteria_keep_the_intersection_at_a_common_rank(name, sign):
    gen = torch.Generator().manual_seed(0)
    n = 200
    w_i, w_f = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    for q in range(1, n, 7):
        both = _top(sign * w_i.abs(), q) & _top(sign * w_f.abs(), q)
        if not both:
            continue
        rate = (n - len(both)) / n
        new = prune_by_criterion(name, {"w": w_i}, {"w": w_f}, dense((n,)), rate)
        assert set(new["w"].nonzero().squeeze(1).tolist()) == both


def test_ranks_are_among_the_weights_still_kept():
    mask = dense((6,))
    mask["w"][:2] = False  # already pruned: their scores must not matter
    init = {"w": torch.tensor([9.0, 9.0, 1.0, 2.0, 3.0, 4.0])}
    final = {"w": torch.tensor([9.0, 9.0, 4.0, 1.0, 2.0, 3.0])}
    scores = criterion_scores("large_init_large_final", init, final, mask)["w"]
    assert scores[:2].tolist() == [-math.inf, -math.inf]
    # The 4 kept weights are the example above: ranks .25 .5 .75 1 and 1 .25 .5 .75.
    assert scores[2:].tolist() == [0.25, 0.25, 0.5, 0.75]
    assert kept("large_init_large_final", 0.5, init, final, mask) == [4, 5]


def test_random_is_seeded_and_keeps_the_count():
    mask = dense((100,))
    w = {"w": torch.randn(100)}
    a = prune_by_criterion("random", w, w, mask, 0.3, seed=1)
    assert a == prune_by_criterion("random", w, w, mask, 0.3, seed=1)
    assert a != prune_by_criterion("random", w, w, mask, 0.3, seed=2)
    assert a.counts()["w"] == (70, 100)
    assert kept("random_same_sign", 0.5) == [0, 1]


def test_global_scope_and_every_tensor_scored():
    mask = dense((4,), (3,))
    init = {"w": W_INIT["w"], "x": torch.tensor([0.5, 5.0, -6.0])}
    final = {"w": W_FINAL["w"], "x": torch.tensor([0.1, 6.0, -7.0])}
    scores = criterion_scores("large_final", init, final, mask)
    assert set(scores) == {"w", "x"}
    new = prune_by_criterion("large_final", init, final, mask, 3 / 7, scope="global")
    assert new["x"].tolist() == [False, True, True]
    assert new["w"].tolist() == [True, False, False, True]


def test_every_criterion_runs_on_every_shape():
    gen = torch.Generator().manual_seed(0)
    w_i, w_f = torch.randn(5, 3, 2, generator=gen), torch.randn(5, 3, 2, generator=gen)
    mask = dense((5, 3, 2))
    for name in CRITERIA:
        new = prune_by_criterion(name, {"w": w_i}, {"w": w_f}, mask, 0.5)
        assert new.counts()["w"] == (15, 30), name


def test_unknown_criterion_lists_the_choices():
    with pytest.raises(TicketlabError,
                       match=r"unknown criterion 'largest'.*large_final, ") as e:
        criterion_scores("largest", W_INIT, W_FINAL, dense((4,)))
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ threshold mask

A = [0.1, -0.5, 2.0]
B = [[1.0, -3.0], [0.2, 0.0]]


def test_threshold_mask_uses_one_global_threshold_over_kept_weights():
    final = {"w": torch.tensor(A), "x": torch.tensor(B)}
    mask = dense((3,), (2, 2))
    # alpha 0: the threshold is mean |w| = 6.8 / 7 = 0.971 (mean w, -0.03, would keep 0.1, 0.2)
    new = threshold_mask(final, mask, 0.0)
    assert new["w"].tolist() == [False, False, True]
    assert new["x"].tolist() == [[True, True], [False, False]]
    new = threshold_mask(final, mask, 1.0)  # 0.971 + population std 1.43 = 2.40: only |-3|
    assert new.density() == pytest.approx(1 / 7)
    assert new["x"].tolist() == [[False, True], [False, False]]


def test_threshold_mask_ignores_and_keeps_pruned_weights_pruned():
    final = {"w": torch.tensor(A), "x": torch.tensor(B)}
    mask = dense((3,), (2, 2))
    mask["x"][0, 1] = False  # the -3: no longer counted in the statistics
    # over 0.1, -0.5, 2, 1, 0.2, 0: mean |w| 0.633 + 0.3 * std 0.816 = 0.878, so 1.0 passes
    # (with the -3 counted it would be 1.41 and 1.0 would not) and 0.5 does not
    new = threshold_mask(final, mask, 0.3)
    assert new["w"].tolist() == [False, False, True]
    assert new["x"].tolist() == [[True, False], [False, False]]


@pytest.mark.parametrize(("values", "alpha", "kept"), [
    # mean |w| 5/3 + population std 2.16 = 3.83 keeps the 4 (the sample std, 2.65, would not)
    ([-4.0, 0.0, 1.0], 1.0, [True, False, False]),
    # mean |w| 3 + std of w 2.62 = 5.62 keeps nothing (the std of |w|, 0.82, would keep the 4)
    ([-4.0, -3.0, 2.0], 1.0, [False, False, False]),
    # a weight at the threshold is not above it: mean |w| 1 + 0 * std
    ([1.0, -1.0, 1.0], 0.0, [False, False, False]),
])
def test_threshold_mask_statistics(values, alpha, kept):
    new = threshold_mask({"w": torch.tensor(values)}, dense((len(values),)), alpha)
    assert new["w"].tolist() == kept


@pytest.mark.parametrize("alpha", [-0.1, math.nan, math.inf])
def test_threshold_mask_rejects_alpha_out_of_range(alpha):
    with pytest.raises(TicketlabError, match="alpha must be a finite number >= 0"):
        threshold_mask({"w": torch.tensor(A)}, dense((3,)), alpha)
