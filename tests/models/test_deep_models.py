"""The deep models with batch norm: OpenLTH's CIFAR ResNets and VGGs, ResNet-18 (CIFAR and
ImageNet stems). Sizes from the papers, groups, seeded init, BN state, bad names and inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.test_cli import cli
from ticketlab import TicketlabError
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.models import MODELS, build_model, init_weights, prunable_groups
from ticketlab.models.resnet import cifar_stages
from ticketlab.pruning import Mask, prune_magnitude

CIFAR = (3, 32, 32)


def _count(name: str, shape: tuple[int, ...] = CIFAR, classes: int = 10) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = MODELS.get(name)(shape, classes)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, params", [
    ("cifar_resnet_20", 272_474),  # OpenLTH / the issue
    ("cifar_resnet_20_16", 272_474),  # the default width, spelt out
    # 853,018 is the count with parameter-free (option A) shortcuts; OpenLTH's 1x1-conv + BN
    # shortcuts add 2,752 (16*32 + 32*64 conv weights, 2*(32+64) BN), as in ResNet-20's.
    ("cifar_resnet_56", 853_018 + 2_752),
    ("cifar_resnet_20_32", 1_084_586),
    ("cifar_vgg_11", 9_231_114),
    ("cifar_vgg_13", 9_416_010),
    ("cifar_vgg_16", 14_728_266),  # OpenLTH / Frankle & Carbin
    ("cifar_vgg_19", 20_040_522),
    ("resnet18", 11_173_962),  # kuangliu's pytorch-cifar ResNet18
    # torchvision's resnet18 has 11,689,512 with 1000 classes: minus 512*990 + 990 fc = this
    ("resnet18_imagenet", 11_689_512 - 512 * 990 - 990),
])
def test_parameter_counts_at_cifar10(name, params):
    assert _count(name) == params


def test_counts_follow_the_architecture_by_hand():
    """ResNet-56 = ResNet-20 + 6 more plain blocks per stage; the ImageNet stem's 7x7 conv
    replaces a 3x3 one; VGG-11 from its plan."""
    blocks = sum(6 * (2 * 9 * w * w + 2 * 2 * w) for w in (16, 32, 64))
    assert _count("cifar_resnet_56") == _count("cifar_resnet_20") + blocks
    assert _count("resnet18_imagenet") - _count("resnet18") == 3 * 64 * (49 - 9)
    convs = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512)] + [(512, 512)] * 3
    assert _count("cifar_vgg_11") == (sum(9 * a * b + b + 2 * b for a, b in convs)
                                      + 512 * 10 + 10)


@pytest.mark.parametrize("name, shape", [
    ("cifar_resnet_20_4", (3, 16, 16)),
    ("cifar_resnet_8_2", (1, 28, 28)),
    ("cifar_vgg_11", (1, 16, 16)),  # the smallest side four max-pools allow
    ("resnet18", (3, 8, 8)),
    ("resnet18_imagenet", (3, 32, 32)),
])
def test_forward_shapes_on_tiny_batches(name, shape):
    model = build_model(name, shape, 7)
    assert model(torch.randn(2, *shape)).shape == (2, 7)  # training mode: BN over the batch
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, *shape)).shape == (1, 7)


def test_vgg_global_pool_is_openlths_avgpool_at_32x32():
    model = build_model("cifar_vgg_11", CIFAR, 10).eval()
    x = torch.randn(2, *CIFAR)
    feats = x
    for i, name in enumerate(model.convs, 1):
        feats = torch.relu(getattr(model, f"bn{i}")(getattr(model, name)(feats)))
        if name in model.pool_after:
            feats = nn.functional.max_pool2d(feats, 2)
    assert feats.shape[-2:] == (2, 2)
    with torch.no_grad():
        expected = model.fc(nn.AvgPool2d(2)(feats).flatten(1))
        assert torch.allclose(model(x), expected, atol=1e-6)


@pytest.mark.parametrize("name, convs, shortcuts", [
    ("cifar_resnet_20_4", 19, 2),
    ("cifar_resnet_56_2", 55, 2),
    ("resnet18", 17, 3),
    ("resnet18_imagenet", 17, 3),
    ("cifar_vgg_16", 13, 0),
])
def test_prunable_groups(name, convs, shortcuts):
    with torch.device("meta"):
        model = MODELS.get(name)(CIFAR, 10)
    groups = prunable_groups(model)
    values = list(groups.values())
    assert (values.count("conv"), values.count("shortcut"), values.count("output")) == (
        convs, shortcuts, 1)
    assert groups["fc.weight"] == "output"
    params = dict(model.named_parameters())
    for key, group in groups.items():
        assert params[key].dim() == (2 if group == "output" else 4)
        assert (params[key].shape[-1] == 1) == (group == "shortcut")  # the 1x1 convs
    bn = {f"{n}.{p}" for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
          for p in ("weight", "bias")}
    assert bn and not bn & groups.keys()
    assert not any(k.endswith("bias") for k in groups)


def test_excluding_shortcuts_leaves_them_dense():
    model = build_model("cifar_resnet_20_4", (3, 8, 8), 10)
    mask = prune_magnitude(model, Mask.dense(model), 0.5, scope="global",
                           exclude=("shortcut", "output"))
    for key, group in prunable_groups(model).items():
        kept = mask[key].float().mean().item()
        assert (kept == 1.0) == (group in ("shortcut", "output")), (key, kept)


def test_registry_names_and_bad_depths(capsys):
    assert {"cifar_resnet_<depth>[_<width>][_nobn]", "cifar_vgg_<depth>[_nobn]", "resnet18",
            "resnet18_imagenet"} <= set(MODELS.choices())
    for good in ("cifar_resnet_20", "cifar_resnet_110", "cifar_resnet_56_32", "cifar_vgg_19"):
        assert good in MODELS
    with pytest.raises(TicketlabError, match=r"depth 21 is not 6n\+2: use a depth such as "
                                             r"20, 32, 44, 56, 110"):
        MODELS.get("cifar_resnet_21")
    with pytest.raises(TicketlabError, match="depth 2 is not 6n"):
        MODELS.canonical("cifar_resnet_2_16")
    with pytest.raises(TicketlabError, match="width 0 must be >= 1"):
        cifar_stages(20, 0)
    for spelt_twice in ("cifar_resnet_020", "cifar_resnet_20_0", "cifar_vgg_016"):
        with pytest.raises(TicketlabError, match="unknown model"):  # no leading zeros
            MODELS.canonical(spelt_twice)
    with pytest.raises(TicketlabError, match="cifar_vgg depth 12 does not exist: use 11, 13, "
                                             "16, 19"):
        MODELS.get("cifar_vgg_12")
    with pytest.raises(TicketlabError, match="unknown model 'cifar_vgg'"):
        MODELS.get("cifar_vgg")
    code, out, _ = cli(capsys, "models")
    assert code == 0
    assert "cifar_resnet_<depth>[_<width>]" in out and "cifar_vgg_<depth>" in out
    assert "resnet18_imagenet" in out


def test_init_is_seeded_and_resets_batch_norm():
    shape = (3, 8, 8)
    for scheme in ("glorot_normal", "kaiming_normal"):
        a = build_model("cifar_resnet_8_4", shape, 10, scheme, seed=1).state_dict()
        b = build_model("cifar_resnet_8_4", shape, 10, scheme, seed=1).state_dict()
        c = build_model("cifar_resnet_8_4", shape, 10, scheme, seed=2).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not torch.equal(a["conv.weight"], c["conv.weight"])
        assert not torch.equal(a["blocks.1.shortcut.conv.weight"],
                               c["blocks.1.shortcut.conv.weight"])
    model = build_model("cifar_vgg_11", (3, 16, 16), 10, "kaiming_normal", seed=0)
    fan_in = 64 * 9
    assert model.conv2.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    assert torch.all(model.conv2.bias == 0)
    model(torch.randn(4, 3, 16, 16))  # training moves the running statistics
    with torch.no_grad():
        model.bn1.weight.mul_(3)
    assert model.bn1.num_batches_tracked.item() == 1
    init_weights(model, "kaiming_normal", seed=0)  # as fresh as a new build
    fresh = build_model("cifar_vgg_11", (3, 16, 16), 10, "kaiming_normal", seed=0)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in model.state_dict().items())
    assert torch.all(fresh.bn1.weight == 1) and torch.all(fresh.bn1.bias == 0)
    assert torch.all(fresh.bn1.running_mean == 0) and torch.all(fresh.bn1.running_var == 1)


def test_rewind_point_keeps_batch_norm_statistics(tmp_path: Path):
    """The rewind point is the state_dict, buffers included, and the store round-trips it."""
    model = build_model("cifar_resnet_8_4", (3, 8, 8), 10)
    model(torch.randn(4, 3, 8, 8))
    state = model.state_dict()
    assert state["bn.num_batches_tracked"].item() == 1
    assert not torch.all(state["bn.running_mean"] == 0)
    store, unit = RunStore(tmp_path), Unit(0, 0, "ticket")
    store.save_weights(unit, "rewind", state)
    back = store.load_weights(unit, "rewind")
    assert back.keys() == state.keys()
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    other = build_model("cifar_resnet_8_4", (3, 8, 8), 10, seed=9)
    other.load_state_dict(back)
    assert torch.equal(other.bn.running_var, model.bn.running_var)


def test_too_deep_for_the_images_is_one_line(tmp_path, monkeypatch, capsys):
    with pytest.raises(RuntimeError):  # four max-pools take 8x8 images to 0x0
        build_model("cifar_vgg_19", (1, 8, 8), 10)(torch.zeros(2, 1, 8, 8))
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "find", "--model", "cifar_vgg_19", "--dataset", "digits",
                       "--out", str(tmp_path / "runs"))
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "model cifar_vgg_19 does not fit dataset digits (1x8x8 images)" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name, without", [("cifar_resnet_20_nobn", "cifar_resnet_20"),
                                           ("cifar_resnet_20_32_nobn", "cifar_resnet_20_32"),
                                           ("cifar_vgg_11_nobn", "cifar_vgg_11")])
def test_nobn_names_build_the_same_network_without_batch_norm(name, without):
    with torch.device("meta"):
        plain, bn = MODELS.get(name)((3, 32, 32), 10), MODELS.get(without)((3, 32, 32), 10)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    assert set(prunable_groups(plain)) == set(prunable_groups(bn))  # same prunable weights
    convs = [m for m in plain.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is not None for c in convs)  # no batch norm after it: the conv's own bias
