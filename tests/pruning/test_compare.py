"""Jaccard similarity of masks, per tensor and overall."""

import pytest
import torch

from ticketlab import Mask, TicketlabError
from ticketlab.pruning import jaccard


def mask(**tensors) -> Mask:
    return Mask({k: torch.tensor(v, dtype=torch.bool) for k, v in tensors.items()},
                dict.fromkeys(tensors, "fc"))


def test_per_tensor_and_overall():
    a = mask(x=[1, 1, 0, 0], y=[1, 0, 1])
    b = mask(x=[1, 0, 1, 0], y=[1, 0, 1])
    result = jaccard(a, b)
    assert result["x"] == pytest.approx(1 / 3)  # both: 1, either: 3
    assert result["y"] == 1.0
    assert result["all"] == pytest.approx(3 / 5)  # pooled counts, not a mean of ratios
    assert jaccard(b, a) == result


def test_disjoint_and_empty():
    result = jaccard(mask(x=[1, 0], y=[0, 0]), mask(x=[0, 1], y=[0, 0]))
    assert result == {"x": 0.0, "y": 1.0, "all": 0.0}  # nothing kept on both sides: equal


def test_masks_of_different_models_are_refused():
    with pytest.raises(TicketlabError, match=r"only in the first: \['y'\]"):
        jaccard(mask(x=[1], y=[1]), mask(x=[1]))
    with pytest.raises(TicketlabError, match=r"'x' has shape \(2,\) in the first mask and "
                                             r"\(3,\)"):
        jaccard(mask(x=[1, 0]), mask(x=[1, 0, 1]))
