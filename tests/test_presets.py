import pytest

from tests.data.test_data_imagefolder import make_tree
from tests.test_cli import cli
from ticketlab.cli import build_parser, resolve
from ticketlab.config import PAPER_RATES, Step, field_index
from ticketlab.errors import TicketlabError
from ticketlab.presets import PRESETS, preset_config


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_a_valid_configuration(name, tmp_path, monkeypatch):
    folder = PRESETS[name].settings.get("dataset", "").removeprefix("imagefolder:")
    if folder != PRESETS[name].settings.get("dataset", ""):  # a relative path: make it here
        make_tree(tmp_path / folder)
        monkeypatch.chdir(tmp_path)
    config, _ = resolve(build_parser().parse_args(["find", "--preset", name]))
    assert config == preset_config(name)
    index = field_index()
    for key, value in PRESETS[name].settings.items():  # every setting of the preset is applied
        if key == "dataset" and folder != value:
            assert config.data.dataset == f"imagefolder:{tmp_path / folder}"  # made absolute
            continue
        section = index[key]
        got = getattr(config if section is None else getattr(config, section), key)
        expected = {**PAPER_RATES, **value} if key == "rates" else value
        assert got == (tuple(expected) if isinstance(expected, list) else expected), key
    config.validate()
    # ...and validation looks at this configuration: one broken setting of it is refused
    with pytest.raises(TicketlabError, match="unknown model"):
        preset_config(name, model="resnet").validate()


def test_lenet_mnist_is_the_papers_setting():
    c = preset_config("lenet_mnist")
    t, p = c.training, c.pruning
    assert (c.model.model, c.model.init, c.data.dataset) == ("lenet_300_100", "glorot_normal",
                                                              "mnist")
    assert (t.optimizer, t.lr, t.batch_size, t.train, t.eval_every) == \
        ("adam", 1.2e-3, 60, "50000it", "100it")
    assert (p.scope, p.rates["fc"], p.rates["output"], c.rewind) == ("layerwise", 0.2, 0.1, "0it")
    assert c.controls == ("reinit", "random") and c.seeds == (0, 1, 2, 3, 4)
    assert c.data.validation_size == 5000
    density = (265_200 * 0.8**c.levels + 1_000 * 0.9**c.levels) / 266_200
    assert density == pytest.approx(0.012, abs=0.001)  # "down to about 1.2%"


@pytest.mark.parametrize("name, lr, iterations, conv_rate", [
    ("conv2_fashion", 2e-4, "20000it", 0.1), ("conv4_fashion", 3e-4, "25000it", 0.1),
    ("conv6_fashion", 3e-4, "30000it", 0.15)])
def test_conv_presets_follow_table_1(name, lr, iterations, conv_rate):
    c = preset_config(name)
    assert (c.model.model, c.data.dataset) == (name.split("_")[0], "fashion-mnist")
    assert (c.training.lr, c.training.train, c.training.batch_size) == (lr, iterations, 60)
    assert c.pruning.rates == {"conv": conv_rate, "fc": 0.2, "output": 0.1}


def test_mlp_mnist_is_the_seed_notebooks_setting():
    c = preset_config("mlp_mnist")
    assert (c.model.model, c.training.train, c.training.batch_size) == ("mlp_128_64", "4ep", 32)
    assert c.pruning.rates["fc"] == c.pruning.rates["output"] == 0.4
    assert 0.6**c.levels == pytest.approx(0.0467, abs=1e-4)  # its last density, 4.67%


def test_flags_and_config_files_override_a_preset(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('train = "100it"\n')
    args = build_parser().parse_args(["find", "--preset", "lenet_mnist", "--config", str(cfg),
                                      "--seeds", "0", "--lr", "0.001"])
    config, _ = resolve(args)
    assert (config.training.lr, config.training.train, config.seeds) == (0.001, "100it", (0,))
    assert config.training.batch_size == 60  # the rest is the preset's


def test_presets_command_lists_every_preset(capsys):
    code, out, _ = cli(capsys, "presets")
    assert code == 0
    for name in PRESETS:
        assert name in out
    assert "--lr 0.0012" in out


def test_unknown_preset(capsys):
    code, _, err = cli(capsys, "find", "--preset", "resnet_imagenet")
    assert code == 2 and "unknown preset 'resnet_imagenet'" in err
    with pytest.raises(TicketlabError):
        preset_config("nope")


def test_lf_conv_mnist_is_the_course_projects_setting():
    c = preset_config("lf_conv_mnist")
    t = c.training
    assert (c.model.model, c.data.dataset, c.model.init) == ("conv_lenet", "mnist", "torch_default")
    assert (t.optimizer, t.lr, t.momentum, t.batch_size, t.train) == ("sgd", 0.01, 0.0, 64, "5ep")
    assert c.pruning.threshold == 1.0 and c.n_levels == 1 and c.controls == ("reinit",)


def test_readme_lists_every_preset_from_the_registry():
    from pathlib import Path

    from ticketlab.presets import README_END, README_START, readme_block

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert README_START in readme and README_END in readme
    start = readme.index(README_START)
    block = readme[start:readme.index(README_END, start) + len(README_END)]
    assert block == readme_block(), "README's presets differ from PRESETS: paste the output " \
        "of `python -m ticketlab.presets` between its markers"
    listed = [line.split("`")[1] for line in block.splitlines() if line.startswith("- `")]
    assert listed == list(PRESETS) and "lf_conv_mnist" in listed


CIFAR10_TRAIN = 50_000 - 5_000  # Frankle & Carbin hold out 5,000 images for validation


def _cifar_checks(c, model: str, batch: int) -> None:
    t, p = c.training, c.pruning
    assert (c.model.model, c.data.dataset, c.model.init) == (model, "cifar10", "kaiming_normal")
    assert (t.optimizer, t.momentum, t.weight_decay, t.batch_size) == ("sgd", 0.9, 1e-4, batch)
    assert (t.schedule, t.gamma, t.nesterov) == ("step", 0.1, False)
    assert (p.scope, p.rates_arg(), c.rewind) == ("global", 0.2, "0it")
    assert c.data.info().n_train - c.data.info().validation_size == CIFAR10_TRAIN
    # CIFAR's standard augmentation: --augment auto means crop_flip on CIFAR-10
    assert t.augment == "auto" and c.data.info().augment == "crop_flip"
    assert t.norm_bias_weight_decay is None  # the papers decay every parameter alike


@pytest.mark.parametrize("name, model", [("resnet20_cifar10", "cifar_resnet_20"),
                                         ("vgg16_cifar10", "cifar_vgg_16")])
def test_openlth_presets(name, model):
    c = preset_config(name)
    t = c.training
    _cifar_checks(c, model, 128)
    assert (t.lr, t.train, t.milestones, t.warmup) == (0.1, "160ep", ("80ep", "120ep"), "0it")
    assert c.pruning.exclude == ("output",)
    ipe = CIFAR10_TRAIN // 128
    assert ipe == 351 and c.budget(ipe) == (0, 160 * 351)
    assert [Step.parse(m).iterations(ipe) for m in t.milestones] == [80 * 351, 120 * 351]


@pytest.mark.parametrize("name, warmup", [("vgg19_cifar10", "0it"),
                                          ("vgg19_cifar10_warmup", "10000it")])
def test_vgg19_presets_are_the_papers(name, warmup):
    c = preset_config(name)
    t = c.training
    _cifar_checks(c, "cifar_vgg_19", 64)
    assert (t.lr, t.train, t.milestones, t.warmup) == (0.1, "160ep", ("80ep", "120ep"), warmup)
    assert c.pruning.exclude == ("output",)
    # 160 epochs of 703 steps: the paper's 112,480 iterations exactly
    assert Step.parse(t.train).iterations(CIFAR10_TRAIN // 64) == 112_480
    assert c.budget(CIFAR10_TRAIN // 64) == (0, 112_480)


@pytest.mark.parametrize("name, lr, warmup", [("resnet18_cifar10", 0.01, "0it"),
                                              ("resnet18_cifar10_warmup", 0.03, "20000it")])
def test_resnet18_presets_are_the_papers(name, lr, warmup):
    c = preset_config(name)
    t = c.training
    _cifar_checks(c, "cifar_resnet_20", 128)  # the paper's "ResNet-18" is ResNet-20
    assert (t.lr, t.train, t.milestones, t.warmup) == (lr, "30000it", ("20000it", "25000it"),
                                                       warmup)
    assert set(c.pruning.exclude) == {"output", "shortcut"}


def test_resnet18_imagenette_is_the_fasterai_tutorial(tmp_path):
    folder = make_tree(tmp_path / "imagenette2-160")
    c = preset_config("resnet18_imagenette", dataset=f"imagefolder:{folder}")
    t, p = c.training, c.pruning
    assert (c.model.model, c.data.image_size) == ("resnet18_imagenet", 128)
    assert c.data.info().input_shape == (3, 128, 128)
    assert (t.optimizer, t.lr, t.batch_size, t.train, t.weight_decay) == ("adam", 1e-3, 64,
                                                                          "5ep", 0.0)
    assert (p.scope, c.levels, c.rewind, p.exclude) == ("global", 3, "0it", ("output",))
    assert (1 - p.rates_arg()) ** c.levels == pytest.approx(0.5, abs=1e-3)  # 50% after 3
    assert t.augment == "auto" and c.data.info().augment == "crop_flip"
    c.validate()
