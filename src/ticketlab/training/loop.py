"""The masked training loop: fixed budget, periodic evaluation, resumable, bit-reproducible.

Step s always sees the same batch (the epoch's seeded permutation) and the same learning
rate, whatever step training started from, so a rewound run continues the data order and
schedule from its rewind step and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ticketlab.config import TrainingHparams, derive_seed
from ticketlab.data.dataset import Dataset
from ticketlab.errors import TicketlabError
from ticketlab.io import atomic_write_bytes
from ticketlab.pruning.enforce import MaskEnforcer
from ticketlab.pruning.mask import Mask
from ticketlab.training import interrupt
from ticketlab.training.evaluate import evaluate
from ticketlab.training.optimizers import build_optimizer, lr_schedule

SPLITS = ("val", "test")


@dataclass
class Eval:
    iteration: int
    split: str
    loss: float
    accuracy: float


@dataclass
class EarlyStop:
    """Retroactive early stopping: the evaluation with the lowest validation loss."""

    iteration: int
    val_loss: float
    test_accuracy: float  # measured at that iteration, never selected on the test set
    final_test_accuracy: float

    @classmethod
    def from_metrics(cls, metrics: list[Eval]) -> EarlyStop:
        val = [e for e in metrics if e.split == "val"]
        test = {e.iteration: e for e in metrics if e.split == "test"}
        best = min(val, key=lambda e: e.loss)  # the first of equal losses
        last = max(test)
        return cls(best.iteration, best.loss, test[best.iteration].accuracy, test[last].accuracy)


class Checkpoint:
    """A resumable mid-training state, written atomically at most every `every` seconds."""

    def __init__(self, path: Path, every: float = 60.0):
        self.path = Path(path)
        self.every = every
        self._last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every

    def save(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path, buf.getvalue())
        self._last = time.monotonic()

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # any unreadable checkpoint is the same problem to the user
            raise TicketlabError(
                f"checkpoint {self.path} is corrupt ({type(e).__name__}): delete it to "
                "restart this training from its beginning"
            ) from None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


Progress = Callable[[int, float | None], None]  # (step, latest validation accuracy)


def train(
    model: nn.Module,
    data: Dataset,
    hp: TrainingHparams,
    *,
    seed: int,
    end: int,
    start: int = 0,
    eval_every: int,
    mask: Mask | None = None,
    snapshot_at: int | None = None,
    on_snapshot: Callable[[dict[str, torch.Tensor]], None] | None = None,
    checkpoint: Checkpoint | None = None,
    progress: Progress | None = None,
) -> list[Eval]:
    """Trains `model` in place from step `start` to `end`; returns the evaluations.

    `model` holds the weights of step `start` (with the mask applied); the optimizer starts
    fresh. Evaluations on the validation and test sets happen at `start`, at every multiple
    of `eval_every` and at `end`. `on_snapshot` receives the state dict at step `snapshot_at`
    (the rewind point, during level 0).
    """
    ipe = data.iterations_per_epoch(hp.batch_size)
    lr_at = lr_schedule(hp, ipe)
    optimizer = build_optimizer(model.parameters(), hp)
    enforcer = MaskEnforcer(model, mask) if mask is not None else None
    metrics: list[Eval] = []
    step = start

    state = checkpoint.load() if checkpoint else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        metrics = [Eval(**e) for e in state["metrics"]]
        step = state["step"]
    else:
        torch.manual_seed(derive_seed(seed, "train", start))  # dropout etc., if a model has it
        if enforcer:
            enforcer.zero_weights()
        metrics += _evaluate(model, data, step)

    def save_checkpoint() -> None:
        if checkpoint:
            checkpoint.save({
                "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": torch.get_rng_state(), "metrics": [asdict(e) for e in metrics],
            })

    def latest_val() -> float | None:
        return next((e.accuracy for e in reversed(metrics) if e.split == "val"), None)

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    B = hp.batch_size
    epoch, order = -1, None
    lr = None
    while step < end:
        if step == snapshot_at and on_snapshot:
            on_snapshot({k: v.detach().clone() for k, v in model.state_dict().items()})
        if step // ipe != epoch:
            epoch = step // ipe
            order = data.epoch_order(seed, epoch)
        i = (step % ipe) * B
        idx = order[i:i + B]
        x, y = data.x_train.index_select(0, idx), data.y_train.index_select(0, idx)
        if (new_lr := lr_at(step)) != lr:
            lr = new_lr
            for group in optimizer.param_groups:
                group["lr"] = lr

        loss = F.cross_entropy(model(x), y)
        for p in params:  # what zero_grad(set_to_none=True) does, without its overhead
            p.grad = None
        loss.backward()
        if enforcer:
            enforcer.zero_grads()
        optimizer.step()
        if enforcer:
            enforcer.zero_weights()
        step += 1

        if step % eval_every == 0 or step == end:
            metrics += _evaluate(model, data, step)
            if checkpoint and step < end and checkpoint.due():
                save_checkpoint()
        if progress and (step % 50 == 0 or step == end):
            progress(step, latest_val())
        if interrupt.requested():
            save_checkpoint()
            raise interrupt.Interrupted(step)
    return metrics


def _evaluate(model: nn.Module, data: Dataset, step: int) -> list[Eval]:
    out = []
    for split in SPLITS:
        loss, acc = evaluate(model, getattr(data, f"x_{split}"), getattr(data, f"y_{split}"))
        out.append(Eval(step, split, loss, acc))
    return out
