"""Named settings from the papers and the seed notebooks: `ticketlab find --preset NAME`.

A preset is a dict of flat settings (the keys of `--help` and TOML files) applied on top of
the defaults; a config file and flags given with it override it. Add one with `_preset`.
Sources: ../shared/reference/lottery-tickets.md (Frankle & Carbin 2019, Table 1 and
Section 2-4) and the seed notebook for `mlp_mnist`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ticketlab.config import ExperimentConfig, apply_overrides
from ticketlab.errors import TicketlabError

PAPER_COMMON: dict[str, Any] = {
    "init": "glorot_normal", "optimizer": "adam", "batch_size": 60, "eval_every": "100it",
    "validation_size": 5000, "scope": "layerwise", "rewind": "0it",
    "controls": ("reinit", "random"), "seeds": (0, 1, 2, 3, 4),
}


@dataclass(frozen=True)
class Preset:
    name: str
    text: str
    settings: dict[str, Any]


PRESETS: dict[str, Preset] = {}


def _preset(name: str, text: str, **settings: Any) -> None:
    PRESETS[name] = Preset(name, text, settings)


_preset("lenet_mnist", "Frankle & Carbin's LeNet-300-100 on MNIST (Figures 1, 3-5): 20 levels "
        "to 1.2%; masked layers below 12% density train with sparse kernels",
        **PAPER_COMMON, model="lenet_300_100", dataset="mnist", lr=1.2e-3, train="50000it",
        rates={"fc": 0.2, "output": 0.1}, levels=20, sparse_below=0.12)
for _conv, _lr, _it, _rate in (("conv2", 2e-4, 20000, 0.1), ("conv4", 3e-4, 25000, 0.1),
                               ("conv6", 3e-4, 30000, 0.15)):
    _preset(f"{_conv}_fashion", f"Frankle & Carbin's {_conv.capitalize()} settings (CIFAR-10 in "
            "the paper) on Fashion-MNIST; add --dataset cifar10 for the paper's data",
            **PAPER_COMMON, model=_conv, dataset="fashion-mnist", lr=_lr, train=f"{_it}it",
            rates={"conv": _rate, "fc": 0.2, "output": 0.1}, levels=20)
_preset("mlp_mnist", "the seed notebook's MLP 784-128-64-10 on MNIST: every layer pruned 40% "
        "per round, 4 epochs, 6 rounds to 4.67% (its optimizer is not shown: SGD lr 0.001 "
        "momentum 0.9 of the PyTorch tutorial it follows is assumed)",
        model="mlp_128_64", dataset="mnist", init="torch_default", optimizer="sgd", lr=1e-3,
        momentum=0.9, batch_size=32, train="4ep", eval_every="100it", validation_size=5000,
        scope="layerwise", rates={"fc": 0.4, "output": 0.4}, rewind="0it", levels=6,
        controls=("reinit", "random"), seeds=(0, 1, 2, 3, 4))
_preset("lf_conv_mnist", "the course project's conv LeNet on MNIST with its LF threshold mask "
        "(alpha 1): SGD lr 0.01 without momentum, batch 64, 5 epochs; the ticket and the same "
        "mask from a new init (then `ticketlab supermask RUN --alpha 1` for the untrained rows)",
        model="conv_lenet", dataset="mnist", init="torch_default", optimizer="sgd", lr=0.01,
        momentum=0.0, batch_size=64, train="5ep", eval_every="100it", validation_size=5000,
        threshold=1.0, rewind="0it", controls=("reinit",), seeds=(0, 1, 2))


# Deep networks on CIFAR-10 (the paper's Section 4 and OpenLTH's defaults). OpenLTH trains
# on all 50,000 images; here 5,000 are held out for early stopping as in Frankle & Carbin,
# so an epoch is 351 steps at batch 128 (703 at batch 64: 160 epochs = 112,480 iterations,
# the paper's VGG-19 budget exactly). Batch norm is never pruned; augmentation (random crop
# with 4-pixel padding, flip) is CIFAR's default (--augment auto).
CIFAR_COMMON: dict[str, Any] = {
    "dataset": "cifar10", "init": "kaiming_normal", "optimizer": "sgd", "momentum": 0.9,
    "weight_decay": 1e-4, "scope": "global", "rate": 0.2, "eval_every": "1ep",
    "rewind": "0it", "levels": 20, "controls": ("reinit", "random"), "seeds": (0, 1, 2),
}
OPENLTH = {**CIFAR_COMMON, "lr": 0.1, "batch_size": 128, "train": "160ep", "schedule": "step",
           "milestones": ("80ep", "120ep"), "gamma": 0.1, "exclude": ("output",)}
_preset("resnet20_cifar10", "OpenLTH's cifar_resnet_20 (272,474 parameters): SGD 0.1, momentum "
        "0.9, x0.1 at epochs 80 and 120, weight decay 1e-4, batch 128, 160 epochs, global 20% "
        "per level, output layer unpruned", **OPENLTH, model="cifar_resnet_20")
_preset("vgg16_cifar10", "OpenLTH's cifar_vgg_16 (14,728,266 parameters): the settings of "
        "resnet20_cifar10, output layer unpruned", **OPENLTH, model="cifar_vgg_16")
VGG19 = {**CIFAR_COMMON, "model": "cifar_vgg_19", "lr": 0.1, "batch_size": 64, "train": "160ep",
         "schedule": "step", "milestones": ("80ep", "120ep"), "gamma": 0.1,
         "exclude": ("output",)}
_preset("vgg19_cifar10", "Frankle & Carbin's VGG-19 (Section 4, Table 1): SGD 0.1, momentum "
        "0.9, x0.1 at epochs 80 and 120, weight decay 1e-4, batch 64, 112,480 iterations, global "
        "20% of conv weights, output unpruned (no winning tickets at this rate in the paper)",
        **VGG19)
_preset("vgg19_cifar10_warmup", "vgg19_cifar10 with 10,000 iterations of linear warm-up to lr "
        "0.1 (the paper's setting that finds tickets down to 1.5%)", **VGG19, warmup="10000it")
RESNET18 = {**CIFAR_COMMON, "model": "cifar_resnet_20", "batch_size": 128, "train": "30000it",
            "schedule": "step", "milestones": ("20000it", "25000it"), "gamma": 0.1,
            "exclude": ("output", "shortcut")}
_preset("resnet18_cifar10", "Frankle & Carbin's \"ResNet-18\", which is the 20-layer CIFAR "
        "ResNet (Table 1: 16 3x3 convs, 274K parameters; --model resnet18 is the 11M network of "
        "the assignment): SGD 0.01, momentum 0.9, x0.1 at 20K and 25K of 30K iterations, weight "
        "decay 1e-4, batch 128, global 20% of conv weights, fc and 1x1 shortcuts unpruned",
        **RESNET18, lr=0.01)
_preset("resnet18_cifar10_warmup", "resnet18_cifar10 at lr 0.03 with 20,000 iterations of "
        "linear warm-up (the paper's setting that finds tickets down to 11.8%)", **RESNET18,
        lr=0.03, warmup="20000it")
_preset("resnet18_imagenette", "the fasterai tutorial: torchvision's ResNet-18 (ImageNet stem) "
        "on Imagenette, Adam lr 1e-3, batch 64, 5 epochs per round, 3 rounds of global pruning "
        "to 50% (0.2063 per round: 79.4, 63.0, 50.0% kept; fasterai's schedule keeps 83.3, "
        "66.7, 50%), rewound to the initialisation; images at 128 pixels (the tutorial does not "
        "show its size); fastai's decoupled weight decay 0.01 has no equal here and is left "
        "out. Give the folder: --dataset imagefolder:PATH (default ./imagenette2-160)",
        model="resnet18_imagenet", dataset="imagefolder:imagenette2-160", image_size=128,
        init="kaiming_normal", optimizer="adam", lr=1e-3, batch_size=64, train="5ep",
        eval_every="1ep", scope="global", rate=0.2063, exclude=("output",), rewind="0it",
        levels=3, controls=("reinit", "random"), seeds=(0,))


def preset_settings(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise TicketlabError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)} "
                             "(see ticketlab presets)")
    return dict(PRESETS[name].settings)


def preset_config(name: str, **overrides: Any) -> ExperimentConfig:
    """The preset's configuration, with flat overrides: preset_config("lenet_mnist", seeds=(0,))."""
    return apply_overrides(ExperimentConfig(), {**preset_settings(name), **overrides})


README_START = "<!-- presets: generated by `python -m ticketlab.presets` from PRESETS -->"
README_END = "<!-- /presets -->"


def readme_block() -> str:
    """README's list of presets, one line each, written from the registry (tests/
    test_presets.py fails when README's copy differs)."""
    lines = [f"- `{p.name}`: {p.text}" for p in PRESETS.values()]
    return "\n".join([README_START, *lines, README_END])


if __name__ == "__main__":
    print(readme_block())
