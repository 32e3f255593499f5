"""The masked training loop: fixed budget, periodic evaluation, resumable, bit-reproducible.

Step s always sees the same batch (the epoch's seeded permutation) and the same learning
rate, whatever step training started from, so a rewound run continues the data order and
schedule from its rewind step and a resumed run continues exactly where it stopped.

One loop serves two trainees: `Solo` (one model, the reference) and `Stack` (replicates
trained together by `torch.func.vmap` over stacked weights, see `train_replicates`).

What an evaluation records (rows of `Eval`, per replicate), at the start, every
`eval_every` steps and at the end:
- "val": loss and accuracy on the whole validation set, at every evaluation;
- "test" (the whole test set) and "train" (a fixed subset of the training set,
  `train_eval_subset`: up to 10,000 images, the same for every trial): only where they are
  read, at each evaluation whose validation loss is a new (strictly lower) minimum, so the
  early-stop point always has them, and at the end of training: all early stopping
  reads. With `test_curve` the test set is measured at every evaluation (curves of test
  accuracy over training, the paper's Figure 3); the training subset stays where it was.
A replicate whose validation loss, or test loss where measured, is non-finite has
diverged: nothing more is recorded for it, and training stops once every replicate has.
Finiteness is checked at evaluations only, where the losses are on the host anyway: the
training step never syncs.
"""

from __future__ import annotations

import copy
import io
import math
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from ticketlab.config import TrainingHparams, derive_seed
from ticketlab.data.augment import augment
from ticketlab.data.dataset import Dataset
from ticketlab.errors import DamagedFile, TicketlabError
from ticketlab.io import atomic_write_bytes
from ticketlab.pruning.enforce import MaskEnforcer
from ticketlab.pruning.freeze import FrozenEnforcer
from ticketlab.pruning.mask import Mask
from ticketlab.training import interrupt
from ticketlab.training.evaluate import eval_chunk, evaluate
from ticketlab.training.hooks import Hook, LoopState, ReportProgress, Snapshot
from ticketlab.training.optimizers import (
    build_optimizer,
    lr_schedule,
    no_decay_names,
    param_groups,
)
from ticketlab.training.sparse import sparse_layers

# vmap runs a few ops (adaptive average pooling's as_strided_) through a slower generic rule
# and warns at every call; the speed is measured (benchmarks/replicates.py), the warning is
# noise in a progress display.
warnings.filterwarnings("ignore", message="There is a performance drop because we have not "
                        "yet implemented the batching rule", category=UserWarning)

SPLITS = ("val", "test")  # whole splits: a non-finite loss on either is a divergence
TRAIN_SPLIT = "train"  # the fixed training subset, at new validation minima and at the end
TRAIN_EVAL_SIZE = 10_000


@dataclass
class Eval:
    iteration: int
    split: str
    loss: float
    accuracy: float


@dataclass
class EarlyStop:
    """Retroactive early stopping: the finite evaluation with the lowest validation loss.

    An evaluation is an iteration with a "val" row; it is finite when its validation loss
    is, and its test loss where the test set was measured. The first of equal lowest losses
    is a strict new minimum, so the loop measured the test set there (in metrics of any
    version: older ones have test rows at every evaluation, which changes nothing here).
    Numbers are None where they do not exist: all of them when no evaluation is finite,
    the final ones when training ended diverged, the training accuracies for metrics
    recorded before they were (no "train" rows).
    """

    iteration: int | None
    val_loss: float | None
    test_accuracy: float | None  # measured at that iteration, never selected on the test set
    final_test_accuracy: float | None
    train_accuracy: float | None = None  # on the fixed training subset, at that iteration
    final_train_accuracy: float | None = None
    diverged_iteration: int | None = None  # first evaluation with a non-finite val/test loss

    @property
    def diverged(self) -> bool:
        return self.diverged_iteration is not None

    @classmethod
    def from_metrics(cls, metrics: list[Eval]) -> EarlyStop:
        by_iteration: dict[int, dict[str, Eval]] = {}
        for e in metrics:
            by_iteration.setdefault(e.iteration, {})[e.split] = e
        evals = [(i, r) for i, r in sorted(by_iteration.items()) if "val" in r]
        diverged = next((i for i, r in evals if not _finite(r)), None)
        finite = [(i, r) for i, r in evals if _finite(r)]
        if not finite:
            return cls(None, None, None, None, diverged_iteration=diverged)
        best_it, best = min(finite, key=lambda p: p[1]["val"].loss)  # the first of equal losses
        last = evals[-1][1]
        last_ok = _finite(last)
        return cls(
            best_it, best["val"].loss, _accuracy(best.get("test")),
            _accuracy(last.get("test")) if last_ok else None,
            _accuracy(best.get(TRAIN_SPLIT)),
            _accuracy(last.get(TRAIN_SPLIT)) if last_ok else None,
            diverged,
        )


def _finite(evaluation: dict[str, Eval]) -> bool:
    return all(math.isfinite(evaluation[s].loss) for s in SPLITS if s in evaluation)


def _accuracy(e: Eval | None) -> float | None:
    return None if e is None else e.accuracy


_SUBSETS: weakref.WeakKeyDictionary[Dataset, tuple[Tensor, Tensor]] = weakref.WeakKeyDictionary()


def train_eval_subset(data: Dataset, size: int = TRAIN_EVAL_SIZE) -> tuple[Tensor, Tensor]:
    """The training images training accuracy is measured on: fixed per dataset.

    The first `size` indices of one permutation drawn with a fixed seed (independent of the
    trial seed and the level, so every unit is measured on the same images), in index order;
    the whole training set when it has at most `size` images (digits). A subset keeps the
    cost near that of one test-set evaluation on MNIST.
    """
    cached = _SUBSETS.get(data)
    if cached is not None and len(cached[1]) == min(size, data.n_train):
        return cached
    if data.n_train <= size:
        subset = (data.x_train, data.y_train)
    else:
        g = torch.Generator(device="cpu").manual_seed(derive_seed(0, "train_eval_subset"))
        idx = torch.randperm(data.n_train, generator=g)[:size].sort().values.to(data.device)
        subset = (data.x_train.index_select(0, idx), data.y_train.index_select(0, idx))
    _SUBSETS[data] = subset
    return subset


CHECKPOINT_KEYS = ("step", "optimizer", "rng", "metrics")


class Checkpoint:
    """A resumable mid-training state, written atomically at most every `every` seconds.

    `owner` (e.g. the run hash and the unit's path and seeds) is stored with the state, and a
    checkpoint that names another owner is refused rather than resumed: it was copied from
    another unit, so its weights are not this unit's (checkpoints without one, from older
    versions, are accepted). `advice` ends the message of a refused or unreadable checkpoint.
    """

    def __init__(self, path: Path, every: float = 60.0, owner: dict | None = None,
                 advice: str | None = None):
        self.path = Path(path)
        self.every = every
        self.owner = owner
        self.advice = advice or "delete it to restart this training from its beginning"
        self._last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every

    def save(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save({**state, "owner": self.owner} if self.owner else state, buf)
        atomic_write_bytes(self.path, buf.getvalue())
        self._last = time.monotonic()

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # any unreadable checkpoint is the same problem to the user
            raise DamagedFile(self.path, f"unreadable: {type(e).__name__}", self.advice) \
                from None
        self.check(state)
        return state

    def check(self, state: object) -> None:
        """Refuses a state that lacks what resuming needs or belongs to another owner."""
        if not isinstance(state, dict):
            raise DamagedFile(self.path, "not a checkpoint", self.advice)
        missing = [k for k in CHECKPOINT_KEYS if k not in state]
        if "model" not in state and "stacked" not in state:
            missing.append("model")
        if missing:
            raise DamagedFile(self.path, f"missing {', '.join(missing)}", self.advice)
        owner = state.get("owner")
        if self.owner is not None and owner is not None and owner != self.owner:
            raise DamagedFile(self.path, f"it belongs to {_describe(owner)}, not to "
                              f"{_describe(self.owner)}", self.advice)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _describe(owner: object) -> str:
    if isinstance(owner, dict):
        return " ".join(f"{k} {v}" for k, v in owner.items())
    return repr(owner)


Progress = Callable[[int, float | None], None]  # (step, latest validation accuracy)
LossFn = Callable[[Tensor, Tensor], Tensor]  # (logits, labels) -> mean loss


class Solo:
    """One model trained as itself: the reference trajectory."""

    def __init__(self, model: nn.Module, mask: Mask | None, seed: int,
                 frozen: dict[str, Tensor] | None = None, loss_fn: LossFn = F.cross_entropy,
                 sparse_below: float | None = None):
        self.model, self.seeds, self.loss_fn = model, [seed], loss_fn
        model.train()  # batch norm and dropout in training mode, however the model came
        # Layers at most `sparse_below` dense train through their kept values (`sparse`);
        # held (frozen) pruned weights are not zero, so a mask-0 action keeps dense kernels.
        self.sparse = {} if frozen else sparse_layers(model, mask, sparse_below)
        if mask is not None and self.sparse:
            mask = mask.with_tensors({k: v for k, v in mask.items() if k not in self.sparse})
        self.enforcer = None if mask is None else (
            FrozenEnforcer(model, mask, frozen) if frozen else MaskEnforcer(model, mask))
        self.named_params = {k: (self.sparse[k].values if k in self.sparse else p)
                             for k, p in model.named_parameters() if p.requires_grad}
        self.params = list(self.named_params.values())
        self.no_decay = no_decay_names(model)
        for layer in self.sparse.values():
            layer.attach()

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """The batch's mean loss (the trainee owns its loss: `loss_fn`)."""
        return self.loss_fn(self.model(x[0]), y[0])

    def evaluate(self, x: Tensor, y: Tensor) -> list[tuple[float, float]]:
        return [evaluate(self.model, x, y)]

    def state_dict(self, i: int = 0) -> dict[str, Tensor]:
        self._sync()
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def zero_weights(self) -> None:
        if self.enforcer:
            self.enforcer.zero_weights()

    def zero_grads(self) -> None:
        if self.enforcer:
            self.enforcer.zero_grads()

    def save(self) -> dict:
        self._sync()
        return {"model": self.model.state_dict()}

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for layer in self.sparse.values():
            layer.reload()

    def finish(self) -> None:
        """Leaves the model plain: its own weights and forward (training ended or stopped)."""
        for layer in self.sparse.values():
            layer.detach()
        self.sparse = {}

    def _sync(self) -> None:
        for layer in self.sparse.values():
            layer.sync()


class Stack:
    """Replicates (seeds, variants) trained together: one vectorised pass over stacked weights.

    `torch.func.vmap` runs the model once on weights stacked along a new first dimension;
    the loss is the sum of each replicate's mean loss, so each gets exactly its own gradient,
    and Adam/SGD are elementwise, so each follows the trajectory it follows alone (up to
    floating-point rounding in the batched matrix products).
    """

    def __init__(self, models: list[nn.Module], masks: list[Mask | None], seeds: list[int],
                 frozen: list[dict[str, Tensor] | None] | None = None,
                 loss_fn: LossFn = F.cross_entropy):
        check_vectorizable(models[0])
        self.models, self.seeds, self.loss_fn = models, seeds, loss_fn
        self.base = copy.deepcopy(models[0]).to("meta").train()
        self.stacked, self.buffers = stack_module_state(models)
        self.named_params = dict(self.stacked)
        self.params = list(self.stacked.values())
        self.no_decay = no_decay_names(models[0])
        fmodel = lambda p, b, x: functional_call(self.base, (p, b), (x,))
        self.forward = vmap(fmodel, in_dims=(0, 0, 0))
        self.forward_shared = vmap(fmodel, in_dims=(0, 0, None))
        self.pruned = [k for k in self.stacked
                       if any(m is not None and k in m and not bool(m[k].all()) for m in masks)]
        self.weights = [self.stacked[k].detach() for k in self.pruned]
        self.masks = [torch.stack([
            (m[k] if m is not None and k in m else torch.ones(self.stacked[k].shape[1:]))
            .to(self.stacked[k]) for m in masks]) for k in self.pruned]
        # Mask-0 actions other than zero hold pruned weights at values: w = w * m + frozen.
        frozen = frozen or [None] * len(models)
        self.frozen = [torch.stack([
            (f[k].to(w) if f is not None and k in f else torch.zeros_like(w[0])) for f in frozen])
            * (1 - m) for k, w, m in zip(self.pruned, self.weights, self.masks)
        ] if any(frozen) else []

    def _forward(self, x: Tensor, shared: bool = False) -> Tensor:
        own = getattr(self.base, "forward_stacked", None)
        if callable(own) and not self.buffers:
            return own(self.stacked, x.expand(len(self.seeds), *x.shape) if shared else x)
        return (self.forward_shared if shared else self.forward)(self.stacked, self.buffers, x)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """The sum of each replicate's mean loss: each gets its own gradient."""
        logits = self._forward(x)
        if self.loss_fn is not F.cross_entropy:
            return sum(self.loss_fn(logits[i], y[i]) for i in range(len(self.seeds)))
        n, b = y.shape
        return F.cross_entropy(logits.reshape(n * b, -1), y.reshape(-1), reduction="sum") / b

    @torch.inference_mode()
    def evaluate(self, x: Tensor, y: Tensor) -> list[tuple[float, float]]:
        self.base.eval()
        n = len(self.seeds)
        loss = torch.zeros(n, device=x.device, dtype=torch.float64)
        correct = torch.zeros(n, device=x.device, dtype=torch.int64)
        chunk = eval_chunk(x, n)
        for i in range(0, len(x), chunk):
            logits = self._forward(x[i:i + chunk], shared=True)
            target = y[i:i + chunk]
            k = len(target)
            loss += F.cross_entropy(logits.reshape(n * k, -1), target.repeat(n),
                                    reduction="none").view(n, k).double().sum(1)
            correct += (logits.argmax(-1) == target).sum(1)
        self.base.train()
        return [(float(a) / len(x), int(c) / len(x)) for a, c in zip(loss, correct)]

    def state_dict(self, i: int) -> dict[str, Tensor]:
        tensors = {**self.stacked, **self.buffers}
        return {k: tensors[k][i].detach().clone() for k in self.models[0].state_dict()}

    def zero_weights(self) -> None:
        if self.weights:
            torch._foreach_mul_(self.weights, self.masks)
            if self.frozen:
                torch._foreach_add_(self.weights, self.frozen)

    def zero_grads(self) -> None:
        if self.weights:
            torch._foreach_mul_([self.stacked[k].grad for k in self.pruned], self.masks)

    def save(self) -> dict:
        return {"stacked": {k: v.detach() for k, v in self.stacked.items()},
                "buffers": self.buffers}

    def load(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in state["stacked"].items():
                self.stacked[k].copy_(v)
            for k, v in state["buffers"].items():
                self.buffers[k].copy_(v)

    def write_back(self) -> None:
        """Copies each replicate's trained weights into its own model."""
        for i, model in enumerate(self.models):
            model.load_state_dict(self.state_dict(i))


def vectorize_refusal(model: nn.Module) -> str | None:
    """Why `model` cannot be trained vectorised (None: it can). Dropout would draw one mask
    for all replicates where each lone model draws its own. Batch norm is fine: its running
    statistics are stacked buffers, one per replicate, updated in place under vmap exactly
    as each lone model updates its own (tests/training/test_replicates.py)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            return (f"{type(module).__name__} ({name}) draws its own random numbers, which "
                    "replicates trained in one vectorised pass would share")
    return None


def check_vectorizable(model: nn.Module) -> None:
    why = vectorize_refusal(model)
    if why:
        raise TicketlabError(f"{why}: use --no-vectorize to train replicates one after another")


def vectorizable(model: nn.Module) -> bool:
    return vectorize_refusal(model) is None


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
    frozen: dict[str, Tensor] | None = None,
    snapshot_at: int | None = None,
    on_snapshot: Callable[[dict[str, Tensor]], None] | None = None,
    checkpoint: Checkpoint | None = None,
    progress: Progress | None = None,
    hooks: list[Hook] | None = None,
) -> list[Eval]:
    """Trains `model` in place from step `start` to `end`; returns the evaluations.

    `model` holds the weights of step `start` (with the mask applied); the optimizer starts
    fresh. Evaluations happen at `start`, at every multiple of `eval_every` and at `end`
    (what each measures: the module's docstring). `on_snapshot` receives the state dict at
    step `snapshot_at` (the rewind point, during level 0). `frozen` (a mask-0 action's
    values, see `pruning.actions`) holds the pruned weights at those values instead of
    zero. Anything else happens in `hooks` (`training.hooks`).
    """
    hooks = list(hooks or [])
    if on_snapshot and snapshot_at is not None:
        hooks.append(Snapshot(snapshot_at, lambda i, state: on_snapshot(state)))
    if progress:
        hooks.append(ReportProgress(progress, end))
    solo = Solo(model, mask, seed, frozen, sparse_below=hp.sparse_below)
    try:
        return _loop(solo, data, hp, start=start, end=end, eval_every=eval_every,
                     checkpoint=checkpoint, hooks=hooks)[0]
    finally:
        solo.finish()


def train_replicates(
    models: list[nn.Module],
    data: Dataset,
    hp: TrainingHparams,
    *,
    seeds: list[int],
    end: int,
    start: int = 0,
    eval_every: int,
    masks: list[Mask | None] | None = None,
    frozen: list[dict[str, Tensor] | None] | None = None,
    snapshot_at: int | None = None,
    on_snapshot: Callable[[int, dict[str, Tensor]], None] | None = None,
    checkpoint: Checkpoint | None = None,
    progress: Progress | None = None,
    hooks: list[Hook] | None = None,
) -> list[list[Eval]]:
    """`train` for several models at once (same architecture, budget and start step).

    Replicate i uses data order `seeds[i]` and mask `masks[i]`, and ends with the weights
    and evaluations it would have had trained alone, up to floating-point rounding.
    `on_snapshot(i, state)` receives replicate i's state at `snapshot_at`.
    """
    masks = masks or [None] * len(models)
    stack = Stack(models, masks, list(seeds), frozen)
    hooks = list(hooks or [])
    if on_snapshot and snapshot_at is not None:
        hooks.append(Snapshot(snapshot_at, on_snapshot))
    if progress:
        hooks.append(ReportProgress(progress, end))
    metrics = _loop(stack, data, hp, start=start, end=end, eval_every=eval_every,
                    checkpoint=checkpoint, hooks=hooks)
    stack.write_back()
    return metrics


def _loop(
    trainee: Solo | Stack,
    data: Dataset,
    hp: TrainingHparams,
    *,
    start: int,
    end: int,
    eval_every: int,
    checkpoint: Checkpoint | None,
    hooks: list[Hook],
) -> list[list[Eval]]:
    ipe = data.iterations_per_epoch(hp.batch_size)
    lr_at = lr_schedule(hp, ipe)
    optimizer = build_optimizer(param_groups(trainee.named_params, trainee.no_decay, hp), hp)
    seeds = trainee.seeds
    metrics: list[list[Eval]] = [[] for _ in seeds]
    step = start

    state = checkpoint.load() if checkpoint else None
    if state is not None and state.get("seeds", seeds) != seeds:
        state = None  # a checkpoint of other replicates: start this training afresh
    if state is not None:
        trainee.load(state)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        saved = state["metrics"] if "seeds" in state else [state["metrics"]]  # 0.1 format
        metrics = [[Eval(**e) for e in m] for m in saved]
        step = state["step"]
    tracker = _Tracker(metrics, hp.test_curve)  # from the metrics: a resume continues it
    moment = LoopState(step, trainee, optimizer, metrics, tracker.diverged)
    if state is not None:
        for hook in hooks:
            hook.at_resume(moment, state.get("hooks", {}))
    else:
        torch.manual_seed(derive_seed(seeds[0], "train", start))  # dropout, if a model has it
        trainee.zero_weights()
        _evaluate(trainee, data, step, tracker, final=step == end)
        for hook in hooks:
            hook.at_evaluation(moment)

    saved_at = -1  # the step last checkpointed: an interrupt right after one writes nothing

    def save_checkpoint() -> None:
        nonlocal saved_at
        if checkpoint and saved_at != step:
            saved_at = step
            saved: dict = {}
            for hook in hooks:
                hook.at_checkpoint(moment, saved)
            checkpoint.save({
                "step": step, **trainee.save(), "optimizer": optimizer.state_dict(),
                "rng": torch.get_rng_state(), "seeds": seeds,
                "metrics": [[asdict(e) for e in m] for m in metrics],
                **({"hooks": saved} if saved else {}),
            })

    params = trainee.params
    B = hp.batch_size
    mode = data.augment if hp.augment == "auto" else hp.augment
    padding = 4 if mode == "crop_flip" else 0
    orders: dict[int, Tensor] = {}
    epoch, lr = -1, None
    while step < end and not all(tracker.diverged):
        moment.step = step
        for hook in hooks:
            hook.before_step(moment)
        if step // ipe != epoch:
            epoch = step // ipe
            orders = {s: data.epoch_order(s, epoch) for s in set(seeds)}
        i = (step % ipe) * B
        idx = torch.cat([orders[s][i:i + B] for s in seeds]) if len(seeds) > 1 else \
            orders[seeds[0]][i:i + B]  # one model: no copy in the training step
        x = data.x_train.index_select(0, idx).view(len(seeds), B, *data.x_train.shape[1:])
        y = data.y_train.index_select(0, idx).view(len(seeds), B)
        if mode != "none":  # seeded by (seed, step): rewinds, resumes and replicates agree
            x = augment(x, seeds, step, padding, fill=data.black_pixel)
        if (new_lr := lr_at(step)) != lr:
            lr = new_lr
            for group in optimizer.param_groups:
                group["lr"] = lr

        loss = trainee.loss(x, y)
        for p in params:  # what zero_grad(set_to_none=True) does, without its overhead
            p.grad = None
        loss.backward()
        trainee.zero_grads()
        optimizer.step()
        trainee.zero_weights()
        step += 1
        moment.step = step
        for hook in hooks:
            hook.after_step(moment)

        if step % eval_every == 0 or step == end:
            _evaluate(trainee, data, step, tracker, final=step == end)
            for hook in hooks:
                hook.at_evaluation(moment)
            if all(tracker.diverged):
                break  # every replicate diverged: nothing left to learn
            if checkpoint and step < end and checkpoint.due():
                save_checkpoint()
        if interrupt.requested():
            save_checkpoint()
            raise interrupt.Interrupted(step)
    return metrics


class _Tracker:
    """Each replicate's metrics, lowest finite validation loss so far and divergence, and
    whether every evaluation measures the test set (`test_curve`)."""

    def __init__(self, metrics: list[list[Eval]], test_curve: bool = False):
        self.metrics, self.test_curve = metrics, test_curve
        self.best = [min((e.loss for e in m if e.split == "val" and math.isfinite(e.loss)),
                         default=math.inf) for m in metrics]
        self.diverged = [any(e.split in SPLITS and not math.isfinite(e.loss) for e in m)
                         for m in metrics]


def _evaluate(trainee: Solo | Stack, data: Dataset, step: int, tracker: _Tracker, final: bool
              ) -> None:
    """Records the validation evaluation of the replicates still live, and the test set's
    and the training subset's for those at a new validation minimum or at the end (the
    test set's at every evaluation with `test_curve`). Replicates trained together are
    evaluated together, but each records only the rows it would record alone."""
    val = trainee.evaluate(data.x_val, data.y_val)
    need_test: list[int] = []
    need_train: list[int] = []  # new minima and the end: where early stopping reads
    for i, m in enumerate(tracker.metrics):
        if tracker.diverged[i]:
            continue  # stopped: a diverged replicate's metrics end at its divergence
        row = Eval(step, "val", *val[i])
        m.append(row)
        if not math.isfinite(row.loss):
            tracker.diverged[i] = True
            continue
        if row.loss < tracker.best[i] or final:
            need_train.append(i)
        if row.loss < tracker.best[i] or final or tracker.test_curve:
            need_test.append(i)
        tracker.best[i] = min(tracker.best[i], row.loss)
    if need_test:
        test = trainee.evaluate(data.x_test, data.y_test)
        for i in need_test:
            row = Eval(step, "test", *test[i])
            tracker.metrics[i].append(row)
            if not math.isfinite(row.loss):
                tracker.diverged[i] = True
    need_train = [i for i in need_train if not tracker.diverged[i]]
    if need_train:
        train_results = trainee.evaluate(*train_eval_subset(data))
        for i in need_train:
            tracker.metrics[i].append(Eval(step, TRAIN_SPLIT, *train_results[i]))
