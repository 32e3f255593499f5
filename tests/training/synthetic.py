"""A tiny seeded image dataset and small models for fast training-loop tests."""

from __future__ import annotations

import torch
from torch import nn

from ticketlab.data.dataset import Dataset


def synthetic(shape: tuple[int, int, int] = (3, 8, 8), classes: int = 4, n_train: int = 96,
              n_eval: int = 32, augment: str = "none", seed: int = 0) -> Dataset:
    """Noise plus a class-dependent pattern (learnable), normalised like a loaded dataset."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(classes, *shape, generator=g)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        return patterns[y] + torch.randn(n, *shape, generator=g), y

    (xt, yt), (xv, yv), (xs, ys) = split(n_train), split(n_eval), split(n_eval)
    c = shape[0]
    return Dataset(name="synthetic", x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs,
                   y_test=ys, num_classes=classes, input_shape=shape, mean=(0.5,) * c,
                   std=(0.25,) * c, augment=augment)


def small_conv(shape: tuple[int, int, int] = (3, 8, 8), classes: int = 4, seed: int = 0,
               batch_norm: bool = False) -> nn.Sequential:
    """conv 3x3 (optionally + batch norm), ReLU, fc: seeded, a few hundred parameters."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Conv2d(shape[0], 4, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(4))
        layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * shape[1] * shape[2], classes)]
        return nn.Sequential(*layers)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
