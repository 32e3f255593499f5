"""Per-layer sensitivity (Distiller's and fasterai's analysis): prune ONE layer, no retraining.

Each layer is cut alone, from the given mask, to each target sparsity with an existing
criterion and granularity, while every other layer stays exactly as the mask has it; the
network is then evaluated as it is. The curves show which layers tolerate pruning, which is
what one looks at to choose per-layer rates.

Validation split by default. The analysis exists to choose rates; choosing them from test
accuracy is selection on the test set, so `split="test"` is allowed but labelled as such in
every output.

A target is the fraction of the layer's weights pruned IN TOTAL, counted from the mask. A
target at or below the layer's current sparsity (a ticket already prunes part of it) prunes
nothing: its record shows the current sparsity, and the accuracy is measured anyway (it is
the baseline's). At structured granularities a group (filter, row...) goes whole, so the
sparsity reached is the one nearest the target that whole groups allow (ties: fewer
removed); `sparsity` in each record is what the mask reached, `target` what was asked. A
layer is never cut to nothing: at most all but one of its remaining weights (or groups) go.
Layers a granularity does not apply to (kernel on a Linear weight) are left out.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ticketlab.data.dataset import Dataset
from ticketlab.errors import TicketlabError
from ticketlab.experiments.store import RunStore
from ticketlab.experiments.trained import load_trained, pick_unit
from ticketlab.pruning import Mask, criterion_scores, group_dims
from ticketlab.pruning.channels import OUTPUT_GRANULARITIES, trace_followers
from ticketlab.pruning.criteria import get_criterion
from ticketlab.pruning.granularity import check_names, prune_structured
from ticketlab.training.evaluate import evaluate

DEFAULT_SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SPLITS = ("val", "test")

Progress = Callable[[int, int], None]  # (evaluations done, evaluations in all)


def check_arguments(sparsities: tuple[float, ...], granularity: str, criterion: str,
                    reduce: str, split: str) -> None:
    """Every argument checked before anything is loaded or evaluated."""
    if not sparsities:
        raise TicketlabError("no sparsities to test: give some, e.g. --sparsities 0.5,0.8,0.9")
    for s in sparsities:
        if not (math.isfinite(s) and 0 <= s < 1):
            raise TicketlabError(f"sparsity must be a fraction in [0, 1), got {s}: e.g. "
                                 "--sparsities 0.5,0.8,0.9")
    check_names(granularity, reduce)
    if split not in SPLITS:
        raise TicketlabError(f"unknown split '{split}': choose val (the default: choosing rates "
                             "on the test set is selection on test) or test")
    get_criterion(criterion)  # an unknown name raises, listing the registered ones


def applies(shape: torch.Size, granularity: str) -> bool:
    """Whether `granularity` has a meaning on a weight of `shape` (kernel needs a conv)."""
    if granularity == "weight":
        return True
    return len(shape) >= (3 if granularity == "kernel" else 2)


def _groups_left(m: Tensor, granularity: str) -> int:
    """How many groups of `m` still keep a weight."""
    dims = group_dims(m.shape, granularity)
    return int(m.amax(dim=[d for d in range(m.dim()) if d not in dims]).sum())


def cut_layer(mask: Mask, scores: Tensor, name: str, target: float, granularity: str = "weight",
              reduce: str = "mean") -> Tensor:
    """Tensor `name` of `mask` cut to `target` sparsity in total, lowest scores first (see
    the module's docstring for targets below the current sparsity and for whole groups)."""
    one = mask.with_tensors({name: mask[name]})
    m = mask[name]
    total, pruned_now = m.numel(), m.numel() - int(m.sum())
    want = round(target * total)
    if want <= pruned_now:
        return m.clone()
    left = total - pruned_now if granularity == "weight" else _groups_left(m, granularity)

    def cut(n: int) -> Tensor:  # n more weights or groups removed: round(n / left * left) == n
        return prune_structured(one, {name: scores}, n / left, granularity, reduce)[name]

    if granularity == "weight":
        return cut(min(want - pruned_now, left - 1))

    def pruned(n: int) -> int:  # grows with n: the n lowest groups contain the n - 1 lowest
        return total - int(cut(n).sum())

    lo, hi = 1, left - 1  # the smallest n reaching `want`, or all but one group
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if pruned(mid) >= want else (mid + 1, hi)
    if lo > 1 and abs(pruned(lo - 1) - want) <= abs(pruned(lo) - want):
        lo -= 1
    return cut(lo)


def _split(data: Dataset, split: str) -> tuple[Tensor, Tensor]:
    return (data.x_val, data.y_val) if split == "val" else (data.x_test, data.y_test)


def sensitivity(model: nn.Module, mask: Mask, data: Dataset,
                sparsities: tuple[float, ...] = DEFAULT_SPARSITIES, *,
                granularity: str = "weight", criterion: str = "large_final",
                reduce: str = "mean", split: str = "val",
                init: Mapping[str, Tensor] | None = None, seed: int = 0,
                batch_size: int = 2000, progress: Progress | None = None
                ) -> list[dict[str, Any]]:
    """One record per (layer, target) of `model` (trained weights) under `mask`, each layer
    cut alone; the first record is the baseline: the model under `mask` as it is (layer,
    group and target None, sparsity the whole mask's).

    Records: layer, group, target, sparsity (reached, counted from the mask), loss, accuracy
    (on `split`; batch norm in eval mode), split. `init` feeds the criteria that read initial
    weights (default: the model's own, which only large_final, small_final and random
    ignore); `seed` feeds the random criteria. `model` is left unchanged.
    """
    check_arguments(tuple(sparsities), granularity, criterion, reduce, split)
    mask.check_fits(model)
    x, y = _split(data, split)
    clone = copy.deepcopy(model)
    mask.apply_(clone)
    params = dict(clone.named_parameters())
    final = {k: params[k].detach() for k in mask}
    scores = criterion_scores(criterion, final if init is None else init, final, mask, seed)
    layers = [k for k in mask if applies(mask[k].shape, granularity)]
    if not layers:
        raise TicketlabError(f"{granularity} granularity applies to no layer of this model: "
                             "use filter, row or weight")
    total, done = len(layers) * len(sparsities), 0

    def record(layer: str | None, target: float | None, sparsity: float) -> dict[str, Any]:
        loss, acc = evaluate(clone, x, y, batch_size)
        return {"layer": layer, "group": mask.groups[layer] if layer else None,
                "target": target, "sparsity": sparsity, "loss": loss, "accuracy": acc,
                "split": split}

    records = [record(None, None, 1 - mask.density())]
    # a filter or neuron cut whole takes its bias and batch-norm channel with it, as in training
    followers = (trace_followers(clone, x[:1]) if granularity in OUTPUT_GRANULARITIES
                 else None)
    with torch.no_grad():
        for name in layers:
            p, original = params[name], params[name].detach().clone()
            companions = (followers or {}).get(name, [])
            kept = {k: params[k].detach().clone() for k in companions}
            for target in sparsities:
                m = cut_layer(mask, scores[name], name, target, granularity, reduce)
                p.copy_(original * m.to(p.device))
                alive = m.reshape(m.shape[0], -1).any(1).to(p.device)
                for k, v in kept.items():
                    params[k].copy_(v * alive)
                records.append(record(name, target, 1 - int(m.sum()) / m.numel()))
                done += 1
                if progress:
                    progress(done, total)
            p.copy_(original)
            for k, v in kept.items():
                params[k].copy_(v)
    return records


def analyze_run(store: RunStore, *, level: int = 0, seed: int | None = None,
                variant: str = "ticket", sparsities: tuple[float, ...] = DEFAULT_SPARSITIES,
                granularity: str = "weight", criterion: str = "large_final",
                reduce: str = "mean", split: str = "val", data_dir: Path | None = None,
                device: str = "auto", progress: Progress | None = None) -> dict[str, Any]:
    """`sensitivity` of one finished unit of a `find` run: its final weights under its mask
    (level 0: the trained dense network), its rewind point as the criteria's initial weights.

    Returns what was asked, the unit, each layer's size and current sparsity, the baseline
    and the records, ready for `write_result`.
    """
    check_arguments(tuple(sparsities), granularity, criterion, reduce, split)
    unit = pick_unit(store, level, seed, variant)
    t = load_trained(store, unit, data_dir=data_dir, device=device)
    model, mask, data = t.model, t.mask, t.data
    records = sensitivity(model, mask, data, tuple(sparsities), granularity=granularity,
                          criterion=criterion, reduce=reduce, split=split,
                          init=store.load_weights(unit, "rewind", str(data.device)),
                          seed=unit.seed, progress=progress)
    return {
        "run": store.root.name, "unit": unit.relpath(), "seed": unit.seed, "level": level,
        "variant": variant, "density": mask.density(),
        "asked": {"sparsities": list(sparsities), "granularity": granularity,
                  "criterion": criterion, "reduce": reduce, "split": split},
        "layers": [{"layer": k, "group": mask.groups[k], "weights": m.numel(),
                    "sparsity": 1 - int(m.sum()) / m.numel(),
                    "analysed": applies(m.shape, granularity)} for k, m in mask.items()],
        "baseline": records[0], "records": records[1:],
    }


def write_result(result: dict[str, Any], out: Path) -> list[Path]:
    """OUT/sensitivity.json and the figure OUT/sensitivity.{png,svg}, written atomically."""
    from ticketlab.io import write_json
    from ticketlab.report.plots import save_figure
    from ticketlab.report.sensitivity import sensitivity_figure

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TicketlabError(f"--out {out} is a file, not a directory: give a directory")
    write_json(out / "sensitivity.json", result)
    save_figure(sensitivity_figure(result), out / "sensitivity")
    return [out / "sensitivity.json", out / "sensitivity.png", out / "sensitivity.svg"]
