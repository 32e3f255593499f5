"""Masks, pruning (magnitude, layer-wise or global; random for the control) and enforcement."""

from ticketlab.pruning.density import rates_for_density
from ticketlab.pruning.enforce import MaskEnforcer, enforce_mask
from ticketlab.pruning.magnitude import magnitude_scores, prune, prune_magnitude
from ticketlab.pruning.mask import Mask
from ticketlab.pruning.random import random_like

__all__ = ["Mask", "MaskEnforcer", "enforce_mask", "magnitude_scores", "prune",
           "prune_magnitude", "random_like", "rates_for_density"]
