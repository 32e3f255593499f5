"""Models: a registry by name, prunable-tensor groups, and seeded initialisation."""

from ticketlab.models.base import INITS, init_weights, prunable_groups
from ticketlab.models.registry import MODELS, build_model, model_names

__all__ = ["INITS", "MODELS", "build_model", "init_weights", "model_names", "prunable_groups"]
