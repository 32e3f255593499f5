"""Loss and accuracy of a model on a whole split, in large batches without autograd."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@torch.inference_mode()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 2000
             ) -> tuple[float, float]:
    """(mean cross-entropy, accuracy as a fraction)."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size])
        target = y[i:i + batch_size]
        loss += F.cross_entropy(logits, target, reduction="sum").double()
        correct += (logits.argmax(1) == target).sum()
    model.train(was_training)
    n = len(x)
    return loss.item() / n, correct.item() / n
