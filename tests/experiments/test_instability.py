import csv
import json
import shutil

import pytest
import torch

from tests.conftest import tiny_config
from tests.test_cli import cli
from ticketlab.config import Runtime
from ticketlab.experiments.imp import open_run, run_imp
from ticketlab.experiments.instability import (
    POINTS,
    cell_dir,
    computed_rows,
    data_seed,
    parse_at,
    retrain_dense,
    run_instability,
)
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.threads import using_threads
from ticketlab.training import evaluate, interrupt, train
from ticketlab.training.interpolation import barrier

LEVELS, AT = (0, 2), ("0", "50", "100it")  # 50 it is the run's rewind step, 100 it retrained


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    config = tiny_config(levels=2, train="200it", eval_every="50it", rewind="50it",
                         controls=())
    run_imp(config, Runtime(out=out, device="cpu", quiet=True))
    return RunStore(out / config.run_name())


@pytest.fixture(scope="module")
def rows(run):
    return run_instability(run.root, levels=LEVELS, at=AT)


def context(store):
    from ticketlab.config import ExperimentConfig
    config = ExperimentConfig.from_science(store.config()["science"])
    return open_run(config, Runtime(device="cpu"), torch.get_num_threads(), driver=False,
                    root=store.root)


def model_with(ctx, state):
    model = ctx.new_model(0)
    model.load_state_dict(state)
    return model


def test_steps_take_the_unit_written_after_them():
    assert [str(s) for s in parse_at(["0", "100", "500", "2000it"])] == \
        ["0it", "100it", "500it", "2000it"]
    assert [str(s) for s in parse_at(["0", "1", "2ep", "30it"])] == ["0it", "1ep", "2ep", "30it"]
    with pytest.raises(Exception, match="needs a unit"):
        parse_at(["100"])


def test_level_0_trained_again_reproduces_the_runs_rewind_snapshot_bit_exactly(run):
    ctx = context(run)
    saved = run.load_weights(Unit(0, 0, "ticket"), "rewind")
    with using_threads(run.config()["threads"]):  # the run's count: same summation order
        states, _ = retrain_dense(ctx, 0, [50])
        # passing the rewind step on the way to a later k checks itself against the run
        later, reproduces = retrain_dense(ctx, 0, [30, 120])
    assert all(torch.equal(states[50][k], saved[k]) for k in saved)
    states = later
    assert reproduces is True and set(states) == {30, 120}
    assert not torch.equal(states[30]["fc1.weight"], states[120]["fc1.weight"])


def test_rows_files_and_summary(run, rows):
    assert [(r["seed"], r["level"], r["k"]) for r in rows] == \
        [(0, level, k) for level in LEVELS for k in (0, 50, 100)]
    by = {(r["level"], r["k"]): r for r in rows}
    assert by[0, 50]["dense_source"] == "rewind" and by[0, 0]["dense_source"] == "init"
    assert by[0, 100]["dense_source"] == "retrained"
    assert by[0, 100]["retrain_reproduces_run"] is True
    density = run.load_mask(Unit(0, 2, "ticket")).density()
    for r in rows:
        assert len(r["errors"]) == len(r["alphas"]) == POINTS
        assert r["alphas"][0] == 0 and r["alphas"][-1] == 1
        assert r["barrier"] == max(r["errors"]) - (r["errors"][0] + r["errors"][-1]) / 2
        assert r["barrier"] == barrier(r["errors"]) and r["stable"] == (r["barrier"] <= 0.02)
        assert r["end"] == 200 and r["density"] == (1.0 if r["level"] == 0 else density)
        assert r["data_seeds"] == [data_seed(0, r["k"], 0), data_seed(0, r["k"], 1)]
        acc = run.result(Unit(0, r["level"], "ticket"))["early_stop_test_accuracy"]
        assert r["test_accuracy"] == acc
        dense = run.result(Unit(0, 0, "ticket"))["early_stop_test_accuracy"]
        assert r["matches"] == (None if r["level"] == 0 else acc >= dense - 0.005)
        folder = cell_dir(run, 0, r["level"], r["k"])
        for name in ("copy_0.safetensors", "copy_1.safetensors", "result.json"):
            assert (folder / name).is_file()
        assert not list(folder.glob("*.pt"))  # checkpoints are gone once a copy is trained
    root = run.root / "instability"
    assert (root / "dense" / "seed_0" / "at_100.safetensors").is_file()
    assert not (root / "dense" / "seed_0" / "at_50.safetensors").exists()  # the run's own
    assert json.loads((root / "instability.json").read_text())["rows"] == computed_rows(run)
    table = list(csv.DictReader((root / "instability.csv").open()))
    assert [(int(t["level"]), int(t["k"])) for t in table] == [(r["level"], r["k"]) for r in rows]
    assert [float(t["barrier"]) for t in table] == [r["barrier"] for r in rows]
    for name in ("line", "barrier", "matching"):
        for ext in ("png", "svg"):
            assert (root / f"instability_{name}.{ext}").stat().st_size > 1000


def test_line_ends_are_the_two_trained_copies(run, rows):
    ctx = context(run)
    from ticketlab.io import load_state
    for r in rows:
        folder = cell_dir(run, 0, r["level"], r["k"])
        for c, end in ((0, r["errors"][0]), (1, r["errors"][-1])):
            model = model_with(ctx, load_state(folder / f"copy_{c}.safetensors"))
            assert 1 - evaluate(model, ctx.data.x_test, ctx.data.y_test)[1] == end
            assert r["copy_final_test_accuracy"][c] == 1 - end


def test_copies_are_w_k_under_the_mask_trained_with_their_own_data_orders(run, rows):
    from ticketlab.io import load_state
    ctx = context(run)
    threads = using_threads(run.config()["threads"])
    mask = run.load_mask(Unit(0, 2, "ticket"))
    folder = cell_dir(run, 0, 2, 50)
    copies = [load_state(folder / f"copy_{c}.safetensors") for c in (0, 1)]
    for state in copies:  # pruned weights exactly zero in both copies
        for name, m in mask.items():
            assert torch.all(state[name][~m] == 0) and torch.any(state[name][m] != 0)
    assert not torch.equal(copies[0]["fc1.weight"], copies[1]["fc1.weight"])
    # copy 0 done by hand: the run's rewind snapshot, masked, trained from 50 to 200
    model = model_with(ctx, run.load_weights(Unit(0, 0, "ticket"), "rewind"))
    mask.apply_(model)
    with threads:
        train(model, ctx.data, ctx.config.training, seed=data_seed(0, 50, 0), start=50,
              end=200, eval_every=50, mask=mask)
    assert all(torch.equal(v, copies[0][k]) for k, v in model.state_dict().items())


@pytest.fixture
def copied(run, rows, tmp_path):
    """A copy of the analysed run, to damage or interrupt."""
    shutil.copytree(run.root, tmp_path / run.root.name)
    return RunStore(tmp_path / run.root.name)


def test_resume_after_a_lost_copy_gives_the_same_rows(copied, rows):
    folder = cell_dir(copied, 0, 2, 100)
    (folder / "copy_1.safetensors").unlink()
    (folder / "result.json").unlink()
    started = []
    again = run_instability(copied.root, levels=LEVELS, at=AT, figures=False,
                            progress=lambda what, a, b: started.append(what))
    assert started == ["seed 0 level 2 at 100 it: copy 1"]  # nothing else trained again
    assert again == rows


def test_an_interrupted_copy_resumes_from_its_checkpoint(copied, rows):
    folder = cell_dir(copied, 0, 2, 50)
    for name in ("copy_1.safetensors", "result.json"):
        (folder / name).unlink()

    def stop(what, first, last):
        def report(step, accuracy):
            if step >= 100:
                interrupt.request()  # as a first Ctrl-C does, at step 100
        return report

    try:
        with pytest.raises(interrupt.Interrupted):
            run_instability(copied.root, levels=(2,), at=("50it",), progress=stop,
                            runtime=Runtime(device="cpu", checkpoint_every=1e9))
    finally:
        interrupt.clear()
    assert (folder / "copy_1.checkpoint.pt").is_file()
    assert not (folder / "copy_1.safetensors").exists()
    (again,) = run_instability(copied.root, levels=(2,), at=("50it",), figures=False)
    assert again == next(r for r in rows if (r["level"], r["k"]) == (2, 50))
    assert not (folder / "copy_1.checkpoint.pt").exists()


def test_cli_prints_the_table_and_refuses_bad_inputs(run, rows, copied, capsys, tmp_path):
    code, out, _ = cli(capsys, "instability", str(run.root), "--levels", "0,2", "--at",
                       "50it", "--quiet")
    assert code == 0 and "barrier" in out and "instability" in out
    bad = [
        ((str(tmp_path / "nowhere"), "--levels", "0", "--at", "0it"), "not a ticketlab run"),
        ((str(run.root), "--levels", "5", "--at", "0it"), "level 5 of seed 0 is not finished"),
        ((str(run.root), "--levels", "0", "--at", "200it"), "not before the end"),
        ((str(run.root), "--levels", "0", "--at", "100"), "needs a unit"),
        ((str(run.root), "--levels", "0", "--at", "0it", "--seeds", "3"), "seed 3"),
    ]
    for args, message in bad:
        code, _, err = cli(capsys, "instability", *args)
        assert code == 2 and message in err, (args, err)
    # a damaged copy: one line naming the file, exit 2
    folder = cell_dir(copied, 0, 0, 0)
    (folder / "result.json").unlink()
    (folder / "copy_0.safetensors").write_bytes(b"not a tensor file")
    code, _, err = cli(capsys, "instability", str(copied.root), "--levels", "0", "--at", "0it",
                       "--quiet")
    assert code == 2 and "copy_0.safetensors is damaged" in err
    assert len(err.strip().splitlines()) <= 2  # one message (the console may wrap it)
