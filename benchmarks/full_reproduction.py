"""What the paper's full LeNet reproduction (`--preset lenet_mnist`) costs on this machine,
with and without each lever of issue 14, projected from measured per-step and
per-evaluation costs (it does not run the 10 hours).

The preset trains 5 seeds x (the dense level 0 + 20 levels x ticket, reinit and random) =
305 units of 50,000 iterations at batch 60, evaluating every 100 iterations. This measures,
at a range of levels (their masks keep 0.8^L of the fc weights and 0.9^L of the output
layer's, as the preset's rates do; random masks, since the cost depends on the density
only), with dense kernels and with sparse kernels (`--sparse-below`, here 0.12):

- the cost of one training step (the engine's `train`, mask enforcement included);
- the cost of evaluating the validation set (5,000 images), the test set (10,000) and the
  training subset (10,000), with the kernels training uses;
- the step and evaluations again with a second process doing the same beside it (what each
  of two workers pays when they share the machine's two cores and its memory bandwidth).

It then projects the preset's wall time from the real plan (`experiments.plan.makespan`:
dependencies included, a level waits for its ticket), adding one lever at a time:

1. before: one process, dense kernels, the test set at every evaluation;
2. both cores: `--executor processes --jobs 2`;
3. cheaper evaluation: the test set (like the training subset) only at new validation
   minima and at the end (the default since issue 14; `--test-curve` restores it);
4. sparse kernels below density 0.12 (the preset's `sparse_below`).

It prints the hours and the ratio `N.Nx` of each to the first.

Run:
    python benchmarks/full_reproduction.py              # ~5 min on an idle 2-core machine
    python benchmarks/full_reproduction.py --quick      # smoke test
Options: --levels LIST, --steps S (300), --repeats R (3), --minima F (the share of
evaluations at a new validation minimum or the end, i.e. rows of the training subset in a
run's metrics.csv; default the plan's `minima_share`: 20 of the 501, 4%; 17 to 32 were
measured in 50,000-iteration units of the preset), --below D (0.12, the preset's), --data-dir DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from ticketlab.experiments.plan import Plan, make_plan, makespan, minima_share
from ticketlab.models import build_model
from ticketlab.presets import preset_config
from ticketlab.pruning import Mask
from ticketlab.training import train
from ticketlab.training.loop import Solo, train_eval_subset

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


def costs(data_dir: Path, levels: list[int], steps: int, repeats: int, below: float
          ) -> dict[str, dict[int, dict]]:
    """Per kernel ("dense", "sparse") and level: seconds per training step and per evaluation
    of each split (medians of `repeats`), and the mask's density."""
    torch.set_num_threads(1)
    data = load_dataset("mnist", data_dir=data_dir)
    preset = preset_config("lenet_mnist").training
    splits = {"val": (data.x_val, data.y_val), "test": (data.x_test, data.y_test),
              "subset": train_eval_subset(data)}
    out: dict[str, dict[int, dict]] = {"dense": {}, "sparse": {}}
    for kernel, sparse_below in (("dense", None), ("sparse", below)):
        hp = dataclasses.replace(preset, sparse_below=sparse_below)
        for level in levels:
            model = build_model("lenet_300_100", data.input_shape, data.num_classes, seed=0)
            mask = level_mask(model, level)
            train(model, data, hp, seed=0, end=20, eval_every=21, mask=mask)  # warm-up
            step, ev = [], {k: [] for k in splits}
            for _ in range(repeats):
                began = time.perf_counter()
                train(model, data, hp, seed=0, end=steps, eval_every=steps + 1, mask=mask)
                total = time.perf_counter() - began
                solo = Solo(model, mask, 0, sparse_below=sparse_below)  # training's kernels
                for k, (x, y) in splits.items():
                    began = time.perf_counter()
                    solo.evaluate(x, y)
                    ev[k].append(time.perf_counter() - began)
                solo.finish()
                # train() evaluated all three at its start (a first minimum) and at its end
                evals = 2 * (ev["val"][-1] + ev["test"][-1] + ev["subset"][-1])
                step.append(max(total - evals, 0.0) / steps)
            out[kernel][level] = {"density": mask.density(), "step": statistics.median(step),
                                  **{k: statistics.median(v) for k, v in ev.items()}}
    return out


def measure(args: argparse.Namespace, beside: bool) -> dict[str, dict[int, dict]]:
    """`costs` here, or in two processes at once (each measured, their mean taken)."""
    if not beside:
        return costs(args.data_dir, args.levels, args.steps, args.repeats, args.below)
    cmd = [sys.executable, __file__, "--worker", "--levels", ",".join(map(str, args.levels)),
           "--steps", str(args.steps), "--repeats", str(args.repeats), "--below",
           str(args.below), "--data-dir", str(args.data_dir)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(p.communicate()[0]) for p in procs]
    return {kernel: {level: {k: statistics.mean(r[kernel][str(level)][k] for r in results)
                             for k in results[0][kernel][str(level)]}
                     for level in args.levels} for kernel in results[0]}


def at(measured: dict[int, dict], level: int, key: str) -> float:
    """Linear interpolation between the measured levels."""
    known = sorted(measured)
    lo = max((x for x in known if x <= level), default=known[0])
    hi = min((x for x in known if x >= level), default=known[-1])
    if lo == hi:
        return measured[lo][key]
    w = (level - lo) / (hi - lo)
    return (1 - w) * measured[lo][key] + w * measured[hi][key]


def unit_seconds(measured: dict[int, dict], level: int, steps: int, evals: int, minima: float,
                 test_every_eval: bool) -> float:
    """A unit's seconds: its steps, validation at every evaluation, the training subset at
    new minima, and the test set at every evaluation or at new minima only."""
    test = 1.0 if test_every_eval else minima
    return (steps * at(measured, level, "step") + evals * (
        at(measured, level, "val") + test * at(measured, level, "test")
        + minima * at(measured, level, "subset")))


def preset_plan(data_dir: Path) -> tuple[Plan, int, int]:
    from ticketlab.experiments.imp import open_run

    config = preset_config("lenet_mnist")
    runtime = Runtime(out=Path("/nonexistent-ticketlab-projection"), data_dir=data_dir,
                      device="cpu")
    ctx = open_run(config, runtime, 1, driver=False)
    return make_plan([ctx]), ctx.end, ctx.end // ctx.eval_every + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="0,4,6,7,8,9,10,12,16,20")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--minima", type=float, default=None)
    ap.add_argument("--below", type=float, default=0.12)
    ap.add_argument("--data-dir", type=Path,
                    default=os.environ.get("TICKETLAB_DATA", REPO.parent / "shared" / "data"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.levels = [int(x) for x in str(args.levels).split(",")]
    if args.quick:
        args.levels, args.steps, args.repeats = [0, 20], 100, 1
    if args.worker:
        print(json.dumps(costs(args.data_dir, args.levels, args.steps, args.repeats,
                               args.below)))
        return

    alone = measure(args, beside=False)
    pair = measure(args, beside=True)
    print(f"LeNet-300-100 / MNIST, batch 60, 1 thread per process; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("milliseconds per training step and per evaluation of each split; dense and "
          f"sparse kernels (--sparse-below {args.below}); alone, and 2 processes at once")
    print(f"{'level':>5} {'density':>8} | {'step':>6} {'sparse':>6} {'ratio':>6} | "
          f"{'val':>5} {'test':>5} {'subset':>6} | {'val':>5} {'test':>5} {'subset':>6} | "
          f"{'step, 2 procs':>13} {'sparse':>6}")
    for level in args.levels:
        d, sp = alone["dense"][level], alone["sparse"][level]
        pd, ps = pair["dense"][level], pair["sparse"][level]
        print(f"{level:5d} {100 * d['density']:7.1f}% | {1e3 * d['step']:6.3f} "
              f"{1e3 * sp['step']:6.3f} {d['step'] / sp['step']:5.1f}x | "
              f"{1e3 * d['val']:5.1f} {1e3 * d['test']:5.1f} {1e3 * d['subset']:6.1f} | "
              f"{1e3 * sp['val']:5.1f} {1e3 * sp['test']:5.1f} {1e3 * sp['subset']:6.1f} | "
              f"{1e3 * pd['step']:13.3f} {1e3 * ps['step']:6.3f}")

    plan, steps, evals = preset_plan(args.data_dir)
    if args.minima is None:
        args.minima = minima_share(evals)
    level_of = {j.key: j.units[0].level for j in plan.jobs}
    sparse_from = min((lv for lv in range(max(level_of.values()) + 1)
                       if 0.8 ** lv <= args.below), default=None)

    def seconds(measured: dict[str, dict[int, dict]], test_every_eval: bool, sparse: bool
                ) -> dict[str, float]:
        def kernel(level: int) -> dict[int, dict]:
            use = sparse and sparse_from is not None and level >= sparse_from
            return measured["sparse" if use else "dense"]
        return {k: unit_seconds(kernel(lv), lv, steps, evals, args.minima, test_every_eval)
                for k, lv in level_of.items()}

    levers = [
        ("before: 1 process, dense kernels, test set at every evaluation",
         makespan(plan, seconds(alone, True, False), 1)),
        ("+ both cores (--executor processes --jobs 2)",
         makespan(plan, seconds(pair, True, False), 2)),
        ("+ test set at new validation minima and the end only",
         makespan(plan, seconds(pair, False, False), 2)),
        (f"+ sparse kernels below density {args.below} (levels {sparse_from}+)",
         makespan(plan, seconds(pair, False, True), 2)),
    ]
    solo_all = makespan(plan, seconds(alone, False, True), 1)
    units = len(plan.jobs)
    print(f"\nthe preset: {units} units of {steps} iterations, {evals} evaluations each "
          f"(new validation minima: {args.minima:.0%} of them)")
    first = levers[0][1]
    for label, secs in levers:
        print(f"projected wall time, {label:<64} {secs / 3600:5.2f} h  {first / secs:4.1f}x")
    print(f"(all levers but both cores: {solo_all / 3600:.2f} h, {first / solo_all:.1f}x)")

    # Where the time goes with every lever: unit-hours per kernel regime, steps and
    # evaluations apart (2 processes' costs), and the makespan's floor: all of it / 2.
    parts: dict[str, list[float]] = {"dense kernels": [0, 0, 0], "sparse kernels": [0, 0, 0]}
    for lv in level_of.values():
        use = sparse_from is not None and lv >= sparse_from
        m = pair["sparse" if use else "dense"]
        full = unit_seconds(m, lv, steps, evals, args.minima, False)
        train_part = steps * at(m, lv, "step")
        row = parts["sparse kernels" if use else "dense kernels"]
        row[0] += 1
        row[1] += train_part
        row[2] += full - train_part
    total = sum(r[1] + r[2] for r in parts.values())
    for name, (n, tr, ev) in parts.items():
        print(f"{name}: {n:.0f} units, {tr / 3600:.2f} h of steps + {ev / 3600:.2f} h of "
              f"evaluation = {(tr + ev) / total:.0%} of the work")
    print(f"the work on 2 workers with no idle time: {total / 2 / 3600:.2f} h (the plan's "
          f"makespan above adds the waits of its dependencies)")
    print(f"the goal: 3.00 h ({first / (3 * 3600):.1f}x over the first line)")


if __name__ == "__main__":
    main()
