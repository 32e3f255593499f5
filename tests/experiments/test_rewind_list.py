"""`find --rewind 0,20,60it`: one IMP chain per rewind point, one dense training between them,
and the report's accuracy-against-rewind figure."""

import pytest
import torch

import ticketlab.experiments.imp as imp
from tests.conftest import tiny_config
from ticketlab.cli import main
from ticketlab.config import parse_steps
from ticketlab.errors import TicketlabError
from ticketlab.experiments.imp import rewind_sweep, run_imp, run_many
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.report.build import write_report

LEVEL0 = Unit(0, 0, "ticket")


def test_parse_steps_closes_a_list_with_one_unit():
    assert parse_steps("0,100,500,2000it") == ["0it", "100it", "500it", "2000it"]
    assert parse_steps("0, 1ep ,200it") == ["0it", "1ep", "200it"]
    for bad, says in (("0,100", "needs a unit"), ("x,1it", "not a step"),
                      ("1it,,2it", "not a list")):
        with pytest.raises(TicketlabError, match=says):
            parse_steps(bad)


def test_rewind_points_share_one_dense_training(runtime, monkeypatch):
    """Level 0 trains once; the other runs borrow it and replay only their first steps, which
    gives the snapshot a run of their own would have saved (bit for bit: same kernels and
    thread count, by construction)."""
    trained = []
    real_train = imp.train

    def counting(model, data, hp, **kw):
        trained.append((kw.get("start", 0), kw["end"], kw["mask"].density() == 1))
        return real_train(model, data, hp, **kw)

    monkeypatch.setattr(imp, "train", counting)
    configs = rewind_sweep(tiny_config(levels=1, controls=()), ["0", "10", "30it"])
    assert [c.rewind for c in configs] == ["0it", "10it", "30it"]
    assert len({c.run_name() for c in configs}) == 3
    summaries = run_many(configs, runtime)
    dense = sorted(t[:2] for t in trained if t[2])
    assert dense == [(0, 10), (0, 30), (0, 60)]  # one dense training, two short replays
    assert sorted(t[0] for t in trained if not t[2]) == [0, 10, 30]  # the tickets' starts

    stores = [RunStore(runtime.out / s["run"]) for s in summaries]
    finals = [s.load_weights(LEVEL0, "final") for s in stores]
    assert all(torch.equal(finals[0][k], f[k]) for f in finals for k in finals[0])
    for store in stores:
        assert store.damage(LEVEL0) is None  # the replaced snapshot's digest is recorded
    alone = run_imp(configs[2], runtime.__class__(out=runtime.out.parent / "alone",
                                                  device="cpu", quiet=True))
    own = RunStore(runtime.out.parent / "alone" / alone["run"]).load_weights(LEVEL0, "rewind")
    borrowed = stores[2].load_weights(LEVEL0, "rewind")
    assert all(torch.equal(own[k], borrowed[k]) for k in own)
    assert not torch.equal(own["fc1.weight"], stores[0].load_weights(LEVEL0, "rewind")[
        "fc1.weight"])  # 30 steps moved it: the snapshots really differ
    ticket = stores[2].load_weights(Unit(0, 1, "ticket"), "rewind")
    mask = stores[2].load_mask(Unit(0, 1, "ticket"))
    assert torch.equal(ticket["fc2.weight"], own["fc2.weight"] * mask["fc2.weight"])

    paths = write_report([s.root for s in stores], runtime.out.parent / "report")
    names = {p.name for p in paths}
    assert {"rewind.png", "rewind.csv"} <= names
    rows = (runtime.out.parent / "report" / "rewind.csv").read_text().splitlines()
    assert [r.split(",")[3] for r in rows[1:]] == ["0", "10", "30"]  # level 1's ticket
    one = write_report([stores[0].root], runtime.out.parent / "one")
    assert "rewind.png" not in {p.name for p in one}  # a single rewind point: no such figure


def test_find_rewind_list_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["find", "--dataset", "digits", "--train", "40it", "--eval-every", "20it",
            "--levels", "1", "--controls", "none", "--out", str(out), "--quiet"]
    assert main([*args, "--rewind", "0,20it"]) == 0
    text = capsys.readouterr().out
    assert "(rewind 0it)" in text and "(rewind 20it)" in text and "ticketlab report" in text
    assert len(list(out.glob("*/config.json"))) == 2
    for bad, says in (("0,20", "needs a unit"), ("20it,20it", "repeat")):
        assert main([*args, "--rewind", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1
