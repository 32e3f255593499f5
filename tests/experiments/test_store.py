"""The run directory shared by processes and resumed after kills: locks, groups, clean-up,
the summary rebuilt from records and the recorded data source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import tiny_config, unit_files
from tests.test_cli import cli, run_cli
from ticketlab.config import Runtime
from ticketlab.experiments import imp
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.experiments.supermasks import scan_supermasks
from ticketlab.report.runs import load_runs


def test_vectorized_resume_after_some_units_finished_is_bit_identical(tmp_path, monkeypatch):
    config = tiny_config(levels=1, seeds=(0, 1))
    runtime = lambda out: Runtime(out=tmp_path / out, device="cpu", quiet=True,
                                  vectorize=True, checkpoint_every=0)
    reference = run_imp(config, runtime("ref"))

    finish, finished = imp._finish, []
    def killed_after_five_of_level_1(ctx, unit, *args):  # a kill between units' results
        if unit.level == 1 and len(finished) == 5:
            raise KeyboardInterrupt
        finished.extend([unit] if unit.level == 1 else [])
        return finish(ctx, unit, *args)
    monkeypatch.setattr(imp, "_finish", killed_after_five_of_level_1)
    with pytest.raises(KeyboardInterrupt):
        run_imp(config, runtime("killed"))
    monkeypatch.setattr(imp, "_finish", finish)
    store = RunStore(tmp_path / "killed" / config.run_name())
    assert sum(store.done(Unit(s, 1, v)) for s in (0, 1) for v in ("ticket", "reinit",
                                                                      "random")) == 5
    assert store.groups(1)  # the interrupted group is on record, with its checkpoint
    assert list(store.root.glob("checkpoints/level_01_*.pt"))

    groups = []
    train_replicates = imp.train_replicates
    def spy(models, *args, **kwargs):
        groups.append(len(models))
        return train_replicates(models, *args, **kwargs)
    monkeypatch.setattr(imp, "train_replicates", spy)
    resumed = run_imp(config, runtime("killed"))
    assert groups == [6]  # the five left trained with the one done, as the same group
    assert resumed["records"] == reference["records"]
    assert unit_files(store.root) == unit_files(tmp_path / "ref" / config.run_name())
    assert not list(store.root.glob("checkpoints/*"))


def test_stale_checkpoints_and_orphan_temporary_files_are_cleaned_up(runtime):
    config = tiny_config(levels=1, controls=("random",))
    run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    unit = store.dir(Unit(0, 1, "ticket"))
    old = time.time() - 3600
    planted = {
        "legacy group": store.root / "checkpoints" / "level_01_0123abcd.pt",  # no members file
        "done group": store.root / "checkpoints" / "level_00_89abcdef.pt",
        "unit checkpoint": unit / "checkpoint.pt",
        "orphan": unit / ".final.safetensors.k2j3h4.tmp",
        "root orphan": store.root / ".summary.json.x8y9z0.tmp",
    }
    live = {
        "undone group": store.root / "checkpoints" / "level_05_fedcba98.pt",
        "fresh write": unit / ".metrics.csv.a1b2c3.tmp",  # another command may be writing it
    }
    for path in [*planted.values(), *live.values()]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    for path in planted.values():
        os.utime(path, (old, old))
    (store.root / "checkpoints" / "level_00_89abcdef.json").write_text(
        json.dumps({"units": ["seed_0/level_00/ticket"]}))
    (store.root / "checkpoints" / "level_05_fedcba98.json").write_text(
        json.dumps({"units": ["seed_0/level_05/ticket"]}))

    run_imp(config, runtime)  # a finished run: cleaned when it starts (and ends)
    assert [k for k, p in planted.items() if p.exists()] == []
    assert not (store.root / "checkpoints" / "level_00_89abcdef.json").exists()
    assert all(p.exists() for p in live.values())
    assert store.done(Unit(0, 1, "ticket"))


def test_summary_is_rebuilt_from_the_units_records(tmp_path, capsys):
    config = tiny_config(levels=1, controls=("random",), seeds=(0, 1))
    expected = run_imp(config, Runtime(out=tmp_path, device="cpu", quiet=True))
    store = RunStore(tmp_path / config.run_name())
    stale = {**expected, "records": [r for r in expected["records"] if r["seed"] == 0]}
    (store.root / "summary.json").write_text(json.dumps(stale))  # a kill before its update
    assert store.summary() == expected
    assert load_runs([store.root])[0].records == expected["records"]
    assert scan_supermasks(store, (0.5,), ("large_final",), seed=1, device="cpu")[0]["seed"] == 1
    (store.root / "summary.json").unlink()
    code, _out, err = cli(capsys, "report", str(store.root), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    assert load_runs([store.root])[0].records == expected["records"]


def test_unit_lock_is_exclusive_and_released_when_its_process_dies(runtime):
    config = tiny_config(levels=0)
    store = RunStore.create(runtime.out, config)
    unit = Unit(0, 0, "ticket")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(store.dir(unit) / ".lock")], stdout=subprocess.PIPE, text=True)
    store.dir(unit).mkdir(parents=True, exist_ok=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert store.try_lock(unit) is None
        assert store.try_lock(Unit(0, 0, "other")) is not None
    finally:
        holder.kill()
        holder.wait()
    lock = store.try_lock(unit)
    assert lock is not None
    assert store.try_lock(unit) is None  # exclusive within a process too
    lock.release()


def test_two_processes_share_the_units_of_a_run(tmp_path):
    args = ["find", "--dataset", "digits", "--train", "60it", "--eval-every", "20it",
            "--levels", "2", "--seeds", "0,1", "--device", "cpu", "--out", str(tmp_path / "x")]
    env = {**os.environ, "COLUMNS": "200"}
    procs = [subprocess.Popen([sys.executable, "-m", "ticketlab.cli", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = [line for _, err in outputs for line in err.splitlines() if line.endswith("(done)")]
    units = 2 * (1 + 2 * 3)
    assert len(trained) == len(set(trained)) == units  # every unit trained once, by one of them
    assert all(err.count("(done before)") + err.count("(done)") == units for _, err in outputs)

    single = run_cli(*args[:-1], str(tmp_path / "one"), "--quiet")
    assert single.returncode == 0, single.stderr
    name = tiny_config(seeds=(0, 1)).run_name()
    assert unit_files(tmp_path / "x" / name) == unit_files(tmp_path / "one" / name)
    assert json.loads((tmp_path / "x" / name / "summary.json").read_text()) == \
        json.loads((tmp_path / "one" / name / "summary.json").read_text())


def test_find_records_its_data_dir_and_readers_use_it(tmp_path, shared_data, capsys,
                                                      monkeypatch):
    config = tiny_config(dataset="mnist", train="20it", eval_every="10it", levels=0)
    run_imp(config, Runtime(out=tmp_path, data_dir=shared_data, device="cpu", quiet=True))
    store = RunStore(tmp_path / config.run_name())
    recorded = store.config()
    assert recorded["data_dir"] == str(shared_data.resolve())
    assert recorded["hash"] == config.run_hash() and recorded["science"] == config.science()
    assert store.root.name == config.run_name()  # the run keeps its name

    monkeypatch.setenv("TICKETLAB_DATA", str(tmp_path / "nowhere"))
    code, _out, err = cli(capsys, "supermask", str(store.root), "--densities", "0.5",
                         "--criteria", "large_final", "--device", "cpu", "--quiet")
    assert code == 0, err

    del recorded["data_dir"]  # a run made before the data dir was recorded
    (store.root / "config.json").write_text(json.dumps(recorded))
    code, _out, err = cli(capsys, "supermask", str(store.root), "--densities", "0.5",
                         "--criteria", "large_final", "--device", "cpu", "--quiet")
    assert code == 2 and "nowhere" in err
    monkeypatch.setenv("TICKETLAB_DATA", str(shared_data))
    code, _out, err = cli(capsys, "supermask", str(store.root), "--densities", "0.5",
                         "--criteria", "large_final", "--device", "cpu", "--quiet")
    assert code == 0, err


def test_recording_the_data_dir_keeps_existing_run_names():
    # the name main gave this configuration before data dirs were recorded
    assert tiny_config(seeds=(0, 1)).run_name() == "imp_lenet_300_100_digits_591f5bb2dc"


def test_a_unit_held_elsewhere_is_waited_for_and_a_dead_holder_blocks_nothing(runtime,
                                                                             monkeypatch):
    config = tiny_config(levels=0)
    store = RunStore.create(runtime.out, config)
    unit = Unit(0, 0, "ticket")
    store.dir(unit).mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(store.dir(unit) / ".lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"

    waited = []
    class Reporter:
        def start_run(self, *args): pass
        def start_units(self, *args): return None
        def end_unit(self, *args): pass
        def wait_units(self, units): waited.append(units)
    monkeypatch.setattr(imp.interrupt, "requested", lambda: True)  # Ctrl-C while waiting
    with pytest.raises(KeyboardInterrupt):
        run_imp(config, runtime, Reporter())
    assert waited == [[unit]] and not store.done(unit)
    monkeypatch.undo()

    holder.kill()  # a killed process's lock goes with it
    holder.wait()
    assert [r["level"] for r in run_imp(config, runtime)["records"]] == [0]
