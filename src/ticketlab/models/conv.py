"""Convolutional networks: the course project's LeNet and the paper's Conv-2/4/6."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class ConvNet(nn.Module):
    """conv1..convK (ReLU; 2x2 max-pool after the convs in `pool_after`), then fc1..fcN.

    fcN is the output layer; the fc input size adapts to the dataset's image size.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, convs: tuple[int, ...],
                 kernel: int, pool_after: tuple[int, ...], hidden: tuple[int, ...]):
        super().__init__()
        self.convs = [f"conv{i + 1}" for i in range(len(convs))]
        self.pool_after = set(pool_after)
        channels = [input_shape[0], *convs]
        padding = kernel // 2 if kernel == 3 else 0  # Conv-2/4/6: 3x3 "same"; LeNet: valid
        for name, a, b in zip(self.convs, channels, channels[1:]):
            self.add_module(name, nn.Conv2d(a, b, kernel, padding=padding))
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).shape[1]
        widths = [flat, *hidden, num_classes]
        self.fcs = [f"fc{i + 1}" for i in range(len(widths) - 1)]
        for name, a, b in zip(self.fcs, widths, widths[1:]):
            self.add_module(name, nn.Linear(a, b))

    def prunable_groups(self) -> dict[str, str]:
        return ({f"{n}.weight": "conv" for n in self.convs}
                | {f"{n}.weight": "fc" for n in self.fcs[:-1]}
                | {f"{self.fcs[-1]}.weight": "output"})

    def features(self, x: Tensor) -> Tensor:
        for i, name in enumerate(self.convs):
            x = getattr(self, name)(x).relu()
            if i in self.pool_after:
                x = F.max_pool2d(x, 2)
        return x.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        for name in self.fcs[:-1]:
            x = getattr(self, name)(x).relu()
        return getattr(self, self.fcs[-1])(x)


def conv_lenet(input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    """conv 1->20 5x5, pool 2, conv 20->50 5x5, pool 2, fc 800->500, fc 500->10.

    431,080 parameters on MNIST. As in LeNet-5 (Caffe), a ReLU follows fc 800->500; the course
    notebook's code omits it, which would make its two fc layers one linear map.
    """
    return ConvNet(input_shape, num_classes, (20, 50), 5, (0, 1), (500,))


def conv2(input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    return ConvNet(input_shape, num_classes, (64, 64), 3, (1,), (256, 256))


def conv4(input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    return ConvNet(input_shape, num_classes, (64, 64, 128, 128), 3, (1, 3), (256, 256))


def conv6(input_shape: tuple[int, ...], num_classes: int) -> ConvNet:
    return ConvNet(input_shape, num_classes, (64, 64, 128, 128, 256, 256), 3, (1, 3, 5),
                   (256, 256))
