"""`ticketlab sparsify`: gradual pruning in one run per seed, its records, resume and report."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_config
from ticketlab.cli import main
from ticketlab.config import Runtime
from ticketlab.errors import TicketlabError
from ticketlab.experiments.sparsify import read_sparsity, run_sparsify, unit_of
from ticketlab.experiments.store import RunStore
from ticketlab.io import load_state
from ticketlab.training import interrupt


def sparsify_config(**overrides):
    base = {"train": "90it", "eval_every": "15it", "target": 0.8, "prune_end": "45it",
            "seeds": (0, 1)}
    return tiny_config(**{**base, **overrides})


def run(tmp_path: Path, name: str = "runs", **overrides) -> tuple[dict, RunStore]:
    config = sparsify_config(**overrides)
    runtime = Runtime(out=tmp_path / name, device="cpu", quiet=True)
    return run_sparsify(config, runtime), RunStore(runtime.out / config.run_name())


def test_records_mask_and_sparsity_log(tmp_path):
    summary, store = run(tmp_path)
    assert store.root.name.startswith("sparsify_lenet_300_100_digits_")
    assert [(r["seed"], r["variant"]) for r in summary["records"]] == [(0, "sparsify"),
                                                                       (1, "sparsify")]
    for r in summary["records"]:
        unit = unit_of(r["seed"])
        mask = store.load_mask(unit)
        assert r["density"] == pytest.approx(0.2, abs=1e-3) == mask.density()
        for name, d in mask.density_by_tensor().items():  # layerwise: every tensor at target
            assert d == pytest.approx(0.2, abs=0.01), name
        final = store.load_weights(unit, "final")
        assert all(torch.all(final[k][~m] == 0) for k, m in mask.items())
        log = read_sparsity(store, unit)
        assert [i for i, _ in log] == list(range(0, 91, 15))
        assert [s for _, s in log] == sorted(s for _, s in log)  # agp only grows
        assert log[0][1] == 0 and log[-1][1] == pytest.approx(0.8, abs=1e-3)
        # the early stop is chosen among the evaluations made with the final mask
        assert 0 < r["final_mask_iteration"] <= 45
        assert r["early_stop_iteration"] >= r["final_mask_iteration"]
        for name in ("init.safetensors", "mask.safetensors", "final.safetensors",
                     "metrics.csv", "sparsity.csv", "result.json"):
            assert (store.dir(unit) / name).is_file()
        assert not (store.dir(unit) / "rewind.safetensors").exists()  # no lth, no reset_end


def test_the_early_stop_with_the_final_mask_has_its_test_accuracy(tmp_path):
    """Pruning to 0.5% raised the validation loss: the lowest one with the final mask is no
    new minimum of the whole training, yet its test accuracy was measured (sparsify
    measures the test set at every evaluation)."""
    summary, store = run(tmp_path, target=0.995, prune_end="75it", seeds=(0,))
    r = summary["records"][0]
    metrics = store.metrics(unit_of(0))
    val = {e.iteration: e.loss for e in metrics if e.split == "val"}
    assert val[r["early_stop_iteration"]] > min(val.values())
    assert [e.iteration for e in metrics if e.split == "test"] == list(val)
    stop = r["early_stop_iteration"]
    assert r["early_stop_test_accuracy"] == next(
        e.accuracy for e in metrics if e.split == "test" and e.iteration == stop)


def test_same_config_same_result_and_a_finished_run_is_read_back(tmp_path):
    a, store_a = run(tmp_path, "a")
    b, store_b = run(tmp_path, "b")
    assert a["records"] == b["records"]
    for k, v in load_state(store_a.dir(unit_of(1)) / "final.safetensors").items():
        assert torch.equal(v, load_state(store_b.dir(unit_of(1)) / "final.safetensors")[k])
    before = (store_a.dir(unit_of(0)) / "result.json").stat().st_mtime_ns
    assert run(tmp_path, "a")[0] == a
    assert (store_a.dir(unit_of(0)) / "result.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("schedule", ["agp", "iterative"])
def test_a_killed_run_resumes_bit_exact(tmp_path, monkeypatch, schedule):
    settings = {"seeds": (0,), "sparsity_schedule": schedule, "lth": schedule == "iterative"}
    straight, store = run(tmp_path, "straight", **settings)
    calls = itertools.count()
    monkeypatch.setattr(interrupt, "requested", lambda: next(calls) == 30)  # mid-window
    with pytest.raises(interrupt.Interrupted):
        run(tmp_path, "killed", **settings)
    monkeypatch.setattr(interrupt, "requested", lambda: False)
    resumed, store2 = run(tmp_path, "killed", **settings)
    assert resumed["records"] == straight["records"]
    unit = unit_of(0)
    for name in ("final",) + (("rewind",) if settings["lth"] else ()):
        a = load_state(store.dir(unit) / f"{name}.safetensors")
        b = load_state(store2.dir(unit) / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert store.load_mask(unit) == store2.load_mask(unit)
    assert read_sparsity(store, unit) == read_sparsity(store2, unit)
    assert store.metrics(unit) == store2.metrics(unit)


def test_lth_rewinds_and_keeps_the_rewind_ticket(tmp_path):
    summary, store = run(tmp_path, seeds=(0,), sparsity_schedule="iterative", lth=True,
                         rewind="10it", prune_start="15it", reset_end=True)
    unit = unit_of(0)
    ticket = load_state(store.dir(unit) / "rewind.safetensors")
    mask = store.load_mask(unit)
    init = store.load_weights(unit, "init")
    for k, m in mask.items():
        assert torch.all(ticket[k][~m] == 0)
        assert not torch.equal(ticket[k], init[k] * m)  # step 10's weights, not step 0's
    assert summary["records"][0]["density"] == pytest.approx(0.2, abs=1e-3)


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(TicketlabError, match="within training"):
        run(tmp_path, prune_end="200it")
    with pytest.raises(TicketlabError, match="without --lth or --reset-end"):
        run(tmp_path, rewind="10it")
    with pytest.raises(TicketlabError, match="without a target"):
        tiny_config(sparsity_schedule="cos").validate()
    code = main(["sparsify", "--dataset", "digits", "--out", str(tmp_path)])
    assert code == 2 and "add --target 0.9" in capsys.readouterr().err
    for bad in (["--target", "1.5"], ["--target", "0.5", "--sparsity-schedule", "cubic"]):
        assert main(["sparsify", "--dataset", "digits", "--out", str(tmp_path), *bad]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "target sparsity must be" in err
    with pytest.raises(SystemExit) as e:  # find has no gradual-pruning options
        main(["find", "--target", "0.5"])
    assert e.value.code == 2


def test_cli_run_and_report(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["sparsify", "--dataset", "digits", "--train", "60it", "--eval-every", "20it",
            "--target", "0.5", "--granularity", "row", "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "% weights" in printed and "sparsify_lenet_300_100_digits_" in printed
    run_dir = next(out.iterdir())
    mask = RunStore.open(run_dir).load_mask(unit_of(0))
    for name, m in mask.items():  # whole rows; the output layer's rows (classes) untouched
        rows = m.view(m.shape[0], -1)
        assert torch.all(rows.all(1) | ~rows.any(1)), name
    assert mask["fc3.weight"].all()
    assert main(["report", str(run_dir), "--quiet"]) == 0
    for name in ("sparsify.png", "sparsify.svg", "seeds.csv", "densities.csv"):
        assert (run_dir / "report" / name).is_file()


def test_processes_share_the_seeds_of_a_run(tmp_path):
    """A seed another process holds is left to it; this process trains the others, then
    waits for it and reads its result back (as find's processes share units)."""
    import threading

    config = sparsify_config()
    runtime = Runtime(out=tmp_path / "runs", device="cpu", quiet=True)
    store = RunStore.create(runtime.out, config)
    lock = store.try_lock(unit_of(0))  # "another process" is training seed 0
    assert lock is not None
    order = []
    real = RunStore.finish

    def finish(self, unit, metrics, record):
        order.append(unit.seed)
        real(self, unit, metrics, record)

    def release():
        while not order:  # seed 1 first, then let seed 0 go
            threading.Event().wait(0.05)
        lock.release()

    threading.Thread(target=release).start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunStore, "finish", finish)
        summary = run_sparsify(config, runtime)
    assert order == [1, 0] and [r["seed"] for r in summary["records"]] == [0, 1]
