import json

import pytest
import torch

from tests.conftest import tiny_config
from ticketlab import Mask
from ticketlab.config import Runtime
from ticketlab.experiments.imp import run_imp
from ticketlab.experiments.store import RunStore, Unit
from ticketlab.io import load_state


def test_imp_run_layout_records_and_controls(runtime):
    config = tiny_config()
    summary = run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    records = summary["records"]
    assert [(r["level"], r["variant"]) for r in records] == [
        (0, "ticket"), (1, "ticket"), (1, "reinit"), (1, "random"),
        (2, "ticket"), (2, "reinit"), (2, "random")]
    for r in records:
        for key in ("density", "early_stop_iteration", "early_stop_test_accuracy",
                    "final_test_accuracy"):
            assert key in r
        assert 0 <= r["early_stop_test_accuracy"] <= 1
        unit_dir = store.dir(Unit(r["seed"], r["level"], r["variant"]))
        for name in ("mask.safetensors", "rewind.safetensors", "final.safetensors",
                     "metrics.csv", "result.json"):
            assert (unit_dir / name).is_file()
        assert not (unit_dir / "checkpoint.pt").exists()
        # training accuracy: the "train" rows at the early-stop iteration and at the end
        metrics = store.metrics(Unit(r["seed"], r["level"], r["variant"]))
        train_acc = {e.iteration: e.accuracy for e in metrics if e.split == "train"}
        assert r["early_stop_train_accuracy"] == train_acc[r["early_stop_iteration"]]
        assert r["final_train_accuracy"] == train_acc[r["end_iteration"]]
        assert r["diverged"] is False and r["diverged_iteration"] is None
    assert json.loads((store.root / "summary.json").read_text()) == summary
    assert store.config()["science"] == config.science()

    # Densities follow the rates: 784*300, 300*100 at 0.8 per level, 100*10 at 0.9 (digits: 64 in)
    t1, t2 = (store.load_mask(Unit(0, lv, "ticket")) for lv in (1, 2))
    assert t2.counts()["fc1.weight"][0] == round(0.8 * t1.counts()["fc1.weight"][0])
    assert t2.density_by_group()["output"] == pytest.approx(0.81)

    # Level 2 prunes level 1's *trained* weights: the pruned ones are the smallest kept ones.
    final1 = load_state(store.dir(Unit(0, 1, "ticket")) / "final.safetensors")
    w, kept, pruned_now = final1["fc2.weight"].abs(), t2["fc2.weight"], t1["fc2.weight"] & ~t2[
        "fc2.weight"]
    assert w[kept].min() >= w[pruned_now].max()

    # The ticket is rewound: kept weights at their step-0 values, pruned ones at zero.
    init = load_state(store.dir(Unit(0, 0, "ticket")) / "init.safetensors")
    rewind2 = load_state(store.dir(Unit(0, 2, "ticket")) / "rewind.safetensors")
    for k in t2:
        assert torch.equal(rewind2[k], init[k] * t2[k])
    assert torch.equal(rewind2["fc1.bias"], init["fc1.bias"])

    # Controls: reinit = same mask, other weights; random = same counts, other mask, same init.
    reinit = load_state(store.dir(Unit(0, 2, "reinit")) / "rewind.safetensors")
    assert store.load_mask(Unit(0, 2, "reinit")) == t2
    assert not torch.equal(reinit["fc1.weight"], rewind2["fc1.weight"])
    random_mask = store.load_mask(Unit(0, 2, "random"))
    assert random_mask.counts() == t2.counts() and random_mask != t2
    random_rewind = load_state(store.dir(Unit(0, 2, "random")) / "rewind.safetensors")
    for k in random_mask:
        assert torch.equal(random_rewind[k], init[k] * random_mask[k])

    # Final weights keep the mask and load into a plain model.
    final2 = load_state(store.dir(Unit(0, 2, "ticket")) / "final.safetensors")
    assert torch.all(final2["fc1.weight"][~t2["fc1.weight"]] == 0)
    from ticketlab.models import build_model
    build_model("lenet_300_100", (1, 8, 8), 10).load_state_dict(final2)


def strict_json(path):
    """json.loads as a strict parser would: NaN and Infinity are errors."""
    def refuse(name):
        raise ValueError(f"{path}: non-standard JSON constant {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("vectorize", [False, True])
def test_diverged_units_are_flagged_and_stop(tmp_path, vectorize):
    from ticketlab.report import levels_table
    config = tiny_config(optimizer="sgd", lr=10.0, levels=1, seeds=(0, 1), train="200it")
    summary = run_imp(config, Runtime(out=tmp_path, device="cpu", vectorize=vectorize))
    store = RunStore(tmp_path / config.run_name())
    assert strict_json(store.root / "summary.json") == summary
    diverged = [r for r in summary["records"] if r["diverged"]]
    assert diverged, "lr 10 with plain SGD should diverge on digits"
    for r in summary["records"]:
        unit = Unit(r["seed"], r["level"], r["variant"])
        assert {k: v for k, v in strict_json(store.dir(unit) / "result.json").items()
                if k != "files"} == r  # the summary leaves out the files' checksums
        metrics = store.metrics(unit)
        if not r["diverged"]:
            assert r["diverged_iteration"] is None
            continue
        # metrics end at the first non-finite evaluation: training stopped there
        assert max(e.iteration for e in metrics) == r["diverged_iteration"] < 200
        assert r["final_test_accuracy"] is None and r["final_train_accuracy"] is None
        assert r["early_stop_iteration"] < r["diverged_iteration"]
    from rich.console import Console
    console = Console(width=200, record=True)
    console.print(levels_table(summary))
    assert "diverged" in console.export_text()


def test_same_config_same_results(tmp_path):
    config = tiny_config(levels=1, controls=("random",))
    a = run_imp(config, Runtime(out=tmp_path / "a", device="cpu"))
    b = run_imp(config, Runtime(out=tmp_path / "b", device="cpu"))
    assert a == b
    name = config.run_name()
    for rel in ("seed_0/level_01/ticket/metrics.csv", "seed_0/level_01/random/metrics.csv"):
        assert (tmp_path / "a" / name / rel).read_bytes() == (tmp_path / "b" / name / rel) \
            .read_bytes()


def test_finished_run_is_read_back_not_recomputed(runtime):
    config = tiny_config(levels=1, controls=())
    first = run_imp(config, runtime)
    result = runtime.out / config.run_name() / "seed_0/level_01/ticket/result.json"
    mtime = result.stat().st_mtime_ns
    assert run_imp(config, runtime) == first
    assert result.stat().st_mtime_ns == mtime


def test_more_seeds_and_levels_reuse_the_run(runtime):
    config = tiny_config(levels=1, controls=())
    run_imp(config, runtime)
    more = tiny_config(levels=2, controls=(), seeds=(0, 1))
    assert more.run_name() == config.run_name()
    summary = run_imp(more, runtime)
    assert {(r["seed"], r["level"]) for r in summary["records"]} == {
        (s, lv) for s in (0, 1) for lv in (0, 1, 2)}
    seed0 = [r for r in summary["records"] if r["seed"] == 0]
    seed1 = [r for r in summary["records"] if r["seed"] == 1]
    assert [r["early_stop_val_loss"] for r in seed0] != [r["early_stop_val_loss"] for r in seed1]


def test_late_rewinding_restarts_from_step_k(runtime):
    config = tiny_config(levels=1, controls=("reinit",), rewind="20it")
    summary = run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    level1 = [r for r in summary["records"] if r["level"] == 1]
    assert all(r["start_iteration"] == 20 for r in level1)
    assert all(r["early_stop_iteration"] >= 20 for r in level1)
    at_k = load_state(store.dir(Unit(0, 0, "ticket")) / "rewind.safetensors")
    init = load_state(store.dir(Unit(0, 0, "ticket")) / "init.safetensors")
    assert not torch.equal(at_k["fc1.weight"], init["fc1.weight"])  # really step 20
    mask = store.load_mask(Unit(0, 1, "ticket"))
    rewind1 = load_state(store.dir(Unit(0, 1, "ticket")) / "rewind.safetensors")
    for k in mask:
        assert torch.equal(rewind1[k], at_k[k] * mask[k])
    # The step-20 weights are those of a plain 20-step run from the same init and seed.
    from ticketlab.config import TrainingHparams
    from ticketlab.data import load_dataset
    from ticketlab.models import build_model
    from ticketlab.training import train
    data = load_dataset("digits")
    model = build_model("lenet_300_100", data.input_shape, 10)
    model.load_state_dict(init)
    from ticketlab.threads import using_threads
    with using_threads("auto"):  # the run's thread count: bit-identity needs the same rounding
        train(model, data, TrainingHparams(), seed=0, end=20, eval_every=20,
              mask=Mask.dense(model))
    assert torch.equal(model.state_dict()["fc1.weight"], at_k["fc1.weight"])


def test_global_scope_run(runtime):
    config = tiny_config(levels=1, controls=(), scope="global", rate=0.5, exclude=("output",))
    run_imp(config, runtime)
    mask = RunStore(runtime.out / config.run_name()).load_mask(Unit(0, 1, "ticket"))
    assert mask.density_by_group()["output"] == 1.0
    fc = [m for k, m in mask.items() if mask.groups[k] == "fc"]
    kept = sum(int(m.sum()) for m in fc)
    total = sum(m.numel() for m in fc)
    assert kept == total - round(0.5 * total)


def test_one_shot_prunes_the_dense_ticket_once_to_each_density(runtime):
    densities = (0.5, 0.2, 0.05)
    config = tiny_config(one_shot=densities, controls=("reinit",), seeds=(0, 1))
    assert config.run_name().startswith("oneshot_lenet_300_100_digits_")
    iterative = tiny_config(controls=("reinit",), seeds=(0, 1))
    assert config.run_hash() != iterative.run_hash()
    summary = run_imp(config, runtime)
    store = RunStore(runtime.out / config.run_name())
    tickets = {(r["seed"], r["level"]): r for r in summary["records"] if r["variant"] == "ticket"}
    assert sorted({lv for _, lv in tickets}) == [0, 1, 2, 3]
    for seed in (0, 1):
        final0 = store.load_weights(Unit(seed, 0, "ticket"), "final")
        dense = store.load_mask(Unit(seed, 0, "ticket"))
        previous = None
        for level, d in enumerate(densities, start=1):
            assert tickets[seed, level]["density"] == pytest.approx(d, abs=1e-4)
            mask = store.load_mask(Unit(seed, level, "ticket"))
            # pruned straight from the dense network's trained weights: the largest survive
            for k in mask:
                kept, cut = final0[k].abs()[mask[k]], final0[k].abs()[dense[k] & ~mask[k]]
                assert kept.min() >= cut.max()
            if previous is not None:  # so lower densities keep a subset
                assert all(bool((mask[k] <= previous[k]).all()) for k in mask)
            previous = mask
            reinit = store.result(Unit(seed, level, "reinit"))
            assert reinit["density"] == tickets[seed, level]["density"]
    # level 0 is the same dense training as the iterative run's
    dense_run = run_imp(tiny_config(levels=0, seeds=(0, 1)), runtime)
    assert dense_run["records"] == [tickets[0, 0], tickets[1, 0]]


@pytest.mark.parametrize("one_shot", [(), (0.3,)], ids=["iterative", "one-shot"])
def test_criterion_decides_the_kept_weights(runtime, one_shot):
    default = tiny_config(levels=1, controls=(), one_shot=one_shot)
    small = tiny_config(levels=1, controls=(), one_shot=one_shot, criterion="small_final")
    assert tiny_config(criterion="large_final").run_name() == tiny_config().run_name()
    assert small.run_hash() != default.run_hash()
    run_imp(small, runtime)
    store = RunStore(runtime.out / small.run_name())
    final0 = store.load_weights(Unit(0, 0, "ticket"), "final")
    mask = store.load_mask(Unit(0, 1, "ticket"))
    for k in mask:  # small_final keeps the smallest trained weights
        kept, cut = final0[k].abs()[mask[k]], final0[k].abs()[~mask[k]]
        assert kept.max() <= cut.min()
    rewind = store.load_weights(Unit(0, 1, "ticket"), "rewind")
    init = store.load_weights(Unit(0, 0, "ticket"), "init")
    for k in mask:  # and the kept weights still rewind to their initial values
        assert torch.equal(rewind[k], init[k] * mask[k])


@pytest.mark.parametrize("vectorize", [False, True], ids=["one-by-one", "together"])
def test_mask_actions_as_variants(tmp_path, vectorize):
    actions = ("reshuffle", "signed_constant", "random_signed_constant", "freeze_init",
               "freeze_init_zero_mask")
    config = tiny_config(levels=1, controls=actions)
    summary = run_imp(config, Runtime(out=tmp_path, device="cpu", vectorize=vectorize))
    assert [r["variant"] for r in summary["records"] if r["level"] == 1] == ["ticket", *actions]
    store = RunStore(tmp_path / config.run_name())
    mask = store.load_mask(Unit(0, 1, "ticket"))
    init = store.load_weights(Unit(0, 0, "ticket"), "rewind")  # rewind point = step 0 here
    final0 = store.load_weights(Unit(0, 0, "ticket"), "final")

    def start(variant):
        return store.load_weights(Unit(0, 1, variant), "rewind")

    def final(variant):
        return store.load_weights(Unit(0, 1, variant), "final")

    for k, m in mask.items():
        assert store.load_mask(Unit(0, 1, "reshuffle"))[k].equal(m)
        kept = init[k][m]
        assert torch.equal(start("reshuffle")[k][m].sort().values, kept.sort().values)
        assert not torch.equal(start("reshuffle")[k][m], kept)
        constant = start("signed_constant")[k][m]
        assert torch.equal(constant.sign(), kept.sign())
        assert torch.allclose(constant.abs(), init[k].std(unbiased=False).expand_as(constant))
        assert torch.equal(start("random_signed_constant")[k][m].abs(), constant.abs())
        for variant in ("reshuffle", "signed_constant", "random_signed_constant"):
            assert torch.all(final(variant)[k][~m] == 0)
        # mask-0: pruned weights held at their initial values (all, or those that grew)
        assert torch.equal(final("freeze_init")[k][~m], init[k][~m])
        grew = (final0[k].abs() >= init[k].abs()) & ~m
        assert torch.equal(final("freeze_init_zero_mask")[k][grew], init[k][grew])
        assert torch.all(final("freeze_init_zero_mask")[k][~m & ~grew] == 0)
        assert not torch.equal(final("freeze_init")[k][m], start("freeze_init")[k][m])  # trained


def test_training_together_matches_one_by_one(tmp_path):
    config = tiny_config(levels=1, seeds=(0, 1))
    alone = run_imp(config, Runtime(out=tmp_path / "a", device="cpu", vectorize=False))
    together = run_imp(config, Runtime(out=tmp_path / "b", device="cpu", vectorize=True))
    assert len(alone["records"]) == len(together["records"]) == 8
    for a, b in zip(alone["records"], together["records"]):
        assert (a["seed"], a["level"], a["variant"], a["density"]) == \
            (b["seed"], b["level"], b["variant"], b["density"])
        assert a["early_stop_val_loss"] == pytest.approx(b["early_stop_val_loss"], rel=1e-3)
        assert a["final_test_accuracy"] == pytest.approx(b["final_test_accuracy"], abs=0.01)
    assert not list((tmp_path / "b").glob("*/checkpoints/*.pt"))  # cleared when done


def test_short_imp_on_real_mnist(shared_data, tmp_path):
    config = tiny_config(dataset="mnist", train="150it", eval_every="50it", levels=1,
                         controls=("random",))
    summary = run_imp(config, Runtime(out=tmp_path, data_dir=shared_data, device="cpu"))
    dense, ticket, _random = summary["records"]
    assert dense["density"] == 1.0
    assert ticket["density"] == pytest.approx((188_160 + 24_000 + 900) / 266_200)
    assert dense["early_stop_test_accuracy"] > 0.85
    assert ticket["early_stop_test_accuracy"] > 0.85


def test_dense_level_is_borrowed_from_a_run_with_the_same_dense_training(runtime):
    class Reused:
        def __init__(self):
            self.units = []

        def start_run(self, *a):
            pass

        def start_units(self, *a):
            return None

        def end_unit(self, unit, record, reused):
            self.units.append((unit.level, unit.variant, reused))

    iterative = tiny_config(levels=1, controls=())
    first = run_imp(iterative, runtime)
    reporter = Reused()
    other = run_imp(tiny_config(one_shot=(0.3,), controls=(), criterion="movement"), runtime,
                    reporter)
    assert reporter.units == [(0, "ticket", True), (1, "ticket", False)]
    assert other["records"][0] == first["records"][0]
    a = RunStore(runtime.out / iterative.run_name()).dir(Unit(0, 0, "ticket"))
    b = runtime.out / other["run"] / "seed_0/level_00/ticket"
    for name in ("init.safetensors", "rewind.safetensors", "final.safetensors", "metrics.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    reporter = Reused()  # another training budget: nothing to borrow
    run_imp(tiny_config(levels=0, train="40it"), runtime, reporter)
    assert reporter.units == [(0, "ticket", False)]


def test_threshold_mask_run(runtime):
    from ticketlab.pruning import threshold_mask
    config = tiny_config(threshold=1.0, controls=("reinit",))
    assert config.run_name().startswith("oneshot_") and config.n_levels == 1
    summary = run_imp(config, runtime)
    assert [(r["level"], r["variant"]) for r in summary["records"]] == \
        [(0, "ticket"), (1, "ticket"), (1, "reinit")]
    store = RunStore(runtime.out / config.run_name())
    expected = threshold_mask(store.load_weights(Unit(0, 0, "ticket"), "final"),
                              store.load_mask(Unit(0, 0, "ticket")), 1.0)
    assert store.load_mask(Unit(0, 1, "ticket")) == expected
    assert summary["records"][1]["density"] == pytest.approx(expected.density())


def test_freeze_init_zero_mask_judges_each_weight_by_the_training_that_pruned_it(tmp_path):
    """At level 3, weights pruned at levels 1 and 2 are judged by tickets 0 and 1, not by
    ticket 2 (which holds them at 0, so none of them could ever be held at init)."""
    config = tiny_config(levels=3, controls=("freeze_init_zero_mask",))
    run_imp(config, Runtime(out=tmp_path, device="cpu"))
    store = RunStore(tmp_path / config.run_name())
    init = store.load_weights(Unit(0, 0, "ticket"), "rewind")
    masks = [store.load_mask(Unit(0, j, "ticket")) for j in range(4)]
    finals = [store.load_weights(Unit(0, j, "ticket"), "final") for j in range(3)]
    frozen = store.load_weights(Unit(0, 3, "freeze_init_zero_mask"), "final")
    held_earlier = 0
    for k in masks[3]:
        expected = torch.zeros_like(init[k])
        for j in (1, 2, 3):
            pruned_here = masks[j - 1][k] & ~masks[j][k]
            grew = finals[j - 1][k].abs() >= init[k].abs()
            expected = torch.where(pruned_here & grew, init[k], expected)
            if j < 3:
                held_earlier += int((pruned_here & grew).sum())
        pruned = ~masks[3][k]
        assert torch.equal(frozen[k][pruned], expected[pruned]), k
    assert held_earlier > 0  # the case the old rule got wrong is present


def test_thread_count_is_applied_and_recorded_outside_the_hash(tmp_path):
    class Spy:  # what torch's thread count is while the run computes
        def start_run(self, config, store, device):
            self.threads = torch.get_num_threads()

        def start_units(self, units, start, end):
            return None

        def end_unit(self, unit, record, reused):
            pass

    config = tiny_config(levels=0, train="20it")
    before = torch.get_num_threads()
    runs = {}
    for threads in (3, 2):  # counts no machine defaults to, so applying them is observable
        spy = Spy()
        summary = run_imp(config, Runtime(out=tmp_path, quiet=True, threads=threads), spy)
        assert spy.threads == threads
        assert torch.get_num_threads() == before  # the caller's count back
        runs[threads] = summary["run"]
        recorded = json.loads((tmp_path / summary["run"] / "config.json").read_text())
        assert recorded["threads"] == threads  # the latest command's count
        assert "threads" not in json.dumps(recorded["science"])
    assert runs[3] == runs[2] == config.run_name()  # one run: the hash ignores threads


def test_config_json_of_a_run_without_a_thread_count_stays_readable(tmp_path):
    config = tiny_config(levels=0, train="20it")
    store = RunStore.create(tmp_path, config, "ticketlab find")  # as runs before --threads
    assert "threads" not in store.config()
    run_imp(config, Runtime(out=tmp_path, quiet=True, threads=1))
    assert store.config()["threads"] == 1
    RunStore.create(tmp_path, config)  # a caller that does not know the count keeps it
    assert store.config()["threads"] == 1
