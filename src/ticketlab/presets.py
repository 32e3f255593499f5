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
        "to 1.2%", **PAPER_COMMON, model="lenet_300_100", dataset="mnist", lr=1.2e-3,
        train="50000it", rates={"fc": 0.2, "output": 0.1}, levels=20)
for _conv, _lr, _it, _rate in (("conv2", 2e-4, 20000, 0.1), ("conv4", 3e-4, 25000, 0.1),
                               ("conv6", 3e-4, 30000, 0.15)):
    _preset(f"{_conv}_fashion", f"Frankle & Carbin's {_conv.capitalize()} settings (CIFAR-10 in "
            "the paper) on Fashion-MNIST; --dataset cifar10 once a CIFAR-10 reader exists",
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


def preset_settings(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise TicketlabError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)} "
                             "(see ticketlab presets)")
    return dict(PRESETS[name].settings)


def preset_config(name: str, **overrides: Any) -> ExperimentConfig:
    """The preset's configuration, with flat overrides: preset_config("lenet_mnist", seeds=(0,))."""
    return apply_overrides(ExperimentConfig(), {**preset_settings(name), **overrides})
