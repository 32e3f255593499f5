"""Replicates trained together follow the trajectories they follow alone."""

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
    interrupt,
    train,
    train_replicates,
    vectorizable,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def replicates(data, name, hp, steps=30, start=0):
    """Three replicates: two seeds dense, and seed 0 again under a 70%-pruned mask."""
    def model(seed):
        return build_model(name, data.input_shape, data.num_classes, seed=seed)
    models = [model(0), model(1), model(0)]
    masks = [None, None, prune_magnitude(models[2], Mask.dense(models[2]), 0.7)]
    seeds = [0, 1, 0]
    alone = []
    for m, mask, seed in zip(models, masks, seeds):
        clone = model(0)
        clone.load_state_dict(m.state_dict())
        metrics = train(clone, data, hp, seed=seed, start=start, end=start + steps,
                        eval_every=10, mask=mask)
        alone.append((clone, metrics))
    together = train_replicates(models, data, hp, seeds=seeds, start=start, end=start + steps,
                                eval_every=10, masks=masks)
    return models, masks, alone, together


# Training together runs other kernels (vmap, batched matmuls) than training alone, and
# kernels round differently per CPU and thread count: replicates cannot equal their solo runs
# bit for bit everywhere. Adam amplifies the rounding (its step is about lr * sign(g) for a tiny
# gradient g): conv-adam's dense seed-0 replicate ends up to 3e-3 (relative to how far training
# moved it) from its solo run on a 2-thread Intel Xeon, below 1e-6 for the MLPs. A replicate
# that follows another trajectory is far off: another replicate's mask gives 1.8 to 4, a
# learning rate 3% too small 0.15 to 0.29 (measured by breaking train_replicates so).
# Hence these tolerances:
OWN = 1e-2  # distance to its own solo run / distance training moved it, per tensor
OTHERS = 0.05  # distance to its own solo run / distance to the nearest other solo run
LOSS_REL = 5e-3  # conv-adam: losses differ by up to 4.5e-4 relative on that Xeon
ACCURACY = 0.01  # one validation image is 1/120, a test image 1/359


def relative_distances(models, inits, alone):
    """Per replicate and tensor: (|w - solo| / |solo - init|, |w - solo| / min |w - other solo|)."""
    out = []
    for i, model in enumerate(models):
        for k, w in model.state_dict().items():
            if not w.is_floating_point():  # batch norm's step count: exact
                assert torch.equal(w, alone[i][0].state_dict()[k]), (i, k)
                continue
            own = (w - alone[i][0].state_dict()[k]).norm()
            moved = (alone[i][0].state_dict()[k] - inits[i][k]).norm()
            others = min((w - alone[j][0].state_dict()[k]).norm()
                         for j in range(len(models)) if j != i)
            out.append((i, k, float(own / moved), float(own / others)))
    return out


@pytest.mark.parametrize("name,hp", [
    ("lenet_300_100", TrainingHparams(optimizer="adam", lr=1e-2, batch_size=32)),
    ("lenet_300_100", TrainingHparams(optimizer="sgd", lr=0.1, momentum=0.9,
                                      weight_decay=1e-3, batch_size=32)),
    ("conv2", TrainingHparams(optimizer="adam", lr=1e-3, batch_size=16)),
    # batch norm: each replicate's running statistics (stacked buffers) follow its solo run's
    ("cifar_resnet_8_2", TrainingHparams(optimizer="sgd", lr=0.05, momentum=0.9,
                                         weight_decay=1e-4, batch_size=16)),
], ids=["mlp-adam", "mlp-sgd-momentum-wd", "conv-adam", "resnet-batchnorm-sgd"])
def test_replicates_follow_their_solo_trajectories(digits, name, hp):
    inits = [build_model(name, digits.input_shape, digits.num_classes, seed=s).state_dict()
             for s in (0, 1, 0)]
    models, masks, alone, together = replicates(digits, name, hp)
    inits = [init if mask is None else {k: v * mask[k] if k in mask else v for k, v in init.items()}
             for init, mask in zip(inits, masks)]  # training starts from the masked weights
    for i, k, own, others in relative_distances(models, inits, alone):
        assert own < OWN, (i, k, own)  # near its own solo run...
        assert others < OTHERS, (i, k, others)  # ...and much nearer it than to any other
    for model, mask, (_, solo_metrics), metrics in zip(models, masks, alone, together):
        if mask is not None:
            for k, w in model.state_dict().items():
                if k in mask:
                    assert torch.all(w[~mask[k]] == 0)  # pruned stays exactly zero
        assert [(e.iteration, e.split) for e in metrics] == \
            [(e.iteration, e.split) for e in solo_metrics]
        for e, s in zip(metrics, solo_metrics):
            assert e.loss == pytest.approx(s.loss, rel=LOSS_REL)
            assert e.accuracy == pytest.approx(s.accuracy, abs=ACCURACY)
    # The loss tolerance tells the trajectories apart: each replicate's losses leave it
    # against every other replicate's solo run.
    for i, metrics in enumerate(together):
        for j, (_, solo_metrics) in enumerate(alone):
            if j != i:
                assert any(e.loss != pytest.approx(s.loss, rel=LOSS_REL)
                           for e, s in zip(metrics, solo_metrics)), (i, j)


@pytest.mark.parametrize("test_curve", [False, True])
def test_replicates_record_the_rows_they_record_alone(digits, test_curve):
    """Trained together, the test set is measured for all replicates when one needs it;
    each still records test and train rows only where it would alone."""
    hp = TrainingHparams(lr=1e-2, batch_size=32, test_curve=test_curve)

    def fresh():
        return [build_model("lenet_300_100", digits.input_shape, digits.num_classes, seed=s)
                for s in (0, 1)]

    alone = [train(model, digits, hp, seed=s, end=60, eval_every=5)
             for s, model in zip((0, 1), fresh())]
    together = train_replicates(fresh(), digits, hp, seeds=[0, 1], end=60, eval_every=5)
    for metrics, solo in zip(together, alone):
        assert [(e.iteration, e.split) for e in metrics] == [(e.iteration, e.split) for e in solo]
        for e, s in zip(metrics, solo):
            assert e.loss == pytest.approx(s.loss, rel=LOSS_REL)
            assert e.accuracy == pytest.approx(s.accuracy, abs=ACCURACY)
        assert EarlyStop.from_metrics(metrics).iteration == EarlyStop.from_metrics(solo).iteration
    tested = [{e.iteration for e in m if e.split == "test"} for m in together]
    evaluated = {e.iteration for e in together[0] if e.split == "val"}
    if test_curve:
        assert tested == [evaluated, evaluated]
    else:  # each replicate skips evaluations, not the same ones: rows are per replicate
        assert tested[0] != tested[1] and all(t < evaluated for t in tested)


def test_replicates_snapshot_and_resume(digits, tmp_path, monkeypatch):
    hp = TrainingHparams(lr=1e-2, batch_size=32)

    def fresh():
        return [build_model("lenet_300_100", digits.input_shape, digits.num_classes, seed=s)
                for s in (0, 1)]

    snaps: dict[int, dict] = {}
    straight = fresh()
    ref = train_replicates(straight, digits, hp, seeds=[0, 1], end=40, eval_every=10,
                           snapshot_at=15, on_snapshot=lambda i, s: snaps.__setitem__(i, s))
    assert sorted(snaps) == [0, 1] and not torch.equal(snaps[0]["fc1.weight"],
                                                       straight[0].fc1.weight)

    # interrupted at step 25 (a Ctrl-C), then resumed from the checkpoint
    resumed = fresh()
    ckpt = Checkpoint(tmp_path / "ckpt.pt", every=0)
    calls = iter(range(1000))
    monkeypatch.setattr(interrupt, "requested", lambda: next(calls) == 24)
    with pytest.raises(interrupt.Interrupted):
        train_replicates(resumed, digits, hp, seeds=[0, 1], end=40, eval_every=10,
                         checkpoint=ckpt)
    monkeypatch.setattr(interrupt, "requested", lambda: False)
    again = train_replicates(resumed, digits, hp, seeds=[0, 1], end=40, eval_every=10,
                             checkpoint=ckpt)
    assert again == ref
    for m in ref:  # the training-set rows, before and after the interruption, are compared
        train_its = [e.iteration for e in m if e.split == "train"]
        assert min(train_its) < 25 < max(train_its) and 40 in train_its
    for a, b in zip(resumed, straight):
        for wa, wb in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(wa, wb)


def test_a_diverged_replicate_stops_while_the_others_continue(digits):
    hp = TrainingHparams(lr=1e-2, batch_size=32)

    def fresh(broken):
        model = build_model("lenet_300_100", digits.input_shape, digits.num_classes, seed=0)
        if broken:
            with torch.no_grad():
                model.fc1.bias.fill_(math.nan)  # non-finite from the first evaluation on
        return model

    solo = fresh(False)
    expected = train(solo, digits, hp, seed=0, end=40, eval_every=10)
    models = [fresh(False), fresh(True)]
    ok, broken = train_replicates(models, digits, hp, seeds=[0, 0], end=40, eval_every=10)
    assert [(e.iteration, e.split) for e in ok] == [(e.iteration, e.split) for e in expected]
    for e, s in zip(ok, expected):
        assert e.loss == pytest.approx(s.loss, rel=1e-4, abs=1e-6)
    assert [(e.iteration, e.split) for e in broken] == [(0, "val")]  # no test once diverged
    stop = EarlyStop.from_metrics(broken)
    assert stop.diverged_iteration == 0 and stop.iteration is None
    assert EarlyStop.from_metrics(ok).diverged_iteration is None

    # all of them diverged: training stops before its first step
    steps = []
    metrics = train_replicates([fresh(True), fresh(True)], digits, hp, seeds=[0, 1], end=40,
                               eval_every=10, progress=lambda step, _: steps.append(step))
    assert steps == [] and all(len(m) == 1 for m in metrics)


def test_models_with_dropout_are_not_vectorised():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    assert not vectorizable(model)
    with pytest.raises(TicketlabError, match="--no-vectorize"):
        train_replicates([model, model], None, TrainingHparams(), seeds=[0, 1], end=1,  # type: ignore[arg-type]
                         eval_every=1)
