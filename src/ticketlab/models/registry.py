"""Models by name: adding one is one builder and one `MODELS.add` (or `add_family`) here.

A builder takes the dataset's input shape and number of classes; a family's name carries the
builder's hyperparameters (`cifar_resnet_56_32`: depth 56, width 32).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ticketlab.models import conv, mlp
from ticketlab.models.base import init_weights
from ticketlab.registry import Registry

Builder = Callable[[tuple[int, ...], int], nn.Module]

MODELS: Registry[Builder] = Registry("model")
MODELS.add("lenet_300_100", mlp.lenet_300_100, "fc 300-100 (Frankle & Carbin's LeNet)")
MODELS.add("mlp_128_64", mlp.mlp_128_64, "fc 128-64 (the seed notebook's MLP)")
MODELS.add("conv_lenet", conv.conv_lenet,
           "conv 20,50 5x5 with pooling; fc 500 (course project)")
MODELS.add("conv2", conv.conv2, "conv 64,64,pool; fc 256,256 (Frankle & Carbin's Conv-2)")
MODELS.add("conv4", conv.conv4, "conv 64,64,pool,128,128,pool; fc 256,256 (Conv-4)")
MODELS.add("conv6", conv.conv6,
           "conv 64,64,pool,128,128,pool,256,256,pool; fc 256,256 (Conv-6)")


def model_names() -> list[str]:
    return MODELS.names()


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int,
                init: str = "glorot_normal", seed: int = 0) -> nn.Module:
    """A freshly initialised model for a dataset's input shape and number of classes."""
    model = MODELS.get(name)(tuple(input_shape), num_classes)
    return init_weights(model, init, seed)
