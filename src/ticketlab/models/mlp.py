"""Fully connected networks: LeNet-300-100 (Frankle & Carbin) and the seed notebook's MLP."""

from __future__ import annotations

import math

from torch import Tensor, nn

from ticketlab.models.stacked import stacked_linear


class MLP(nn.Module):
    """Flatten, then fc1..fcN with ReLU between them; fcN is the output layer."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...]):
        super().__init__()
        widths = [math.prod(input_shape), *hidden, num_classes]
        self.fcs = [f"fc{i + 1}" for i in range(len(widths) - 1)]
        for name, a, b in zip(self.fcs, widths, widths[1:]):
            self.add_module(name, nn.Linear(a, b))

    def prunable_groups(self) -> dict[str, str]:
        return {f"{n}.weight": "fc" for n in self.fcs[:-1]} | {f"{self.fcs[-1]}.weight": "output"}

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for name in self.fcs[:-1]:
            x = getattr(self, name)(x).relu()
        return getattr(self, self.fcs[-1])(x)

    def forward_stacked(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """`forward` for replicates: params stacked (R, ...), x (R, B, ...) -> (R, B, C)."""
        x = x.flatten(2)
        for name in self.fcs:
            x = stacked_linear(x, params[f"{name}.weight"], params[f"{name}.bias"])
            if name != self.fcs[-1]:
                x = x.relu()
        return x


def lenet_300_100(input_shape: tuple[int, ...], num_classes: int) -> MLP:
    return MLP(input_shape, num_classes, (300, 100))


def mlp_128_64(input_shape: tuple[int, ...], num_classes: int) -> MLP:
    return MLP(input_shape, num_classes, (128, 64))
