"""Loss and accuracy of a model on a whole split, in large batches without autograd."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Input bytes per forward pass of an evaluation: MNIST's 10,000 test images (31 MB) are one
# pass, where the Python overhead of many small batches would cost more than the arithmetic;
# large images are cut into batches whose activations still fit in memory.
EVAL_CHUNK_BYTES = 32 * 2**20


def eval_chunk(x: Tensor, replicates: int = 1, budget: int = EVAL_CHUNK_BYTES) -> int:
    """Images per forward pass: as many as fit `budget` bytes of input per replicate."""
    per_image = math.prod(x.shape[1:]) * x.element_size() * replicates
    return max(1, budget // max(1, per_image))


@torch.inference_mode()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int | None = None
             ) -> tuple[float, float]:
    """(mean cross-entropy, accuracy as a fraction). `batch_size` images per forward pass
    (default: `eval_chunk`, the whole split where it fits). Losses are summed in float64
    image by image: one float32 sum over a whole split would round more."""
    was_training = model.training
    model.eval()
    batch_size = batch_size or eval_chunk(x)
    loss = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size])
        target = y[i:i + batch_size]
        loss += F.cross_entropy(logits, target, reduction="none").double().sum()
        correct += (logits.argmax(1) == target).sum()
    model.train(was_training)
    n = len(x)
    return loss.item() / n, correct.item() / n
