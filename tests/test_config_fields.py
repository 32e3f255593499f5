"""Settings declared once (`config.fields.setting`): unique flat keys, flags and help generated
from the fields, and hash rules that let a new setting rename no run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from tests.test_cli import cli
from ticketlab.config import FIELDS, RUNTIME_FIELDS, ExperimentConfig, apply_overrides
from ticketlab.config.fields import HASH_RULES, FlatField, flat_fields, setting
from ticketlab.presets import preset_config


@dataclass
class _Optim:
    lr: float = setting(0.1, "learning rate")


@dataclass
class _Schedule:
    warmup: str = setting("0it", "warm-up")
    lr: float = setting(0.2, "another learning rate")  # the same flat key as _Optim.lr


@dataclass
class _TwoSections:
    optim: _Optim = field(default_factory=_Optim)
    schedule: _Schedule = field(default_factory=_Schedule)


@dataclass
class _TopAndSection:
    optim: _Optim = field(default_factory=_Optim)
    lr: float = setting(0.3, "a top-level setting named like a section's")


def test_two_sections_defining_one_flat_key_are_refused():
    with pytest.raises(TypeError, match=r"'lr' is defined twice, in optim and schedule"):
        flat_fields(_TwoSections, ("optim", "schedule"))
    with pytest.raises(TypeError, match=r"'lr' is defined twice, in optim and _TopAndSection"):
        flat_fields(_TopAndSection, ("optim",))
    # one of them alone is fine: the keys come from the fields
    assert list(flat_fields(_TwoSections, ("schedule",))) == ["optim", "warmup", "lr"]


ALL_FIELDS: list[tuple[str, FlatField]] = [
    *(("experiment", f) for f in FIELDS.values()),
    *(("runtime", f) for f in RUNTIME_FIELDS.values())]
FLAGGED = [(where, f) for where, f in ALL_FIELDS if f.meta["flag"] is not None]


@pytest.mark.parametrize("where, flat", ALL_FIELDS, ids=[f.key for _, f in ALL_FIELDS])
def test_every_field_has_a_hash_rule_and_help(where, flat):
    assert flat.meta["hash"] in HASH_RULES
    if flat.meta["flag"] is not None:
        assert flat.meta["help"].strip(), f"{flat.key} has a flag but no help"


def _option_blocks(help_text: str) -> dict[str, str]:
    """Option -> its help, from argparse's output (each option's lines joined)."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in help_text.splitlines():
        m = re.match(r"^  (-[-\w]+)", line)
        if m:
            current = m.group(1)
            blocks[current] = [line]
        elif current and line.startswith("   "):
            blocks[current].append(line)
        else:
            current = None
    return {k: " ".join(" ".join(v).split()) for k, v in blocks.items()}


@pytest.mark.parametrize("command", ["find", "sparsify"])
def test_help_is_generated_from_the_fields(capsys, monkeypatch, command):
    """find has every setting but gradual pruning's; sparsify every one but find's levels,
    controls and one-shot masks."""
    from ticketlab.cli import FIND_ONLY

    monkeypatch.setenv("COLUMNS", "2000")  # no wrapping: help texts read back whole
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    blocks = _option_blocks(out)
    expected = {}
    omit = ("sparsify",) if command == "find" else FIND_ONLY
    for _, flat in FLAGGED:
        if flat.key in omit or flat.section in omit:
            continue
        flag = flat.meta["flag"] or "--" + flat.key.replace("_", "-")
        expected[flag] = flat
        assert flag in blocks, f"{flat.key}: no {flag} in {command} --help"
        assert " ".join(flat.meta["help"].split()) in blocks[flag], flat.key
    # ...and nothing else: every option but --help, --preset, --config (and find's --plan)
    # is a field's
    assert set(blocks) - {"-h", "--preset", "--config", "--plan"} == set(expected)


@pytest.mark.parametrize("key, other", [
    ("image_size", 16), ("augment", "crop_flip"), ("norm_bias_weight_decay", 0.0),
    ("sparse_below", 0.2)])
def test_a_new_setting_at_its_default_renames_no_run(key, other):
    flat = FIELDS[key]
    assert flat.meta["hash"] == "unless_default"
    base = ExperimentConfig()
    at_default = apply_overrides(base, {key: flat.default})
    assert at_default.run_name() == base.run_name()
    assert key not in at_default.science()[flat.section]
    changed = apply_overrides(base, {key: other})
    assert changed.run_name() != base.run_name()
    assert changed.science()[flat.section][key] == other
    assert ExperimentConfig.from_science(changed.science()).run_name() == changed.run_name()
    # the same holds for a preset's run: lenet_mnist keeps its pinned name (test_config.py)
    lenet = preset_config("lenet_mnist", sparse_below=None)  # the preset before issue 14
    assert apply_overrides(lenet, {key: flat.default}).run_name() == \
        "imp_lenet_300_100_mnist_590a2c5a78"
    assert apply_overrides(lenet, {key: other}).run_name() != lenet.run_name()


def test_augment_default_in_another_spelling_renames_no_run():
    assert apply_overrides(ExperimentConfig(), {"augment": " AUTO "}).run_name() == \
        ExperimentConfig().run_name()


def test_always_fields_stay_in_the_hash_and_never_fields_stay_out():
    science = ExperimentConfig().science()
    for flat in FIELDS.values():
        owner = science if flat.section is None else science.get(flat.section, {})
        if flat.meta["hash"] == "always":
            assert flat.key in owner, flat.key  # at their defaults too: pinned names
        if flat.meta["hash"] == "never":
            assert flat.key not in owner, flat.key
    name = ExperimentConfig().run_name()
    for key, value in (("seeds", (0, 1, 2)), ("levels", 3), ("controls", ("reinit",))):
        assert FIELDS[key].meta["hash"] == "never"
        assert apply_overrides(ExperimentConfig(), {key: value}).run_name() == name


def test_a_section_at_its_defaults_leaves_the_hash():
    """find runs have no sparsify section in their science, so their names did not change
    when it was added; a sparsify run's has it, and its own kind."""
    assert "sparsify" not in ExperimentConfig().science()
    sparse = apply_overrides(ExperimentConfig(), {"target": 0.9})
    assert sparse.science()["sparsify"] == {"target": 0.9}
    assert sparse.run_name().startswith("sparsify_") and sparse.kind == "sparsify"


def test_setting_refuses_an_unknown_hash_rule():
    with pytest.raises(ValueError, match="unknown hash rule 'sometimes'"):
        setting(0, "x", hash="sometimes")
