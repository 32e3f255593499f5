"""The plan: which units wait for which, what is done or borrowed, and what it would cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import tiny_config
from tests.test_cli import cli
from ticketlab.config import Runtime
from ticketlab.executors import PARALLEL_MIN_FLOPS, choose_executor
from ticketlab.experiments.imp import open_run, run_imp
from ticketlab.experiments.plan import (
    Plan,
    job_seconds,
    make_plan,
    makespan,
    measured_rate,
    training_flops,
)
from ticketlab.experiments.store import Unit


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
    assert measured_rate(plan.contexts[0]) is None and job_seconds(plan) is None
    probed = job_seconds(plan, probe=True)
    assert probed is not None and all(s > 0 for s in probed.values())
    run_imp(config, Runtime(out=tmp_path, device="cpu", quiet=True))
    ctx = plan_of(tmp_path, config).contexts[0]
    rate = measured_rate(ctx)
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
