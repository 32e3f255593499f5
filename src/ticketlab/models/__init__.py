"""Models: a registry by name, prunable-tensor groups, and seeded initialisation.

Batch norm (the ResNets and VGGs) is handled by three choices, each the paper's and
OpenLTH's reading of "reset the network to its initial weights":

- Its weights and biases are never pruned (nor is any bias): they are per-channel scales
  and shifts, a negligible share of the parameters, and a zero scale would remove a whole
  channel, which is structured pruning, not the unstructured pruning studied here.
  `prunable_groups` lists only conv and Linear weights.
- The rewind point is the whole `state_dict`: batch-norm weights and biases AND its
  running statistics (running mean, variance, batch count) at the rewind step, so a ticket
  evaluated before any retraining uses the statistics of the network it was rewound to.
  `RunStore.save_weights`/`load_weights` round-trip these buffers (tested).
- The reinit control builds a fresh network from another seed, so its batch norm starts as
  a fresh one: weight 1, bias 0, running mean 0, variance 1, count 0 (`init_weights`).
  OpenLTH's default draws the batch-norm weights uniformly in [0, 1) instead
  (`batchnorm_init='uniform'`); ticketlab keeps PyTorch's constant start for every init.
"""

from ticketlab.models.base import INITS, init_weights, prunable_groups
from ticketlab.models.registry import MODELS, build_model, model_names

__all__ = ["INITS", "MODELS", "build_model", "init_weights", "model_names", "prunable_groups"]
