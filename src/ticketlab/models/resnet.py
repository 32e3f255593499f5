"""Residual networks with batch norm: OpenLTH's CIFAR ResNet-D and the CIFAR/ImageNet ResNet-18.

Both are stacks of basic blocks (two 3x3 convs, each followed by batch norm) whose shortcut
is the identity, or a 1x1 conv + batch norm where the block changes the number of channels
or the resolution. Convolutions have no bias (the batch norm after each one has its own).
The 1x1 shortcut convs form their own prunable group, `shortcut`, so a preset can leave them
dense as the paper does for ResNet-18 in places (`--exclude shortcut`).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torch.nn import functional as F

from ticketlab.errors import TicketlabError


class Shortcut(nn.Sequential):
    """1x1 conv + batch norm: matches the block's output channels and stride."""

    def __init__(self, f_in: int, f_out: int, stride: int, batch_norm: bool = True):
        super().__init__(OrderedDict(
            conv=nn.Conv2d(f_in, f_out, 1, stride=stride, bias=not batch_norm),
            bn=_norm(f_out, batch_norm)))


class Block(nn.Module):
    """conv-bn-relu, conv-bn, plus the shortcut, then relu."""

    def __init__(self, f_in: int, f_out: int, stride: int, batch_norm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn1 = _norm(f_out, batch_norm)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, padding=1, bias=not batch_norm)
        self.bn2 = _norm(f_out, batch_norm)
        self.shortcut: nn.Module = (Shortcut(f_in, f_out, stride, batch_norm)
                                    if stride != 1 or f_in != f_out else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """stem, stages of basic blocks (the first block of each later stage halves the
    resolution), global average pooling, one fc output layer.

    `stages` lists (channels, blocks) per stage. The stem is a 3x3 stride-1 conv + BN + ReLU
    (CIFAR), or with `imagenet_stem` a 7x7 stride-2 conv + BN + ReLU + 3x3 stride-2 max-pool.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int,
                 stages: tuple[tuple[int, int], ...], imagenet_stem: bool = False,
                 batch_norm: bool = True):
        super().__init__()
        width = stages[0][0]
        if imagenet_stem:
            self.conv = nn.Conv2d(input_shape[0], width, 7, stride=2, padding=3,
                                  bias=not batch_norm)
        else:
            self.conv = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=not batch_norm)
        self.bn = _norm(width, batch_norm)
        self.pool: nn.Module = (nn.MaxPool2d(3, stride=2, padding=1) if imagenet_stem
                                else nn.Identity())
        blocks = []
        for s, (channels, count) in enumerate(stages):
            for b in range(count):
                blocks.append(Block(width, channels, 2 if s > 0 and b == 0 else 1, batch_norm))
                width = channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, num_classes)

    def prunable_groups(self) -> dict[str, str]:
        groups = {}
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d):
                groups[f"{name}.weight"] = "shortcut" if name.endswith("shortcut.conv") else "conv"
        return groups | {"fc.weight": "output"}

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(F.relu(self.bn(self.conv(x))))
        x = self.blocks(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # = OpenLTH's avg_pool2d(x, x.size(3))
        return self.fc(x)


CIFAR_DEPTHS = "20, 32, 44, 56, 110"


def cifar_resnet(input_shape: tuple[int, ...], num_classes: int, depth: int,
                 width: int = 16, batch_norm: bool = True) -> ResNet:
    """OpenLTH's cifar_resnet_D_W: 3 stages of (D-2)/6 blocks with W, 2W and 4W channels.

    ResNet-20 (W 16) has 272,474 parameters on CIFAR-10.
    """
    return ResNet(input_shape, num_classes, cifar_stages(depth, width), batch_norm=batch_norm)


def cifar_stages(depth: int, width: int) -> tuple[tuple[int, int], ...]:
    """(channels, blocks) of each stage of cifar_resnet_<depth>_<width>; refuses others."""
    if depth < 8 or (depth - 2) % 6:
        raise TicketlabError(f"cifar_resnet depth {depth} is not 6n+2: use a depth such as "
                             f"{CIFAR_DEPTHS} (cifar_resnet_20)")
    if width < 1:
        raise TicketlabError(f"cifar_resnet width {width} must be >= 1: e.g. cifar_resnet_20_16")
    n = (depth - 2) // 6
    return ((width, n), (2 * width, n), (4 * width, n))


def resnet18(input_shape: tuple[int, ...], num_classes: int, imagenet_stem: bool = False,
             batch_norm: bool = True) -> ResNet:
    """ResNet-18: 4 stages of 2 blocks with 64, 128, 256, 512 channels.

    With the CIFAR stem (kuangliu's pytorch-cifar, used by the Frankle-Carbin assignment and
    fasterai) 11,173,962 parameters on CIFAR-10; with the ImageNet stem the layers of
    torchvision's resnet18 (11,181,642 parameters with a 10-class output).
    """
    return ResNet(input_shape, num_classes, ((64, 2), (128, 2), (256, 2), (512, 2)),
                  imagenet_stem=imagenet_stem, batch_norm=batch_norm)


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    """Batch norm, or nothing (then the convs keep their biases)."""
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
