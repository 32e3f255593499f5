"""The training loop's hooks: each moment at the right step and in order, hooks' own state
carried through a checkpoint and a resume, and the legacy snapshot and progress arguments."""

from __future__ import annotations

from typing import Any

import pytest

from tests.training.synthetic import same_state, small_conv, state, synthetic
from ticketlab.config import TrainingHparams
from ticketlab.training import Checkpoint, interrupt, train
from ticketlab.training.hooks import Hook, LoopState

HP = TrainingHparams(optimizer="sgd", lr=0.05, batch_size=16)


@pytest.fixture(scope="module")
def data():
    return synthetic()  # 96 images at batch 16: 6 steps per epoch


class Recorder(Hook):
    """Writes down every moment with its step; counts steps in its own state."""

    def __init__(self) -> None:
        self.moments: list[tuple[str, int]] = []
        self.steps_seen = 0
        self.resumed_from: dict[str, Any] | None = None

    def before_step(self, state: LoopState) -> None:
        self.moments.append(("before_step", state.step))

    def after_step(self, state: LoopState) -> None:
        self.moments.append(("after_step", state.step))
        self.steps_seen += 1

    def at_evaluation(self, state: LoopState) -> None:
        self.moments.append(("at_evaluation", state.step))
        # the evaluation of this step is already recorded
        assert state.metrics[0][-1].iteration == state.step

    def at_checkpoint(self, state: LoopState, saved: dict[str, Any]) -> None:
        self.moments.append(("at_checkpoint", state.step))
        saved["recorder"] = {"steps_seen": self.steps_seen, "at": state.step}

    def at_resume(self, state: LoopState, saved: dict[str, Any]) -> None:
        self.moments.append(("at_resume", state.step))
        self.resumed_from = saved
        self.steps_seen = saved["recorder"]["steps_seen"]


def expected_moments(start: int, end: int, eval_every: int) -> list[tuple[str, int]]:
    """What the hooks' docstring promises: evaluation at the start, every `eval_every` steps
    and at the end; before_step at the step about to be taken, after_step at the step
    counted."""
    out = [("at_evaluation", start)]
    for s in range(start, end):
        out += [("before_step", s), ("after_step", s + 1)]
        if (s + 1) % eval_every == 0 or s + 1 == end:
            out.append(("at_evaluation", s + 1))
    return out


def test_moments_in_order_with_their_steps(data):
    hook, second = Recorder(), Recorder()
    metrics = train(small_conv(), data, HP, seed=0, end=13, eval_every=5, hooks=[hook, second])
    assert hook.moments == expected_moments(0, 13, 5)
    assert second.moments == hook.moments  # every hook hears every moment
    assert hook.steps_seen == 13
    assert sorted({e.iteration for e in metrics}) == [0, 5, 10, 13]
    # a rewound training (start > 0) starts its moments there
    late = Recorder()
    train(small_conv(), data, HP, seed=0, start=4, end=9, eval_every=5, hooks=[late])
    assert late.moments == expected_moments(4, 9, 5)


def test_hook_state_survives_a_checkpoint_and_a_resume(data, tmp_path, monkeypatch):
    reference = small_conv()
    expected = train(reference, data, HP, seed=0, end=13, eval_every=5)

    stop = {"at": 7}

    class Interrupter(Hook):
        def after_step(self, state: LoopState) -> None:
            if state.step == stop["at"]:
                monkeypatch.setattr(interrupt, "requested", lambda: True)

    ckpt = Checkpoint(tmp_path / "ckpt.pt", every=0)  # saved at every evaluation
    first = Recorder()
    with pytest.raises(interrupt.Interrupted):
        train(small_conv(), data, HP, seed=0, end=13, eval_every=5, checkpoint=ckpt,
              hooks=[first, Interrupter()])
    monkeypatch.setattr(interrupt, "requested", lambda: False)
    # a checkpoint at the evaluation of step 5 (due) and one at the interruption
    assert [m for m in first.moments if m[0] == "at_checkpoint"] == [("at_checkpoint", 5),
                                                                      ("at_checkpoint", 7)]
    assert ckpt.load()["hooks"] == {"recorder": {"steps_seen": 7, "at": 7}}

    second = Recorder()
    resumed = small_conv(seed=9)  # whatever it holds is replaced by the checkpoint
    metrics = train(resumed, data, HP, seed=0, end=13, eval_every=5, checkpoint=ckpt,
                    hooks=[second])
    assert second.resumed_from == {"recorder": {"steps_seen": 7, "at": 7}}
    # resumed at step 7: no evaluation at the start, the rest as an uninterrupted run
    straight = expected_moments(0, 13, 5)
    tail = straight[straight.index(("after_step", 7)) + 1:]
    assert [m for m in second.moments if m[0] != "at_checkpoint"] == [("at_resume", 7), *tail]
    assert [m for m in second.moments if m[0] == "at_checkpoint"] == [("at_checkpoint", 10)]
    assert second.steps_seen == 13  # its own count, continued from what it saved
    assert metrics == expected and same_state(state(resumed), state(reference))


def test_legacy_snapshot_and_progress_still_work(data):
    hp = TrainingHparams(optimizer="sgd", lr=0.05, batch_size=16)
    snapshots: dict[int, dict] = {}
    reports: list[tuple[int, float | None]] = []
    hook = Recorder()
    model = small_conv()
    metrics = train(model, data, hp, seed=1, end=60, eval_every=20, snapshot_at=25,
                    on_snapshot=lambda s: snapshots.setdefault(25, s),
                    progress=lambda step, acc: reports.append((step, acc)), hooks=[hook])
    # the snapshot is the state after 25 steps: what training to step 25 leaves
    two_stage = small_conv()
    train(two_stage, data, hp, seed=1, end=25, eval_every=20)
    assert same_state(snapshots[25], state(two_stage))
    # progress every 50 steps and at the end, with the latest validation accuracy
    val = {e.iteration: e.accuracy for e in metrics if e.split == "val"}
    assert reports == [(50, val[40]), (60, val[60])]
    assert hook.moments == expected_moments(0, 60, 20)  # the legacy arguments beside hooks
