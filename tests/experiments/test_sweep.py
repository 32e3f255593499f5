"""Sweep files: the grid's order, [[runs]] tables, presets, and every example parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ticketlab.errors import TicketlabError
from ticketlab.experiments.sweep import grid_points, load_sweep, read_sweep

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE = 'dataset = "digits"\ntrain = "60it"\neval_every = "20it"\n'


def sweep_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(BASE + text)
    return path


def test_grid_product_first_key_slowest_then_runs():
    points = grid_points({"rewind": ["0it", "20it"], "criterion": ["large_final", "movement"]},
                         [{"scope": "layerwise"}, {"scope": "global"}])
    assert [(p["rewind"], p["criterion"], p["scope"]) for p in points] == [
        (r, c, s) for r in ("0it", "20it") for c in ("large_final", "movement")
        for s in ("layerwise", "global")]
    assert grid_points({"rewind": ["0it", "20it"]}) == [{"rewind": "0it"}, {"rewind": "20it"}]


def test_configs_follow_the_grid_with_base_settings_and_labels(tmp_path):
    sweep = read_sweep(sweep_file(tmp_path, 'levels = 2\n[grid]\nrewind = ["0it", "20it"]\n'
                                  'scope = ["layerwise", "global"]\n'))
    assert [(c.rewind, c.pruning.scope) for c in sweep.configs] == [
        ("0it", "layerwise"), ("0it", "global"), ("20it", "layerwise"), ("20it", "global")]
    assert all(c.training.train == "60it" and c.levels == 2 for c in sweep.configs)
    # as the report's legend names them (in the science's order)
    assert sweep.labels() == ["scope=layerwise, rewind=0it", "scope=global, rewind=0it",
                              "scope=layerwise, rewind=20it", "scope=global, rewind=20it"]
    assert len({c.run_hash() for c in sweep.configs}) == 4


def test_runs_tables_and_presets(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('preset = "lenet_mnist"\ntrain = "1000it"\n[grid]\nrewind = ["0it", "100it"]'
                    '\n[[runs]]\nscope = "layerwise"\n[[runs]]\nscope = "global"\nrate = 0.3\n')
    configs = load_sweep(path)
    assert [(c.rewind, c.pruning.scope, c.pruning.rate) for c in configs] == [
        ("0it", "layerwise", None), ("0it", "global", 0.3), ("100it", "layerwise", None),
        ("100it", "global", 0.3)]
    # the preset below the file's settings: its dataset and rates, the file's budget
    assert {c.data.dataset for c in configs} == {"mnist"}
    assert configs[0].pruning.rates == {"fc": 0.2, "output": 0.1, "conv": 0.1}
    assert {c.training.train for c in configs} == {"1000it"}
    path.write_text('[grid]\npreset = ["lenet_mnist", "mlp_mnist"]\n')
    assert [c.model.model for c in load_sweep(path)] == ["lenet_300_100", "mlp_128_64"]


@pytest.mark.parametrize("text, message", [
    ('[grid]\nrewnd = ["0it"]\n', "unknown setting 'rewnd'"),
    ('[grid]\nrewnd = ["0it"]\n', "did you mean 'rewind'?"),
    ('lrr = 0.1\n[grid]\nrewind = ["0it", "20it"]\n', "unknown setting 'lrr'"),
    ('[grid]\nrewind = "20it"\n', "[grid] rewind in"),
    ('[grid]\nrewind = "20it"\n', "must be a non-empty list"),
    ('[grid]\nrewind = []\n', "must be a non-empty list"),
    ('device = "cpu"\n[grid]\nrewind = ["0it"]\n', "'device' in"),
    ('device = "cpu"\n[grid]\nrewind = ["0it"]\n', "give --device on the command line"),
    ('[grid]\nout = ["a", "b"]\n', "give --out on the command line"),
    ('[[runs]]\nthreads = 2\n', "[[runs]] table 1: 'threads'"),
    ('[grid]\nseeds = [[0], [1]]\n', "runs 1 (seeds=0) and 2 (seeds=1) are the same run"),
    ('[grid]\nlevels = [2, 3]\n', "seeds, levels and controls do not"),
    ('[grid]\nrewind = ["0it", "0ep"]\n', "runs 1 (rewind=0it) and 2 (rewind=0ep)"),
    ('[grid]\nrewind = ["0it", "100it"]\n', "run 2 (rewind=100it): rewind point 100it"),
    ('[grid]\nscope = ["layerwise", "globl"]\n', "run 2 (scope=globl): unknown scope 'globl'"),
    ('[grid]\nlr = [0.1, "x"]\n', "setting 'lr' is \"x\""),
    ('[grid]\npreset = ["lenet_mnist", "nope"]\n', "unknown preset 'nope'"),
    ('rewind = "0it"\n[grid]\nrewind = ["0it", "20it"]\n', "both a base setting and a [grid]"),
    ('[grid]\nscope = ["layerwise"]\n[[runs]]\nscope = "global"\n', "both a [grid] key and"),
    ('lr = 0.1\n', "has no [grid] and no [[runs]]"),
    ('grid = 3\n', "must be a table"),
    ('runs = [1, 2]\n', "[[runs]] tables of settings"),
    ('[grid\n', "fix the TOML"),
])
def test_bad_sweep_files_are_refused_in_one_line(tmp_path, text, message):
    with pytest.raises(TicketlabError) as e:
        read_sweep(sweep_file(tmp_path, text))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file_and_directory(tmp_path):
    for path, what in ((tmp_path / "nope.toml", "not found"), (tmp_path, "is a directory")):
        with pytest.raises(TicketlabError, match=what):
            read_sweep(path)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_parses_into_distinct_valid_runs(path):
    configs = load_sweep(path)  # each validated; no data needed
    assert len(configs) >= 2
    assert len({c.run_hash() for c in configs}) == len(configs)


def test_examples_exist():
    assert {p.name for p in EXAMPLES.glob("*.toml")} >= {"late_rewinding.toml",
                                                         "layerwise_vs_global.toml"}
