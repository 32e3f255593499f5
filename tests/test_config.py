"""The configuration: run names that never change, one name per equivalent spelling, and
types checked against the dataclasses' own annotations."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import pytest

from ticketlab.config import (
    ExperimentConfig,
    Runtime,
    _typed_fields,
    apply_overrides,
    check_type,
    runtime_hints,
)
from ticketlab.errors import TicketlabError
from ticketlab.presets import preset_config


def config(**values) -> ExperimentConfig:
    return apply_overrides(ExperimentConfig(), values)


# Computed with the code of 41f088c (before canonicalisation): runs on disk keep their names.
@pytest.mark.parametrize("make, name", [
    (ExperimentConfig, "imp_lenet_300_100_digits_a8c447f9d0"),
    # the preset as it was before sparse kernels (issue 14 turned them on: a new name)
    (lambda: preset_config("lenet_mnist", sparse_below=0), "imp_lenet_300_100_mnist_590a2c5a78"),
    (lambda: preset_config("lenet_mnist"), "imp_lenet_300_100_mnist_be17f54cbb"),
    (lambda: preset_config("conv6_fashion"), "imp_conv6_fashion-mnist_12247b23c7"),
    (lambda: preset_config("mlp_mnist"), "imp_mlp_128_64_mnist_ab7cdafdeb"),
    (lambda: preset_config("lf_conv_mnist"), "oneshot_conv_lenet_mnist_2486bb2114"),
    (lambda: config(one_shot=(0.5, 0.2, 0.1)), "oneshot_lenet_300_100_digits_ec656f9325"),
    (lambda: config(one_shot=(0.5, 0.2), criterion="movement"),
     "oneshot_lenet_300_100_digits_91bea16c45"),
    (lambda: config(rewind="500it", scope="global", rate=0.2, exclude=("output",)),
     "imp_lenet_300_100_digits_0a7da0cbcc"),
    (lambda: config(optimizer="sgd", momentum=0.9, nesterov=True, schedule="step",
                    milestones=("100it", "200it"), warmup="10it", weight_decay=1e-4),
     "imp_lenet_300_100_digits_e966f72722"),
])
def test_existing_run_names_do_not_change(make, name):
    assert make().run_name() == name
    assert ExperimentConfig.from_science(make().science()).run_name() == name


@pytest.mark.parametrize("spelling", [
    {"train": "040ep"}, {"train": " 40 ep"}, {"dataset": "DIGITS"}, {"dataset": " digits "},
    {"rewind": "0ep"}, {"rewind": "00it"}, {"warmup": "0ep"}, {"eval_every": "0100it"},
    {"model": "LeNet_300_100"}, {"optimizer": "ADAM"}, {"init": "Glorot_Normal"},
    {"lr": 0.0012}, {"momentum": 0}, {"weight_decay": 0}, {"gamma": 0.1},
])
def test_equivalent_spellings_name_one_run(spelling):
    c = config(**spelling)
    assert c.run_name() == ExperimentConfig().run_name()
    c.validate()


def test_dataset_alias_and_case_name_the_registered_dataset():
    names = {config(dataset=d).run_name() for d in ("fashion-mnist", "fashion_mnist",
                                                    "Fashion-MNIST", "FASHION_MNIST")}
    assert len(names) == 1 and "_fashion-mnist_" in names.pop()
    assert config(dataset="fashion_mnist").data.dataset == "fashion-mnist"


def test_different_science_still_names_different_runs():
    base = ExperimentConfig().run_name()
    for change in ({"train": "41ep"}, {"train": "40it"}, {"lr": 0.0013}, {"rewind": "1it"},
                   {"dataset": "mnist"}, {"milestones": ("5it",)}, {"test_curve": True}):
        assert config(**change).run_name() != base, change


def test_whole_numbers_in_number_settings_are_floats():
    c = config(lr=1, rates={"fc": 0}, one_shot=[1, 0])
    assert isinstance(c.training.lr, float) and c.training.lr == 1.0
    assert isinstance(c.pruning.rates["fc"], float)
    assert c.one_shot == (1.0, 0.0) and all(isinstance(d, float) for d in c.one_shot)
    assert config(lr=1).run_hash() == config(lr=1.0).run_hash()


def test_a_directly_built_config_hashes_canonically():
    c = ExperimentConfig()
    c.training.train, c.data.dataset = "040ep", "DIGITS"
    assert c.run_name() == ExperimentConfig().run_name()


def _wrong_value(hint):
    """A value of the wrong type for a field of type `hint`."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        return 3
    if origin is dict:
        return 0.2
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return {str: 5, int: "3", float: "abc", bool: "yes", Path: 5}[args[0]]


@pytest.mark.parametrize("key", sorted(_typed_fields()))
def test_every_setting_refuses_a_wrong_type_naming_key_value_and_type(key):
    hint = _typed_fields()[key][1]
    value = _wrong_value(hint)
    with pytest.raises(TicketlabError) as e:
        config(**{key: value})
    message = str(e.value)
    assert f"'{key}'" in message and "expected" in message and "\n" not in message
    assert repr(value).strip("'") in message


@pytest.mark.parametrize("key", sorted(set(runtime_hints()) - {"command"}))
def test_runtime_keys_refuse_a_wrong_type(key):
    with pytest.raises(TicketlabError, match=f"'{key}'.*expected"):
        check_type(key, [1], runtime_hints()[key])


@pytest.mark.parametrize("value", [True, [1.5], ["0"], [None]])
def test_list_elements_and_booleans_are_checked(value):
    with pytest.raises(TicketlabError, match="'seeds'"):
        config(seeds=value)


def test_paths_from_strings():
    hints = runtime_hints()
    assert check_type("out", "x/y", hints["out"]) == Path("x/y")
    assert check_type("data_dir", None, hints["data_dir"]) is None


@pytest.mark.parametrize("setting, value", [
    ("lr", math.inf), ("lr", math.nan), ("weight_decay", math.inf), ("weight_decay", math.nan),
    ("gamma", math.nan), ("gamma", math.inf), ("momentum", math.nan), ("lr", -1.0),
])
def test_non_finite_numbers_are_refused(setting, value):
    with pytest.raises(TicketlabError, match=f"{setting.replace('_', ' ')} must be a finite"):
        config(**{setting: value}).validate()


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, "60"])
def test_runtime_checkpoint_interval(value):
    with pytest.raises(TicketlabError, match="--checkpoint-every"):
        Runtime(checkpoint_every=value).validate()


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_device_names_accepted_without_torch(device):
    Runtime(device=device).validate()


@pytest.mark.parametrize("device", ["meta", "tpu", "CPU", "cuda:", "cuda:x", "cpu:0 "])
def test_other_devices_are_refused(device):
    with pytest.raises(TicketlabError, match=f"unknown device '{device}'"):
        Runtime(device=device).validate()


def test_model_must_fit_the_dataset_before_anything_loads():
    with pytest.raises(TicketlabError, match="conv_lenet does not fit dataset digits "
                       r"\(1x8x8 images\): it needs images of at least 16x16"):
        config(model="conv_lenet").validate()
    for model in ("conv2", "conv4", "conv6"):  # 3x3 "same" convolutions fit 8x8
        config(model=model).validate()
    config(model="conv_lenet", dataset="mnist").validate()


def test_pruning_groups_are_the_models():
    config(model="conv2", rates={"conv": 0.1}, exclude=("conv", "output")).validate()
    config(rates={"conv": 0.3}).validate()  # a paper group the MLP lacks: ignored
    with pytest.raises(TicketlabError, match="unknown group 'conv' in --exclude: "
                       "lenet_300_100 has the groups fc, output"):
        config(exclude=("conv",)).validate()
    with pytest.raises(TicketlabError, match="unknown group 'hidden' in --rates"):
        config(rates={"hidden": 0.2}).validate()


@pytest.mark.parametrize("seeds, needle", [((0, 0), "seeds repeat"), ((1, 2, 1), "repeat"),
                                           ((-1,), "seed -1 is negative")])
def test_seeds_are_distinct_and_non_negative(seeds, needle):
    with pytest.raises(TicketlabError, match=needle):
        config(seeds=seeds).validate()
