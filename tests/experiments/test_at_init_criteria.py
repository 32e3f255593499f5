"""Pruning at initialisation from `find`: SNIP, GraSP and SynFlow cut each level's mask from
the dense network at the rewind point under the parent's mask, beside IMP's criteria."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_config
from ticketlab.cli import main
from ticketlab.config import derive_seed
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.experiments.supermasks import scan_supermasks
from ticketlab.models import build_model
from ticketlab.pruning import (
    Mask,
    rates_for_density,
    snip_scores,
    synflow_mask,
    synflow_order,
)
from ticketlab.pruning.at_init import cut, mask_from_scores, scoring_batches


def _rewind_model(config, store: RunStore, data) -> torch.nn.Module:
    """The run's dense network at its rewind point, rebuilt by hand."""
    model = build_model(config.model.model, data.input_shape, data.num_classes,
                        config.model.init, 123)
    model.load_state_dict(store.load_weights(Unit(0, 0, "ticket"), "rewind"))
    return model


def _snip_batch(data, level: int, n: int = 100) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """SNIP's one batch of 100, drawn by hand: the first of a permutation seeded per level."""
    g = torch.Generator().manual_seed(derive_seed(0, "criterion", level))
    idx = torch.randperm(data.n_train, generator=g)[:n]
    return [(data.x_train[idx], data.y_train[idx])]


def _total(mask: Mask) -> int:
    return sum(t for _, t in mask.counts().values())


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_snip_one_shot_masks_are_snip_by_hand(runtime, scope):
    densities = (0.2, 0.05)
    config = tiny_config(criterion="snip", scope=scope, one_shot=densities, controls=())
    run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    data = config.data.load()
    model = _rewind_model(config, store, data)
    dense = Mask.dense(model)
    for level, d in enumerate(densities, start=1):
        scores = snip_scores(model, _snip_batch(data, level))
        if scope == "global":
            expected = mask_from_scores(dense, scores, d)
        else:  # each layer by the paper's rates, stretched to the density
            rates = rates_for_density(dense, config.pruning.rates_arg(), d, scope=scope)
            expected = cut(dense, scores, rates, scope=scope)
        ticket = store.load_mask(Unit(0, level, "ticket"))
        assert ticket == expected, level
        assert abs(ticket.density() - d) <= (1 / _total(ticket) if scope == "global" else 0.01)
        assert store.result(Unit(0, level, "ticket"))["density"] == pytest.approx(
            ticket.density())
    # level 0 is the dense training, the same as a large_final run's (shared, not retrained)
    assert store.load_mask(Unit(0, 0, "ticket")).density() == 1.0


def test_snip_iterative_scores_the_masked_rewind_network_each_level(runtime):
    config = tiny_config(criterion="snip", scope="global", levels=2, controls=())
    run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    data = config.data.load()
    model = _rewind_model(config, store, data)
    for level in (1, 2):
        before = store.load_mask(Unit(0, level - 1, "ticket"))
        scores = snip_scores(model, _snip_batch(data, level), before)
        assert store.load_mask(Unit(0, level, "ticket")) == cut(before, scores, 0.2)
    assert store.load_mask(Unit(0, 2, "ticket")).density() == pytest.approx(0.64, abs=1e-5)


def test_synflow_keeps_every_layer_at_one_percent_and_its_controls_keep_the_counts(runtime):
    config = tiny_config(criterion="synflow", scope="global", one_shot=(0.01,),
                         controls=("invert", "shuffle"), train="20it")
    assert config.controls == ("invert", "random")  # shuffle is random: one unit, one name
    run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    data = config.data.load()
    ticket = store.load_mask(Unit(0, 1, "ticket"))
    assert all(kept > 0 for kept, _ in ticket.counts().values()), ticket.counts()
    assert abs(ticket.density() - 0.01) <= 1 / _total(ticket)
    model = _rewind_model(config, store, data)
    assert ticket == synflow_mask(model, 0.01, data.input_shape)  # 100 rounds, by hand
    for control in ("invert", "random"):
        assert store.load_mask(Unit(0, 1, control)).counts() == ticket.counts(), control
    # invert keeps, per tensor, what SynFlow removed first (none of the ticket at 1%)
    inverted = store.load_mask(Unit(0, 1, "invert"))
    order = synflow_order(model, 0.01, data.input_shape)
    for k in ticket:
        assert not (inverted[k] & ticket[k]).any(), k
        assert order[k][inverted[k]].max() < order[k][~inverted[k]].min(), k


def test_invert_and_shuffle_with_snip_keep_the_tickets_counts(runtime):
    config = tiny_config(criterion="snip", one_shot=(0.2,), controls=("shuffle", "invert"))
    run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    data = config.data.load()
    ticket = store.load_mask(Unit(0, 1, "ticket"))
    inverted = store.load_mask(Unit(0, 1, "invert"))
    shuffled = store.load_mask(Unit(0, 1, "random"))
    assert inverted.counts() == ticket.counts() == shuffled.counts()
    assert shuffled != ticket and inverted != ticket
    scores = snip_scores(_rewind_model(config, store, data), _snip_batch(data, 1))
    for k in ticket:  # the lowest SNIP scores of each tensor, the ticket's highest
        only_invert, only_ticket = inverted[k] & ~ticket[k], ticket[k] & ~inverted[k]
        assert scores[k][only_invert].max() <= scores[k][only_ticket].min(), k
    assert store.result(Unit(0, 1, "invert"))["density"] == pytest.approx(ticket.density())


def test_grasp_runs_and_draws_ten_examples_per_class(runtime):
    config = tiny_config(criterion="grasp", scope="global", one_shot=(0.1,), controls=(),
                         train="20it")
    run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    assert store.load_mask(Unit(0, 1, "ticket")).density() == pytest.approx(0.1, abs=1e-5)
    data = config.data.load()
    ((_x, y),) = scoring_batches(data.x_train, data.y_train, 100, 7, balanced=True,
                                num_classes=10)
    assert torch.bincount(y, minlength=10).tolist() == [10] * 10
    assert len(scoring_batches(data.x_train, data.y_train, 600, 7)) == 3  # chunks of <= 256


def test_supermask_scan_cuts_at_init_criteria_too(runtime):
    config = tiny_config(criterion="snip", scope="global", one_shot=(0.2,), controls=(),
                         train="20it")
    run_imp(config, runtime)
    records = scan_supermasks(RunStore(runtime.out / config.run_name()), (0.2,),
                              ("snip", "magnitude_init", "synflow"))
    names = [r["criterion"] for r in records]
    assert {"snip", "large_init", "synflow"} <= set(names)
    assert all(r["density"] == pytest.approx(0.2, abs=1e-5) for r in records
               if r["criterion"] in ("snip", "synflow"))


def test_spellings_name_one_run():
    base = tiny_config(one_shot=(0.2,))
    assert tiny_config(one_shot=(0.2,), criterion="magnitude_init").run_name() == \
        tiny_config(one_shot=(0.2,), criterion="large_init").run_name()
    assert tiny_config(controls=("shuffle", "random")).controls == ("random",)
    assert tiny_config(one_shot=(0.2,), controls=("shuffle",)).run_name() == base.run_name()
    snip = tiny_config(one_shot=(0.2,), criterion="snip")
    assert "criterion_examples" not in snip.science()["pruning"]
    assert snip.run_name() != base.run_name()
    assert tiny_config(one_shot=(0.2,), criterion="snip", criterion_examples=50).run_name() \
        != snip.run_name()


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("argv", "needle"), [
    (["--criterion", "synflow", "--one-shot", "0.1"], "add --scope global"),
    (["--criterion", "synflow", "--scope", "global", "--exclude", "output"], "drop --exclude"),
    (["--criterion", "snip", "--granularity", "filter"], "--granularity weight"),
    (["--criterion", "grasp", "--threshold", "1"], "drop --threshold"),
    (["--criterion", "large_final", "--criterion-examples", "50"], "snip, grasp"),
    (["--criterion", "synflow", "--scope", "global", "--criterion-examples", "5"],
     "snip, grasp"),
    (["--criterion", "snip", "--criterion-examples", "0"], ">= 1"),
    (["--criterion", "snipp"], "synflow"),  # one message naming both registries
])
def test_refusals_are_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    code, _, err = _cli(capsys, "find", *argv, "--out", str(tmp_path))
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert "large_final" in err or needle != "synflow"
    assert not list(tmp_path.iterdir())


def test_sparsify_refuses_an_at_init_criterion(tmp_path, capsys):
    code, _, err = _cli(capsys, "sparsify", "--target", "0.5", "--criterion", "snip",
                     "--out", str(tmp_path))
    assert code == 2 and "use it with find" in err and len(err.strip().splitlines()) == 1


def test_listings_name_them(capsys):
    for command in ("find", "criteria"):
        code, text, _ = _cli(capsys, command, "--help")
        assert code == 0 and all(n in text for n in ("snip", "grasp", "synflow")), command
