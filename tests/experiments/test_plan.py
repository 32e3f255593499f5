"""The plan: which units wait for which, what is done or borrowed, and what it would cost."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import tiny_config
from tests.test_cli import cli
from ticketlab.config import Runtime
from ticketlab.executors import PARALLEL_MIN_FLOPS, choose_executor
from ticketlab.experiments import plan as plan_module
from ticketlab.experiments.imp import open_run, run_imp
from ticketlab.experiments.plan import (
    Plan,
    job_seconds,
    level_densities,
    make_plan,
    makespan,
    measured_rates,
    run_levels,
    training_flops,
)
from ticketlab.experiments.store import Unit
from ticketlab.models import build_model
from ticketlab.pruning import Mask
from ticketlab.training import sparse as sparse_kernels


def plan_of(tmp_path: Path, *configs, **runtime) -> Plan:
    rt = Runtime(out=tmp_path, device="cpu", quiet=True, **runtime)
    return make_plan([open_run(c, rt, 1, driver=False) for c in configs])


def test_a_level_waits_for_the_previous_ticket_of_its_seed_only(tmp_path):
    plan = plan_of(tmp_path, tiny_config(seeds=(0, 1), levels=2))
    needs = {j.units[0]: j.needs for j in plan.jobs}
    assert len(plan.jobs) == 14 and not plan.done
    assert needs[Unit(1, 0, "ticket")] == ()
    for v in ("ticket", "reinit", "random"):  # controls do not wait for their own ticket
        assert needs[Unit(1, 2, v)] == ((0, Unit(1, 1, "ticket")),)
    assert plan.width() == 6  # a level's 2 seeds x 3 variants at once
    one_shot = plan_of(tmp_path, tiny_config(seeds=(0,), one_shot=(0.5, 0.2)))
    assert {j.units[0]: j.needs for j in one_shot.jobs}[Unit(0, 2, "random")] == \
        ((0, Unit(0, 0, "ticket")),)  # one-shot levels all prune the dense network


def test_done_units_leave_the_plan_and_vectorised_levels_are_one_job(tmp_path):
    config = tiny_config(seeds=(0, 1), levels=1)
    run_imp(tiny_config(seeds=(0, 1), levels=0), Runtime(out=tmp_path, device="cpu", quiet=True))
    plan = plan_of(tmp_path, config)
    assert [u for _, u in plan.done] == [Unit(0, 0, "ticket"), Unit(1, 0, "ticket")]
    assert [len(j.units) for j in plan.jobs] == [1] * 6 and all(not j.needs for j in plan.jobs)
    together = plan_of(tmp_path, config, vectorize=True)
    assert [len(j.units) for j in together.jobs] == [6]


def test_a_run_of_the_plan_borrows_the_dense_training_of_an_earlier_one(tmp_path):
    a, b = tiny_config(seeds=(0, 1)), tiny_config(seeds=(1, 2), scope="global", rate=0.2)
    plan = plan_of(tmp_path, a, b)
    level0 = {(j.run, j.units[0].seed): j for j in plan.jobs if j.units[0].level == 0}
    assert level0[(1, 1)].borrows and level0[(1, 1)].needs == ((0, Unit(1, 0, "ticket")),)
    assert level0[(1, 1)].iterations == 0
    assert not level0[(1, 2)].borrows and level0[(1, 2)].needs == ()  # seed 2 only in run b


def test_makespan_is_list_scheduling_in_plan_order(tmp_path):
    plan = plan_of(tmp_path, tiny_config(seeds=(0, 1), levels=1, controls=("random",)))
    seconds = {j.key: 1.0 for j in plan.jobs}  # 2 dense units, then 2 x 2 pruned units
    assert makespan(plan, seconds, 1) == 6.0
    assert makespan(plan, seconds, 2) == 3.0
    assert makespan(plan, seconds, 8) == 2.0  # the chain of a seed: level 0, then level 1


def test_estimates_come_from_timing_files_and_the_choice_from_counted_work(tmp_path,
                                                                         monkeypatch):
    import ticketlab.executors

    monkeypatch.setattr(ticketlab.executors, "cores", lambda: 2)  # whatever CI's machine has
    config = tiny_config(seeds=(0,), levels=1)
    plan = plan_of(tmp_path, config)
    assert not measured_rates(plan.contexts[0]) and job_seconds(plan) is None
    probed = job_seconds(plan, probe=True)
    assert probed is not None and all(s > 0 for s in probed.values())
    run_imp(config, Runtime(out=tmp_path, device="cpu", quiet=True))
    ctx = plan_of(tmp_path, config).contexts[0]
    rate = measured_rates(ctx).get(0)
    timings = [ctx.store.timing(Unit(0, 1, v)) for v in ("ticket", "reinit", "random")]
    assert rate is not None and rate > 0 and all(t and t["iterations"] == 60 for t in timings)
    # a tiny run is not worth starting workers for; the paper's LeNet budget is
    flops = training_flops(plan)
    assert 0 < flops < PARALLEL_MIN_FLOPS
    auto = Runtime(out=tmp_path, device="cpu")
    assert choose_executor(plan, auto, 1).name == "sequential"
    rt = Runtime(out=tmp_path, device="cpu", jobs=2)  # workers asked for: workers
    assert (choose_executor(plan, rt, 1).name, choose_executor(plan, rt, 1).workers) == \
        ("processes", 2)
    big = plan_of(tmp_path, tiny_config(seeds=(0, 1), levels=3, train="5000it"))
    assert training_flops(big) >= PARALLEL_MIN_FLOPS
    choice = choose_executor(big, auto, 1)
    assert choice.name == "processes" and "FLOPs" in choice.why


def test_find_plan_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    args = ["find", "--dataset", "digits", "--train", "60it", "--eval-every", "20it",
            "--levels", "2", "--seeds", "0", "--device", "cpu", "--out", str(tmp_path / "runs")]
    code, out, err = cli(capsys, *args, "--plan")
    assert code == 0, err
    assert not (tmp_path / "runs").exists()
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()
            if line.startswith("│")]
    assert rows[-1][:6] == ["all", "7", "0", "0", "0", "7"] and "estimated wall time" in out
    assert cli(capsys, *args, "--levels", "1", "--quiet")[0] == 0
    code, out, _ = cli(capsys, *args, "--plan")
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()
            if line.startswith("│")]
    assert rows[-1][:6] == ["all", "7", "4", "0", "0", "3"]
    assert "measured in the run" in out


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_bad_jobs_are_refused_in_one_line(tmp_path, capsys, bad):
    code, _, err = cli(capsys, "find", "--jobs", bad, "--out", str(tmp_path))
    assert code == 2 and "--jobs" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ estimates per level

SPARSE = {"levels": 3, "sparse_below": 0.6, "controls": ("random",)}  # fc at level 3: 0.512


@pytest.fixture(scope="module", autouse=True)
def small_layers_too():
    """Digits' LeNet is below the layer size sparse kernels pay off at (`MIN_WEIGHTS`);
    these tests are about which levels the rule picks, so every layer qualifies here."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sparse_kernels, "MIN_WEIGHTS", 0)
        yield


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory) -> Path:
    """A tiny run whose last level trains its fc layers with sparse kernels."""
    out = tmp_path_factory.mktemp("sparse_run")
    run_imp(tiny_config(**SPARSE), Runtime(out=out, device="cpu", quiet=True))
    return out


def dense_mask() -> Mask:
    return Mask.dense(build_model("lenet_300_100", (1, 8, 8), 10, "glorot_normal", 0))


def test_level_densities_are_the_masks_layerwise_imp_and_one_shot_cut(sparse_run, tmp_path):
    ctx = plan_of(sparse_run, tiny_config(**SPARSE)).contexts[0]
    predicted = level_densities(dense_mask(), ctx.config)
    for level in range(4):  # round(rate x kept) per tensor and level: exact
        assert ctx.store.load_mask(Unit(0, level, "ticket")).density_by_tensor() == \
            pytest.approx(predicted[level], abs=1e-12)
    # the levels trained with sparse kernels are the ones predicted (result.json says which)
    assert run_levels(ctx).sparse == {3}
    assert plan_module.probe_rate(ctx, predicted[3], steps=3) > 0  # a real probe, sparse kernels
    assert [bool(ctx.store.result(Unit(0, lv, v))["sparse_layers"]) for lv, v in
            ((1, "ticket"), (2, "random"), (3, "ticket"), (3, "random"))] == \
        [False, False, True, True]
    one_shot = tiny_config(one_shot=(0.5, 0.1), controls=())
    run_imp(one_shot, Runtime(out=tmp_path, device="cpu", quiet=True))
    store = plan_of(tmp_path, one_shot).contexts[0].store
    predicted = level_densities(dense_mask(), one_shot)
    for level in (1, 2):
        assert store.load_mask(Unit(0, level, "ticket")).density_by_tensor() == \
            pytest.approx(predicted[level], abs=1e-12)


def test_level_densities_of_a_global_ranking_give_each_pooled_tensor_the_pool_density():
    config = tiny_config(scope="global", rate=0.5, exclude=("output",), levels=2)
    levels = level_densities(dense_mask(), config)
    pooled = ["fc1.weight", "fc2.weight"]  # fc3 is the output layer
    assert levels[0] == {k: 1.0 for k in levels[0]}
    for level, expected in ((1, 0.5), (2, 0.25)):
        assert [levels[level][k] for k in pooled] == pytest.approx([expected] * 2, abs=1e-4)
        assert levels[level]["fc3.weight"] == 1.0
    threshold = level_densities(dense_mask(), tiny_config(threshold=1.0))
    assert threshold == [threshold[0]] * 2  # unknown before training: the dense guess


def fake_probe(calls: list):
    """A probe at 1 s/iteration with dense kernels and 0.1 + the mean density with sparse
    ones: the estimates must follow it, whatever this machine's speed."""
    def probe_rate(ctx, densities=None, steps=30):
        calls.append(densities)
        if densities is None:
            return 1.0
        return 0.1 + sum(densities.values()) / len(densities)
    return probe_rate


def test_sparse_levels_are_estimated_at_their_density_from_two_probes(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(plan_module, "probe_rate", fake_probe(calls))
    config = tiny_config(levels=6, sparse_below=0.6, controls=("random", "freeze_init"))
    plan = plan_of(tmp_path, config)
    seconds = job_seconds(plan, probe=True)
    assert seconds is not None
    levels = run_levels(plan.contexts[0])
    assert levels.sparse == {3, 4, 5, 6}
    # one dense probe; sparse ones at the highest and the lowest sparse density only
    assert calls[0] is None and sorted(levels.densities.index(c) for c in calls[1:]) == [3, 6]
    rate = {(j.units[0].level, j.units[0].variant): seconds[j.key] / j.iterations
            for j in plan.jobs}
    assert {rate[lv, "ticket"] for lv in range(3)} == {1.0}  # dense kernels: level 0's rate
    sparse = [rate[lv, "ticket"] for lv in range(3, 7)]
    assert sparse == sorted(sparse, reverse=True) and max(sparse) < 1.0  # density falls
    assert rate[3, "ticket"] == pytest.approx(fake_probe([])(None, levels.densities[3]))
    assert rate[6, "random"] == rate[6, "ticket"]
    assert rate[6, "freeze_init"] == 1.0  # held pruned weights keep dense kernels


def test_measured_levels_use_their_own_timings_and_the_others_a_scaled_probe(sparse_run,
                                                                          tmp_path,
                                                                          monkeypatch):
    shutil.copytree(sparse_run, tmp_path, dirs_exist_ok=True)
    config = tiny_config(**SPARSE)
    store = plan_of(tmp_path, config).contexts[0].store
    for unit in store.timings():  # 2 s per iteration dense, 0.5 at level 3
        store.save_timing(unit, (0.5 if unit.level == 3 else 2.0) * 60, 60)
    store.remove(Unit(0, 3, "ticket"))
    store.remove(Unit(0, 2, "random"))
    calls: list = []
    monkeypatch.setattr(plan_module, "probe_rate", fake_probe(calls))
    plan = plan_of(tmp_path, config)
    assert measured_rates(plan.contexts[0]) == {0: 2.0, 3: 0.5}
    seconds = job_seconds(plan, probe=True)
    assert not calls  # every level to train has a measured rate
    assert seconds == {j.key: (0.5 if j.units[0].level == 3 else 2.0) * 60 for j in plan.jobs}
    longer = tiny_config(**{**SPARSE, "levels": 4})  # level 4 was never timed
    plan = plan_of(tmp_path, longer)
    seconds = job_seconds(plan, probe=True)
    assert seconds is not None and calls
    levels = run_levels(plan.contexts[0])
    probed = {0: 1.0, 3: fake_probe([])(None, levels.densities[3]),
              4: fake_probe([])(None, levels.densities[4])}
    ratio = (2.0 + 0.5) / (probed[0] + probed[3])  # measured / probed where both are known
    level4 = [seconds[j.key] / j.iterations for j in plan.jobs if j.units[0].level == 4]
    assert level4 == pytest.approx([probed[4] * ratio] * 2)
    assert job_seconds(plan) is None  # level 4 unmeasured, and no probe asked for
