"""Structured IMP (`find --granularity row|filter`): each level removes whole neurons or
filters, then rewinds; the controls keep that structure; the output layer stays whole."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import tiny_config
from tests.test_cli import cli
from ticketlab.config import ExperimentConfig, Runtime
from ticketlab.errors import TicketlabError
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import RunStore, Unit


def removed_rows(m: torch.Tensor) -> set[int]:
    """Output units (rows / filters) the mask removes; asserts every one is all or nothing."""
    rows = m.reshape(m.shape[0], -1)
    assert bool((rows.all(1) | ~rows.any(1)).all()), "an output unit is only partly pruned"
    return set((~rows.any(1)).nonzero().squeeze(1).tolist())


def test_structured_imp_prunes_whole_neurons_and_its_controls_keep_the_structure(tmp_path):
    config = tiny_config(granularity="row")  # LeNet-300-100, 2 levels, reinit and random
    assert config.pruning.exclude == ("output",)
    summary = run_imp(config, Runtime(out=tmp_path / "a", device="cpu", quiet=True))
    store = RunStore(tmp_path / "a" / config.run_name())
    science = store.config()["science"]["pruning"]
    assert science["granularity"] == "row" and science["exclude"] == ["output"]

    # rows of the paper's fc rate 0.2 of the remaining rows per level; output rows all kept
    expected = {"fc1.weight": [60, 108], "fc2.weight": [20, 36]}
    previous: dict[str, set[int]] = {k: set() for k in expected}
    for level in (1, 2):
        ticket = store.load_mask(Unit(0, level, "ticket"))
        final = store.load_weights(Unit(0, level - 1, "ticket"), "final")
        assert bool(ticket["fc3.weight"].all())
        for name, counts in expected.items():
            gone = removed_rows(ticket[name])
            assert len(gone) == counts[level - 1] and gone >= previous[name]
            # the rows removed now have the lowest L1 norms of the parent's remaining rows
            norms = final[name].abs().sum(1)
            new, left = sorted(gone - previous[name]), sorted(set(range(len(norms))) - gone)
            assert norms[new].max() <= norms[left].min()
            previous[name] = gone
        assert store.load_mask(Unit(0, level, "reinit")) == ticket
        random = store.load_mask(Unit(0, level, "random"))
        assert random.counts() == ticket.counts() and random != ticket
        assert bool(random["fc3.weight"].all())
        for name in expected:
            assert len(removed_rows(random[name])) == len(removed_rows(ticket[name]))
        init = store.load_weights(Unit(0, 0, "ticket"), "init")
        rewind = store.load_weights(Unit(0, level, "random"), "rewind")
        for k in random:  # the random control starts from the same rewind point
            assert torch.equal(rewind[k], init[k] * random[k])
    for r in summary["records"]:
        if r["level"] >= 1:
            assert r["density"] == pytest.approx(store.load_mask(
                Unit(0, r["level"], "ticket")).density())

    again = run_imp(config, Runtime(out=tmp_path / "b", device="cpu", quiet=True))
    assert again == summary
    other = RunStore(tmp_path / "b" / config.run_name())
    for variant in ("ticket", "random"):
        assert other.load_mask(Unit(0, 2, variant)) == store.load_mask(Unit(0, 2, variant))


def test_global_one_shot_by_filters_hits_the_density_up_to_one_filter(runtime):
    config = tiny_config(model="conv2", granularity="filter", reduce="mean", scope="global",
                         one_shot=(0.3,), controls=("random",), train="20it", eval_every="10it")
    config.validate()
    run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    ticket, random = (store.load_mask(Unit(0, 1, v)) for v in ("ticket", "random"))
    total = sum(t for _, t in ticket.counts().values())
    largest_filter = max(math.prod(m.shape[1:]) for m in ticket.values())
    assert abs(ticket.density() - 0.3) * total <= largest_filter
    assert bool(ticket["fc3.weight"].all())
    assert random.counts() == ticket.counts() and random != ticket
    for name in ticket:
        assert len(removed_rows(random[name])) == len(removed_rows(ticket[name]))


def test_layerwise_one_shot_by_rows_prunes_each_layer_by_its_share(runtime):
    config = tiny_config(granularity="row", one_shot=(0.4,), controls=(), train="20it")
    run_imp(config, runtime)
    ticket = RunStore(runtime.out / config.run_name()).load_mask(Unit(0, 1, "ticket"))
    # output whole; fc1 and fc2 (one rate) each lose round(r * rows) rows
    rows = {"fc1.weight": 300, "fc2.weight": 100}
    counts = {k: ticket.counts()[k] for k in rows}
    r = len(removed_rows(ticket["fc1.weight"])) / 300
    assert abs(len(removed_rows(ticket["fc2.weight"])) - r * 100) <= 1
    assert bool(ticket["fc3.weight"].all())
    total = sum(t for _, t in ticket.counts().values())
    assert abs(ticket.density() - 0.4) * total <= sum(t / rows[k] for k, (_, t) in counts.items())


def test_output_exclusion_is_recorded_and_weight_runs_keep_their_names():
    assert tiny_config(granularity="weight").run_name() == tiny_config().run_name()
    assert tiny_config().pruning.exclude == ()
    implied, explicit = tiny_config(granularity="row"), tiny_config(granularity="row",
                                                                    exclude=("output",))
    assert implied.run_name() == explicit.run_name() != tiny_config().run_name()
    conv = tiny_config(model="conv2", granularity="filter", exclude=("conv",))
    assert conv.pruning.exclude == ("conv", "output")
    assert ExperimentConfig.from_science(conv.science()).run_name() == conv.run_name()


@pytest.mark.parametrize("values, needle", [
    ({"granularity": "kernel"}, "kernel granularity needs conv weights, but fc1.weight "
                                "(group 'fc') is 2-D: add --exclude fc"),
    ({"granularity": "filter", "criterion": "small_final", "reduce": "l1"}, "use --reduce mean"),
])
def test_structured_settings_a_model_cannot_take_are_refused_before_training(values, needle):
    with pytest.raises(TicketlabError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        tiny_config(**values).validate()
    tiny_config(model="conv2", granularity="kernel", exclude=("fc",)).validate()
    tiny_config(granularity="filter", criterion="small_final", reduce="mean").validate()


def test_cli_refuses_kernel_granularity_on_an_mlp_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "find", "--granularity", "kernel")
    assert code == 2 and "add --exclude fc" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
