"""VGG with batch norm for small images, as OpenLTH's cifar_vgg and the paper's VGG-16/19.

3x3 convs (with bias, as OpenLTH), each followed by batch norm and ReLU; a 2x2 max-pool
between stages (four pools, none after the last stage); global average pooling; ONE fc
layer 512 -> classes. On 32x32 images the last stage is 2x2, and the global pool is
OpenLTH's `AvgPool2d(2)`; on other sizes it still gives 512 features (Fashion-MNIST's 28x28
ends at 1x1), and images under 16x16 pixels fail at a max-pool, which the configuration
check turns into a one-line error.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from ticketlab.errors import TicketlabError

# Channels per conv, "M" a max-pool (OpenLTH's plans, from Simonyan & Zisserman's A, B, D, E).
PLANS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512),
}


class VGG(nn.Module):
    """conv1..convK (each + BN + ReLU, pooled per `plan`), global average pool, fc."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int,
                 plan: tuple[int | str, ...], batch_norm: bool = True):
        super().__init__()
        self.convs: list[str] = []
        self.pool_after: set[str] = set()
        channels = input_shape[0]
        for spec in plan:
            if spec == "M":
                self.pool_after.add(self.convs[-1])
                continue
            name = f"conv{len(self.convs) + 1}"
            self.convs.append(name)
            self.add_module(name, nn.Conv2d(channels, int(spec), 3, padding=1))
            self.add_module(f"bn{len(self.convs)}",
                            nn.BatchNorm2d(int(spec)) if batch_norm else nn.Identity())
            channels = int(spec)
        self.fc = nn.Linear(channels, num_classes)

    def prunable_groups(self) -> dict[str, str]:
        return {f"{n}.weight": "conv" for n in self.convs} | {"fc.weight": "output"}

    def forward(self, x: Tensor) -> Tensor:
        for i, name in enumerate(self.convs, 1):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, name)(x)))
            if name in self.pool_after:
                x = F.max_pool2d(x, 2)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def cifar_vgg(input_shape: tuple[int, ...], num_classes: int, depth: int,
              batch_norm: bool = True) -> VGG:
    """VGG-D for CIFAR (D = 11, 13, 16 or 19 weight layers: D-1 convs and the fc)."""
    return VGG(input_shape, num_classes, plan(depth), batch_norm)


def plan(depth: int) -> tuple[int | str, ...]:
    """The plan of VGG-<depth>; refuses a depth without one."""
    if depth not in PLANS:
        raise TicketlabError(f"cifar_vgg depth {depth} does not exist: use "
                             f"{', '.join(map(str, PLANS))} (cifar_vgg_16)")
    return PLANS[depth]
