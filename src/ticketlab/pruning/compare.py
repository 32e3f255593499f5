"""How similar two masks are: Jaccard index of their kept weights, per tensor and overall."""

from __future__ import annotations

from ticketlab.errors import TicketlabError
from ticketlab.pruning.mask import Mask


def _check_comparable(a: Mask, b: Mask) -> None:
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise TicketlabError(f"the masks name different tensors (only in the first: {only_a}, "
                             f"only in the second: {only_b}): compare masks of one model")
    for k in a:
        if a[k].shape != b[k].shape:
            raise TicketlabError(f"mask '{k}' has shape {tuple(a[k].shape)} in the first mask "
                                 f"and {tuple(b[k].shape)} in the second: compare masks of "
                                 "one model")


def jaccard(a: Mask, b: Mask) -> dict[str, float]:
    """|kept in both| / |kept in either| per tensor, and over all tensors under "all".

    Two masks that keep nothing in a tensor agree completely there: the index is 1.
    """
    _check_comparable(a, b)
    result, inter_all, union_all = {}, 0, 0
    for k in a:
        x, y = a[k], b[k].to(a[k].device)
        inter, union = int((x & y).sum()), int((x | y).sum())
        result[k] = inter / union if union else 1.0
        inter_all, union_all = inter_all + inter, union_all + union
    result["all"] = inter_all / union_all if union_all else 1.0
    return result
