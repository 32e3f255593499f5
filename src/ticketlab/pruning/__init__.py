"""Masks, pruning (magnitude, layer-wise or global; random for the control) and enforcement.

Also Zhou et al.'s ablations: mask criteria, Mask-1/Mask-0 actions and mask comparison;
and pruning at initialisation (SNIP, GraSP, SynFlow, magnitude at init).
"""

from ticketlab.pruning.actions import (
    MASK0_ACTIONS,
    MASK1_ACTIONS,
    apply_mask1,
    frozen_values,
)
from ticketlab.pruning.at_init import (
    AT_INIT,
    at_init_scores,
    grasp_scores,
    magnitude_init_scores,
    mask_from_scores,
    snip_scores,
    synflow_mask,
    synflow_order,
    synflow_scores,
)
from ticketlab.pruning.compare import jaccard
from ticketlab.pruning.criteria import (
    CRITERIA,
    NEGATIVE_SCORES,
    criterion_scores,
    prune_by_criterion,
    threshold_mask,
)
from ticketlab.pruning.density import rates_for_density
from ticketlab.pruning.enforce import MaskEnforcer, enforce_mask
from ticketlab.pruning.freeze import FrozenEnforcer, enforce_frozen
from ticketlab.pruning.granularity import (
    GRANULARITIES,
    REDUCTIONS,
    check_structured,
    group_dims,
    group_scores,
    prune_structured,
    prune_structured_to_density,
)
from ticketlab.pruning.magnitude import magnitude_scores, prune, prune_magnitude
from ticketlab.pruning.mask import Mask
from ticketlab.pruning.random import random_like

__all__ = ["AT_INIT", "CRITERIA", "GRANULARITIES", "MASK0_ACTIONS", "MASK1_ACTIONS",
           "NEGATIVE_SCORES", "REDUCTIONS", "FrozenEnforcer", "Mask", "MaskEnforcer",
           "apply_mask1", "at_init_scores", "check_structured", "criterion_scores",
           "enforce_frozen", "enforce_mask", "frozen_values", "grasp_scores", "group_dims",
           "group_scores", "jaccard", "magnitude_init_scores", "magnitude_scores",
           "mask_from_scores", "prune", "prune_by_criterion", "prune_magnitude",
           "prune_structured", "prune_structured_to_density", "random_like", "rates_for_density",
           "snip_scores", "synflow_mask", "synflow_order", "synflow_scores", "threshold_mask"]
