"""Augmentation inside the training loop: seeded by (seed, step), so runs repeat bit for bit,
resume bit for bit, and replicates see what their solo runs see."""

from __future__ import annotations

import pytest

from tests.training.synthetic import same_state, small_conv, state, synthetic
from tests.training.test_replicates import OTHERS, OWN
from ticketlab.config import TrainingHparams
from ticketlab.training import Checkpoint, interrupt, train, train_replicates
from ticketlab.training.hooks import Hook, LoopState

END, EVAL = 24, 8


def hp(augment: str, **kw) -> TrainingHparams:
    return TrainingHparams(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16,
                           augment=augment, **kw)


@pytest.fixture(scope="module")
def data():
    return synthetic(shape=(3, 8, 8), augment="crop_flip")  # 6 steps per epoch: 4 epochs


def run(data, h: TrainingHparams, seed: int = 0, init: int = 0, **kw):
    model = small_conv(seed=init)
    metrics = train(model, data, h, seed=seed, end=END, eval_every=EVAL, **kw)
    return metrics, state(model)


def test_crop_flip_training_repeats_bit_for_bit(data):
    (m1, w1), (m2, w2) = run(data, hp("crop_flip")), run(data, hp("crop_flip"))
    assert m1 == m2 and same_state(w1, w2)


def test_augmentation_changes_the_trajectory(data):
    m_aug, w_aug = run(data, hp("crop_flip"))
    m_none, w_none = run(data, hp("none"))
    _, w_flip = run(data, hp("flip"))
    assert not same_state(w_aug, w_none) and m_aug != m_none
    assert not same_state(w_flip, w_none) and not same_state(w_flip, w_aug)
    # ...and which images get which crop depends on the seed
    _, w_seed1 = run(data, hp("crop_flip"), seed=1)
    _, w_seed1_none = run(data, hp("none"), seed=1)
    assert not same_state(w_seed1, w_aug) and not same_state(w_seed1, w_seed1_none)


def test_interrupted_and_resumed_equals_uninterrupted(data, tmp_path, monkeypatch):
    h = hp("crop_flip", weight_decay=1e-3, norm_bias_weight_decay=0.0)  # two named groups
    expected, reference = run(data, h)

    class StopAt(Hook):
        def after_step(self, s: LoopState) -> None:
            if s.step == 11:  # mid-epoch, between evaluations
                monkeypatch.setattr(interrupt, "requested", lambda: True)

    ckpt = Checkpoint(tmp_path / "ckpt.pt", every=0)
    with pytest.raises(interrupt.Interrupted):
        run(data, h, checkpoint=ckpt, hooks=[StopAt()])
    monkeypatch.setattr(interrupt, "requested", lambda: False)
    assert ckpt.load()["step"] == 11
    metrics, resumed = run(data, h, init=9, checkpoint=ckpt)  # init replaced by the checkpoint
    assert metrics == expected and same_state(resumed, reference)


def test_auto_follows_the_dataset(data):
    plain = synthetic(shape=(3, 8, 8), augment="none")  # digits and MNIST say none
    m_auto, w_auto = run(plain, hp("auto"))
    m_none, w_none = run(plain, hp("none"))
    assert m_auto == m_none and same_state(w_auto, w_none)
    m_auto, w_auto = run(data, hp("auto"))  # CIFAR and image folders say crop_flip
    m_crop, w_crop = run(data, hp("crop_flip"))
    assert m_auto == m_crop and same_state(w_auto, w_crop)
    assert not same_state(w_auto, run(data, hp("none"))[1])


def test_replicates_follow_their_solo_runs(data):
    """Both replicates from the same initialisation: only the data order and the crops and
    flips (each drawn from the replicate's own seed) tell them apart. Tolerances: see
    test_replicates.py (batched kernels round differently from a lone model's)."""
    h = hp("crop_flip")
    init = state(small_conv(seed=0))
    solo = [run(data, h, seed=s)[1] for s in (0, 1)]
    models = [small_conv(seed=0) for _ in (0, 1)]
    train_replicates(models, data, h, seeds=[0, 1], end=END, eval_every=EVAL)
    for i, model in enumerate(models):
        for k, w in model.state_dict().items():
            own = (w - solo[i][k]).norm()
            moved = (solo[i][k] - init[k]).norm()
            other = (w - solo[1 - i][k]).norm()
            assert own / moved < OWN, (i, k, float(own / moved))
            assert own / other < OTHERS, (i, k, float(own / other))


def test_a_rewound_run_sees_the_crops_of_its_steps(data):
    """With stateless SGD, 0->k then k->end (fresh optimizer) equals 0->end exactly: step s
    draws the crops and flips of step s, whichever step training started from."""
    h = TrainingHparams(optimizer="sgd", lr=0.05, batch_size=16, augment="crop_flip")
    _, straight = run(data, h)
    model = small_conv()
    train(model, data, h, seed=0, end=9, eval_every=EVAL)
    train(model, data, h, seed=0, start=9, end=END, eval_every=EVAL)
    assert same_state(state(model), straight)
