"""Models by name: add a model by adding one line to `MODELS`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ticketlab.errors import TicketlabError
from ticketlab.models import conv, mlp
from ticketlab.models.base import init_weights

Builder = Callable[[tuple[int, ...], int], nn.Module]

MODELS: dict[str, tuple[Builder, str]] = {
    "lenet_300_100": (mlp.lenet_300_100, "fc 300-100 (Frankle & Carbin's LeNet)"),
    "mlp_128_64": (mlp.mlp_128_64, "fc 128-64 (the seed notebook's MLP)"),
    "conv_lenet": (conv.conv_lenet, "conv 20,50 5x5 with pooling; fc 500 (course project)"),
    "conv2": (conv.conv2, "conv 64,64,pool; fc 256,256 (Frankle & Carbin's Conv-2)"),
    "conv4": (conv.conv4, "conv 64,64,pool,128,128,pool; fc 256,256 (Conv-4)"),
    "conv6": (conv.conv6, "conv 64,64,pool,128,128,pool,256,256,pool; fc 256,256 (Conv-6)"),
}


def model_names() -> list[str]:
    return list(MODELS)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int,
                init: str = "glorot_normal", seed: int = 0) -> nn.Module:
    """A freshly initialised model for a dataset's input shape and number of classes."""
    if name not in MODELS:
        raise TicketlabError(f"unknown model '{name}': choose one of {', '.join(MODELS)}")
    model = MODELS[name][0](tuple(input_shape), num_classes)
    return init_weights(model, init, seed)
