"""The invert control (Frankle et al. 2021's ablation): the lowest-ranked weights instead of
the highest, as many per tensor as the ticket keeps."""

import pytest

from tests.conftest import tiny_config
from ticketlab.errors import TicketlabError
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import RunStore, Unit


@pytest.mark.parametrize("one_shot", [(0.3,), ()])
def test_invert_keeps_the_lowest_scores_with_the_tickets_counts(runtime, one_shot):
    config = tiny_config(one_shot=one_shot, levels=1, controls=("invert",))
    run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    parent = store.load_mask(Unit(0, 0, "ticket"))
    final = store.load_weights(Unit(0, 0, "ticket"), "final")
    ticket = store.load_mask(Unit(0, 1, "ticket"))
    inverted = store.load_mask(Unit(0, 1, "invert"))
    assert inverted.counts() == ticket.counts()  # per tensor: the ticket's kept counts
    assert inverted != ticket
    for k, keep in inverted.items():
        assert bool((keep <= parent[k]).all())  # only weights the parent keeps
        magnitude = final[k].abs()
        dropped_by_ticket = parent[k] & ~ticket[k]
        # large_final: everything it keeps ranks at or below everything the ticket keeps
        # but it does not, and it keeps the ticket's lowest kept weights only if the ticket
        # keeps more than half
        assert magnitude[keep & ~ticket[k]].max() <= magnitude[ticket[k] & ~keep].min()
        if int(keep.sum()) <= int(dropped_by_ticket.sum()):
            assert not bool((keep & ticket[k]).any()), k
    record = store.result(Unit(0, 1, "invert"))
    assert record["density"] == pytest.approx(store.result(Unit(0, 1, "ticket"))["density"])


@pytest.mark.parametrize("setting", [{"granularity": "filter"}, {"threshold": 1.0}])
def test_invert_refuses_what_it_cannot_rank_before_training(runtime, setting):
    config = tiny_config(controls=("invert",), **setting)
    with pytest.raises(TicketlabError, match="invert"):
        config.validate()
