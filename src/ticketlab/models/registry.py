"""Models by name: adding one is one builder and one `MODELS.add` (or `add_family`) here.

A builder takes the dataset's input shape and number of classes; a family's name carries the
builder's hyperparameters (`cifar_resnet_56_32`: depth 56, width 32).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

from torch import nn

from ticketlab.models import conv, mlp, resnet, vgg
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

MODELS.add("resnet18", partial(resnet.resnet18, imagenet_stem=False),
           "ResNet-18, 3x3 stem (CIFAR; the assignment's, fasterai's)")
MODELS.add("resnet18_imagenet", partial(resnet.resnet18, imagenet_stem=True),
           "ResNet-18, ImageNet stem (7x7/2 conv, max-pool): Imagenette")


def _cifar_resnet(match: re.Match[str]) -> Builder:
    depth, width = int(match["depth"]), int(match["width"] or 16)
    resnet.cifar_stages(depth, width)  # refuses a depth that is not 6n+2 before any build
    return partial(resnet.cifar_resnet, depth=depth, width=width,
                   batch_norm=match["nobn"] is None)


def _cifar_vgg(match: re.Match[str]) -> Builder:
    depth = int(match["depth"])
    vgg.plan(depth)  # refuses a depth without a plan before any build
    return partial(vgg.cifar_vgg, depth=depth, batch_norm=match["nobn"] is None)


MODELS.add_family("cifar_resnet_<depth>[_<width>][_nobn]",
                  r"cifar_resnet_(?P<depth>[1-9]\d*)(?:_(?P<width>[1-9]\d*))?(?P<nobn>_nobn)?",
                  _cifar_resnet, "OpenLTH's CIFAR ResNet, BN (_nobn: without); depth 6n+2, "
                  "widths W,2W,4W (W 16)", ("cifar_resnet_20", "cifar_resnet_56_32"))
MODELS.add_family("cifar_vgg_<depth>[_nobn]", r"cifar_vgg_(?P<depth>[1-9]\d*)(?P<nobn>_nobn)?",
                  _cifar_vgg, "OpenLTH's CIFAR VGG, BN (_nobn: without), one fc; depth 11, 13, "
                  "16 or 19", ("cifar_vgg_16", "cifar_vgg_19_nobn"))


def model_names() -> list[str]:
    return MODELS.names()


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int,
                init: str = "glorot_normal", seed: int = 0) -> nn.Module:
    """A freshly initialised model for a dataset's input shape and number of classes."""
    model = MODELS.get(name)(tuple(input_shape), num_classes)
    return init_weights(model, init, seed)
