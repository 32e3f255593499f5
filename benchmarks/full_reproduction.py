"""What the paper's full LeNet reproduction (`--preset lenet_mnist`) costs on this machine,
projected from measured per-step and per-evaluation costs (it does not run the 10 hours).

The preset trains 5 seeds x (the dense level 0 + 20 levels x ticket, reinit and random) =
305 units of 50,000 iterations at batch 60, evaluating on the 5,000 validation and 10,000
test images every 100 iterations (and on the 10,000-image training subset at each new
validation minimum). This measures, at a range of levels (their masks keep 0.8^L of the fc
weights and 0.9^L of the output layer's, as the preset's rates do; random masks, since the
cost depends on the density only):

- the cost of one training step (the engine's `train`, mask enforcement included);
- the cost of one evaluation: validation + test sets, and the training subset;
- both again with a second process doing the same beside it (what each of two workers
  pays when they share the machine's two cores and its memory bandwidth).

It then projects the preset's wall time for the levers implemented so far, from the real
plan (`experiments.plan.makespan`: dependencies included, a level waits for its ticket):
sequential, and `--executor processes --jobs 2`. It prints the hours and the ratio `N.Nx`.
It also prints how much of each unit is evaluation, and of that how much is the test set:
the share a cheaper evaluation (issue 14's second lever, not implemented yet) could save at
most.

Run:
    python benchmarks/full_reproduction.py              # ~3 min on an idle 2-core machine
    python benchmarks/full_reproduction.py --quick      # smoke test
Options: --levels LIST (0,4,8,12,16,20), --steps S (300), --repeats R (3), --train-evals F
(0.2: the share of evaluations that also evaluate the training subset, i.e. new validation
minima; count them in a run's metrics.csv), --data-dir DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from ticketlab.config import Runtime
from ticketlab.data import load_dataset
from ticketlab.experiments.plan import Plan, make_plan, makespan
from ticketlab.models import build_model
from ticketlab.presets import preset_config
from ticketlab.pruning import Mask
from ticketlab.training import train
from ticketlab.training.evaluate import evaluate
from ticketlab.training.loop import train_eval_subset

REPO = Path(__file__).resolve().parents[1]


def level_mask(model: torch.nn.Module, level: int) -> Mask:
    """A random mask with the preset's per-layer densities at `level`."""
    dense = Mask.dense(model)
    g = torch.Generator().manual_seed(level)
    kept = {}
    for name, keep in dense.items():
        density = (0.9 if dense.groups[name] == "output" else 0.8) ** level
        scores = torch.rand(keep.shape, generator=g)
        k = max(1, round(density * keep.numel()))
        kept[name] = scores >= scores.flatten().kthvalue(keep.numel() - k + 1).values
    return dense.with_tensors(kept)


def costs(data_dir: Path, levels: list[int], steps: int, repeats: int) -> dict[int, dict]:
    """Per level: seconds per training step, per val+test evaluation, per training-subset
    evaluation (medians of `repeats`), and the mask's density."""
    torch.set_num_threads(1)
    data = load_dataset("mnist", data_dir=data_dir)
    hp = preset_config("lenet_mnist").training
    sub_x, sub_y = train_eval_subset(data)
    out = {}
    for level in levels:
        model = build_model("lenet_300_100", data.input_shape, data.num_classes, seed=0)
        mask = level_mask(model, level)
        train(model, data, hp, seed=0, end=20, eval_every=21, mask=mask)  # warm-up, untimed
        step, ev, tr = [], [], []
        for _ in range(repeats):
            began = time.perf_counter()
            train(model, data, hp, seed=0, end=steps, eval_every=steps + 1, mask=mask)
            total = time.perf_counter() - began
            began = time.perf_counter()
            evaluate(model, data.x_val, data.y_val)
            evaluate(model, data.x_test, data.y_test)
            ev.append(time.perf_counter() - began)
            began = time.perf_counter()
            evaluate(model, sub_x, sub_y)
            tr.append(time.perf_counter() - began)
            # train() evaluated val+test and the subset at its start and end: take them out
            step.append(max(total - 2 * ev[-1] - 2 * tr[-1], 0.0) / steps)
        out[level] = {"density": mask.density(), "step": statistics.median(step),
                      "eval": statistics.median(ev), "train_eval": statistics.median(tr)}
    return out


def measure(args: argparse.Namespace, beside: bool) -> dict[int, dict]:
    """`costs` here, or in two processes at once (each measured, their mean taken)."""
    if not beside:
        return costs(args.data_dir, args.levels, args.steps, args.repeats)
    cmd = [sys.executable, __file__, "--worker", "--levels", ",".join(map(str, args.levels)),
           "--steps", str(args.steps), "--repeats", str(args.repeats), "--data-dir",
           str(args.data_dir)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(p.communicate()[0]) for p in procs]
    return {level: {k: statistics.mean(r[str(level)][k] for r in results)
                    for k in results[0][str(level)]} for level in args.levels}


def at(measured: dict[int, dict], level: int, key: str) -> float:
    """Linear interpolation between the measured levels."""
    known = sorted(measured)
    lo = max((x for x in known if x <= level), default=known[0])
    hi = min((x for x in known if x >= level), default=known[-1])
    if lo == hi:
        return measured[lo][key]
    w = (level - lo) / (hi - lo)
    return (1 - w) * measured[lo][key] + w * measured[hi][key]


def unit_seconds(measured: dict[int, dict], level: int, steps: int, evals: int,
                 train_evals: float) -> float:
    return (steps * at(measured, level, "step") + evals * at(measured, level, "eval")
            + evals * train_evals * at(measured, level, "train_eval"))


def preset_plan(data_dir: Path) -> tuple[Plan, int, int]:
    from ticketlab.experiments.imp import open_run

    config = preset_config("lenet_mnist")
    runtime = Runtime(out=Path("/nonexistent-ticketlab-projection"), data_dir=data_dir,
                      device="cpu")
    ctx = open_run(config, runtime, 1, driver=False)
    return make_plan([ctx]), ctx.end, ctx.end // ctx.eval_every + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="0,4,8,12,16,20")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-evals", type=float, default=0.2)
    ap.add_argument("--data-dir", type=Path,
                    default=os.environ.get("TICKETLAB_DATA", REPO.parent / "shared" / "data"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.levels = [int(x) for x in str(args.levels).split(",")]
    if args.quick:
        args.levels, args.steps, args.repeats = [0, 20], 100, 1
    if args.worker:
        print(json.dumps(costs(args.data_dir, args.levels, args.steps, args.repeats)))
        return

    alone = measure(args, beside=False)
    pair = measure(args, beside=True)
    print(f"LeNet-300-100 / MNIST, batch 60, 1 thread per process; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{'level':>5} {'density':>8} {'step ms':>8} {'eval ms':>8} {'subset ms':>9} "
          f"{'step ms, 2 procs':>17} {'eval ms, 2 procs':>17}")
    for level in args.levels:
        a, p = alone[level], pair[level]
        print(f"{level:5d} {100 * a['density']:7.1f}% {1e3 * a['step']:8.3f} "
              f"{1e3 * a['eval']:8.1f} {1e3 * a['train_eval']:9.1f} {1e3 * p['step']:17.3f} "
              f"{1e3 * p['eval']:17.1f}")

    plan, steps, evals = preset_plan(args.data_dir)
    level_of = {j.key: j.units[0].level for j in plan.jobs}

    def seconds(measured: dict[int, dict]) -> dict[str, float]:
        return {k: unit_seconds(measured, lv, steps, evals, args.train_evals)
                for k, lv in level_of.items()}

    sequential = makespan(plan, seconds(alone), 1) / 3600
    workers = makespan(plan, seconds(pair), 2) / 3600
    units = len(plan.jobs)
    share = [evals * (at(alone, lv, "eval") + args.train_evals * at(alone, lv, "train_eval"))
             / unit_seconds(alone, lv, steps, evals, args.train_evals) for lv in (0, 20)]
    test_share = [evals * at(alone, lv, "eval") * 2 / 3
                  / unit_seconds(alone, lv, steps, evals, args.train_evals) for lv in (0, 20)]
    print(f"\nthe preset: {units} units of {steps} iterations, {evals} evaluations each "
          f"(training subset at {args.train_evals:.0%} of them)")
    print(f"evaluation's share of a unit: {share[0]:.0%} at level 0, {share[1]:.0%} at level 20;"
          f" the test set's (2/3 of the images evaluated): {test_share[0]:.0%} and "
          f"{test_share[1]:.0%}")
    print(f"projected wall time, sequential (1 process, 1 thread): {sequential:5.1f} h")
    print(f"projected wall time, --executor processes --jobs 2:    {workers:5.1f} h  "
          f"{sequential / workers:.1f}x")
    print(f"the goal: 3.0 h ({sequential / 3:.1f}x over sequential)")


if __name__ == "__main__":
    main()
