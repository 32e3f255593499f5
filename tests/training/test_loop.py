import math

import pytest
import torch
from torch import nn

from ticketlab import Mask, prune_magnitude
from ticketlab.config import TrainingHparams
from ticketlab.data import load_dataset
from ticketlab.errors import TicketlabError
from ticketlab.models import build_model
from ticketlab.training import (
    Checkpoint,
    EarlyStop,
    Eval,
    evaluate,
    interrupt,
    lr_schedule,
    train,
    train_eval_subset,
)
from ticketlab.training.evaluate import eval_chunk


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def model_for(data, seed=0):
    return build_model("lenet_300_100", data.input_shape, data.num_classes, seed=seed)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lr_schedule_warmup_and_milestones():
    hp = TrainingHparams(lr=0.1, schedule="step", milestones=("10it", "2ep"), gamma=0.1,
                         warmup="4it")
    lr = lr_schedule(hp, iterations_per_epoch=15)
    assert [lr(s) for s in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert lr(9) == pytest.approx(0.1)
    assert lr(10) == pytest.approx(0.01)
    assert lr(30) == pytest.approx(0.001)


def test_early_stop_is_lowest_validation_loss_not_best_test():
    metrics = [
        Eval(0, "val", 2.0, 0.1), Eval(0, "test", 2.0, 0.1),
        Eval(100, "val", 0.5, 0.90), Eval(100, "test", 0.5, 0.91),
        Eval(200, "val", 0.7, 0.92), Eval(200, "test", 0.4, 0.99),  # best test: not chosen
        Eval(300, "val", 0.5, 0.93), Eval(300, "test", 0.6, 0.95),  # tie: the first wins
    ]
    stop = EarlyStop.from_metrics(metrics)
    assert (stop.iteration, stop.test_accuracy, stop.final_test_accuracy) == (100, 0.91, 0.95)
    # metrics written before training accuracy was recorded: no train rows, None
    assert (stop.train_accuracy, stop.final_train_accuracy) == (None, None)
    assert not stop.diverged and stop.diverged_iteration is None

    with_train = [*metrics, Eval(0, "train", 2.0, 0.12), Eval(100, "train", 0.4, 0.93),
                            Eval(300, "train", 0.3, 0.97)]
    stop = EarlyStop.from_metrics(with_train)
    assert (stop.train_accuracy, stop.final_train_accuracy) == (0.93, 0.97)


def test_early_stop_among_finite_evaluations_only():
    nan, inf = math.nan, math.inf
    metrics = [
        Eval(0, "val", 2.0, 0.1), Eval(0, "test", 2.0, 0.1), Eval(0, "train", 2.0, 0.11),
        Eval(100, "val", 0.5, 0.9), Eval(100, "test", 0.5, 0.91), Eval(100, "train", 0.4, 0.92),
        Eval(200, "val", 0.3, 0.2), Eval(200, "test", inf, 0.1),  # diverged: test loss inf
    ]
    stop = EarlyStop.from_metrics(metrics)
    assert (stop.iteration, stop.test_accuracy, stop.train_accuracy) == (100, 0.91, 0.92)
    assert stop.diverged and stop.diverged_iteration == 200
    assert (stop.final_test_accuracy, stop.final_train_accuracy) == (None, None)

    never = EarlyStop.from_metrics([Eval(0, "val", nan, 0.1), Eval(0, "test", nan, 0.1)])
    assert never.diverged_iteration == 0
    assert (never.iteration, never.val_loss, never.test_accuracy, never.final_test_accuracy,
            never.train_accuracy, never.final_train_accuracy) == (None,) * 6


def test_train_accuracy_at_new_validation_minima_and_at_the_end(digits):
    model = model_for(digits)
    metrics = train(model, digits, TrainingHparams(), seed=0, end=60, eval_every=10)
    val = [e for e in metrics if e.split == "val"]
    best, minima = math.inf, []
    for e in val:
        if e.loss < best:
            best = e.loss
            minima.append(e.iteration)
    train_rows = [e for e in metrics if e.split == "train"]
    assert [e.iteration for e in train_rows] == sorted({*minima, 60})
    assert len(train_rows) < len(val)  # this run has evaluations that are no new minimum
    # digits has fewer than 10,000 training images: all of them, measured like any split
    x, y = train_eval_subset(digits)
    assert torch.equal(x, digits.x_train) and torch.equal(y, digits.y_train)
    assert (train_rows[-1].loss, train_rows[-1].accuracy) == evaluate(model, x, y)
    stop = EarlyStop.from_metrics(metrics)
    assert stop.train_accuracy == next(e.accuracy for e in train_rows
                                       if e.iteration == stop.iteration)
    assert stop.final_train_accuracy == train_rows[-1].accuracy


def strict_minima(metrics):
    """Iterations whose (finite) validation loss is lower than every one before."""
    best, minima = math.inf, []
    for e in metrics:
        if e.split == "val" and e.loss < best:
            best = e.loss
            minima.append(e.iteration)
    return minima


def rows(metrics, split):
    return [e for e in metrics if e.split == split]


def test_test_set_is_measured_at_new_validation_minima_and_at_the_end(digits):
    metrics = train(model_for(digits), digits, TrainingHparams(), seed=0, end=60,
                    eval_every=10)
    where = sorted({*strict_minima(metrics), 60})
    assert [e.iteration for e in rows(metrics, "test")] == where
    assert [e.iteration for e in rows(metrics, "train")] == where
    assert len(where) < len(rows(metrics, "val"))  # some evaluation measured no test set
    # each evaluation's rows in order: val, then test and train where measured
    assert [e.split for e in metrics if e.iteration == where[-1]] == ["val", "test", "train"]


def test_test_curve_measures_every_evaluation_and_changes_nothing_else(digits):
    few = train(model_for(digits), digits, TrainingHparams(), seed=0, end=60, eval_every=10)
    every = train(model_for(digits), digits, TrainingHparams(test_curve=True), seed=0,
                  end=60, eval_every=10)
    assert rows(every, "val") == rows(few, "val")
    assert rows(every, "train") == rows(few, "train")
    assert [e.iteration for e in rows(every, "test")] == \
        [e.iteration for e in rows(every, "val")]
    assert len(rows(every, "test")) > len(rows(few, "test"))
    by_iteration = {e.iteration: e for e in rows(every, "test")}
    assert all(by_iteration[e.iteration] == e for e in rows(few, "test"))
    assert EarlyStop.from_metrics(every) == EarlyStop.from_metrics(few)


def measured_only_where_read(old_format):
    """Metrics with test rows at every evaluation, as the loop records them now: test rows
    only at evaluations with a finite validation loss that is a new minimum, or the last."""
    last = max(e.iteration for e in old_format)
    keep = {*strict_minima(old_format), last}
    val_ok = {e.iteration for e in old_format if e.split == "val" and math.isfinite(e.loss)}
    return [e for e in old_format
            if e.split != "test" or (e.iteration in keep and e.iteration in val_ok)]


@pytest.mark.parametrize("case", ["normal", "tie", "diverged_test", "diverged_val", "never"])
def test_early_stop_reads_old_and_new_metrics_alike(case):
    nan, inf = math.nan, math.inf
    old = [Eval(0, "val", 2.0, 0.10), Eval(0, "test", 2.1, 0.11), Eval(0, "train", 2.0, 0.12),
           Eval(100, "val", 0.5, 0.90), Eval(100, "test", 0.5, 0.91),
           Eval(100, "train", 0.4, 0.93),
           Eval(200, "val", 0.7, 0.92), Eval(200, "test", 0.4, 0.99)]  # best test: not chosen
    expected = {"normal": (100, 0.91, 0.95, 0.97, None), "tie": (100, 0.91, 0.95, 0.97, None),
                "diverged_test": (100, 0.91, None, None, 300),
                "diverged_val": (100, 0.91, None, None, 300),
                "never": (None, None, None, None, 0)}[case]
    old += {
        "normal": [Eval(300, "val", 0.6, 0.93), Eval(300, "test", 0.6, 0.95),
                   Eval(300, "train", 0.3, 0.97)],
        "tie": [Eval(300, "val", 0.5, 0.93), Eval(300, "test", 0.6, 0.95),  # the first wins
                Eval(300, "train", 0.3, 0.97)],
        "diverged_test": [Eval(300, "val", 0.3, 0.93), Eval(300, "test", inf, 0.1)],
        "diverged_val": [Eval(300, "val", nan, 0.1), Eval(300, "test", nan, 0.1)],
        "never": [],
    }[case]
    if case == "never":
        old = [Eval(0, "val", nan, 0.1), Eval(0, "test", nan, 0.1)]
    new = measured_only_where_read(old)
    assert len(rows(new, "test")) < len(rows(old, "test"))  # the two formats differ
    stop = EarlyStop.from_metrics(old)
    assert EarlyStop.from_metrics(new) == stop
    assert (stop.iteration, stop.test_accuracy, stop.final_test_accuracy,
            stop.final_train_accuracy, stop.diverged_iteration) == expected


def test_evaluation_is_one_pass_where_it_fits(digits):
    assert eval_chunk(torch.empty(10_000, 1, 28, 28)) >= 10_000  # MNIST's test set: one pass
    assert eval_chunk(torch.empty(10_000, 1, 28, 28), replicates=5) < 10_000
    assert eval_chunk(torch.empty(0, 3, 2048, 2048)) == 1  # never less than one image
    model = model_for(digits)
    loss, accuracy = evaluate(model, digits.x_test, digits.y_test)
    small_loss, small_accuracy = evaluate(model, digits.x_test, digits.y_test, batch_size=7)
    assert accuracy == small_accuracy and loss == pytest.approx(small_loss, rel=1e-6)
    with torch.no_grad():
        logits = model(digits.x_test).double()
    assert loss == pytest.approx(float(nn.functional.cross_entropy(logits, digits.y_test)),
                                 rel=1e-6)


def test_train_subset_is_fixed_per_dataset(digits):
    x, y = train_eval_subset(digits, size=100)
    again_x, again_y = train_eval_subset(load_dataset("digits"), size=100)  # a fresh load
    assert torch.equal(x, again_x) and torch.equal(y, again_y)
    assert len(y) == 100 and not torch.equal(x, digits.x_train[:100])  # drawn, not the first
    rows = {tuple(r.tolist()) for r in digits.x_train.flatten(1)}
    assert all(tuple(r.tolist()) in rows for r in x.flatten(1))


def test_a_diverging_model_stops_at_its_first_non_finite_evaluation(digits):
    hp = TrainingHparams(optimizer="sgd", lr=10.0)
    steps = []
    metrics = train(model_for(digits), digits, hp, seed=0, end=200, eval_every=10,
                    progress=lambda step, _: steps.append(step))
    last = metrics[-1].iteration
    assert last < 200 and steps == [s for s in steps if s <= last]
    assert all(math.isfinite(e.loss) for e in metrics if e.iteration < last)
    assert not all(math.isfinite(e.loss) for e in metrics if e.iteration == last)
    assert not any(e.split == "train" for e in metrics if e.iteration == last)
    stop = EarlyStop.from_metrics(metrics)
    assert stop.diverged_iteration == last and stop.iteration is not None


@pytest.mark.parametrize("hp", [
    TrainingHparams(optimizer="adam", lr=1e-2, weight_decay=1e-3),
    TrainingHparams(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3),
    TrainingHparams(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
], ids=["adam-wd", "sgd-momentum-wd", "sgd-nesterov-wd"])
def test_pruned_weights_are_zero_in_every_forward_pass(digits, hp):
    model = model_for(digits)
    mask = prune_magnitude(model, Mask.dense(model), 0.7)
    before = weights(model)
    seen = []

    def check(module, inputs):
        w = module.weight.detach()
        seen.append(bool(torch.all(w[~mask[f"{name_of[module]}.weight"]] == 0)))

    name_of = {m: n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for m in name_of:
        m.register_forward_pre_hook(check)
    train(model, digits, hp, seed=0, end=60, eval_every=20, mask=mask)
    assert len(seen) > 180 and all(seen)
    for name, m in mask.items():
        w = dict(model.named_parameters())[name].detach()
        assert torch.all(w[~m] == 0)
        # ...while every kept weight tensor trained: it moved from its value before training.
        assert not torch.equal(w[m], before[name][m]), name


def test_training_is_deterministic(digits):
    runs = []
    for _ in range(2):
        model = model_for(digits)
        mask = prune_magnitude(model, Mask.dense(model), 0.5)
        metrics = train(model, digits, TrainingHparams(), seed=3, end=50, eval_every=10,
                        mask=mask)
        runs.append((metrics, weights(model)))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    other = model_for(digits)
    train(other, digits, TrainingHparams(), seed=4, end=50, eval_every=10)
    assert not torch.equal(weights(other)["fc1.weight"], runs[0][1]["fc1.weight"])


def test_rewound_run_continues_data_order_and_schedule(digits):
    """With stateless SGD, 0->k then k->end (fresh optimizer) equals 0->end exactly."""
    hp = TrainingHparams(optimizer="sgd", lr=0.05, schedule="step", milestones=("30it",),
                         gamma=0.5)
    straight = model_for(digits)
    snapshots = {}
    train(straight, digits, hp, seed=1, end=60, eval_every=20, snapshot_at=25,
          on_snapshot=lambda s: snapshots.setdefault(25, s))
    two_stage = model_for(digits)
    train(two_stage, digits, hp, seed=1, end=25, eval_every=20)
    assert all(torch.equal(snapshots[25][k], v) for k, v in weights(two_stage).items())
    train(two_stage, digits, hp, seed=1, start=25, end=60, eval_every=20)
    assert all(torch.equal(weights(straight)[k], v) for k, v in weights(two_stage).items())


@pytest.mark.parametrize("sparse_below", [None, 0.6], ids=["dense", "sparse_kernels"])
def test_interrupt_and_resume_is_bit_identical(digits, tmp_path, monkeypatch, sparse_below):
    """Dense kernels, and sparse ones (`training.sparse`, every layer made to qualify:
    digits' LeNet is below `MIN_WEIGHTS`), which leave the model plain even when stopped."""
    from ticketlab.training import sparse

    monkeypatch.setattr(sparse, "MIN_WEIGHTS", 0)
    hp = TrainingHparams(sparse_below=sparse_below)
    mask = prune_magnitude(model_for(digits), Mask.dense(model_for(digits)), 0.5)
    reference = model_for(digits)
    expected = train(reference, digits, hp, seed=0, end=80, eval_every=10, mask=mask)

    ckpt = Checkpoint(tmp_path / "ckpt.pt", every=0)
    model = model_for(digits)

    def stop_at_50(step, _):
        if step == 50:
            interrupt._requested = True

    try:
        with pytest.raises(interrupt.Interrupted):
            train(model, digits, hp, seed=0, end=80, eval_every=10, mask=mask,
                  checkpoint=ckpt, progress=stop_at_50)
    finally:
        interrupt._requested = False
    assert ckpt.load()["step"] == 50
    assert all("forward" not in m.__dict__ for m in model.modules())  # plain, even stopped
    resumed = model_for(digits, seed=99)  # whatever it holds is replaced by the checkpoint
    metrics = train(resumed, digits, hp, seed=0, end=80, eval_every=10, mask=mask,
                    checkpoint=ckpt)
    assert metrics == expected
    # training-set rows before and after the interruption (new minima, the end) are compared
    train_its = [e.iteration for e in expected if e.split == "train"]
    assert min(train_its) < 50 < max(train_its) and 80 in train_its
    assert all(torch.equal(weights(reference)[k], v) for k, v in weights(resumed).items())


def test_corrupt_checkpoint_is_a_clear_error(digits, tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(TicketlabError, match=r"damaged.*delete it"):
        train(model_for(digits), digits, TrainingHparams(), seed=0, end=10, eval_every=5,
              checkpoint=Checkpoint(path))
