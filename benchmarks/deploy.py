"""Speed-up of exported tickets over the dense network, level by level, in one process.

Two series from finished `ticketlab find` runs:

- unstructured (e.g. LeNet-300-100 on MNIST, every level): the `sparse` export;
- structured (e.g. Conv-4 by filters): the `compact` export in PyTorch and in onnxruntime;
  its speed-up over the dense network as trained, and like for like (over the dense network
  in the same runtime and layout) beside the ideal (the dense network's multiply-accumulates
  over the export's). The structured figure plots the like-for-like speed-up.

Each level's models are timed with `ticketlab.deploy.bench.measure` (medians of blocks of
calls, models interleaved) at batch sizes 1, 64 and 256. Prints the tables and writes
OUT/deploy.json (every row), OUT/<series>.{png,svg} (speed-up against % of weights
remaining, with the ideal 1/density line):

    PYTHONPATH=src python benchmarks/deploy.py --unstructured RUN --structured RUN \\
        [--seed 0] [--threads 1] [--seconds 0.5] [--out docs/deploy]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from ticketlab.deploy.bench import count_macs, measure
from ticketlab.deploy.compact import fast_layout
from ticketlab.deploy.sparse import SparseLinear, _feature_major
from ticketlab.experiments.export import export_ticket, load_ticket, onnx_callable
from ticketlab.experiments.store import RunStore
from ticketlab.experiments.trained import Trained
from ticketlab.io import write_json
from ticketlab.report.deploy import speedup_figure
from ticketlab.report.plots import save_figure

BATCHES = (1, 64, 256)


def levels(run: Path, seed: int) -> dict[int, float]:
    """Each finished ticket level of `seed` and its density (from the run's records)."""
    return dict(sorted((r["level"], r["density"]) for r in RunStore.open(run).records()
                       if r["variant"] == "ticket" and r["seed"] == seed))


def tickets(run: Path, args: argparse.Namespace) -> Iterator[tuple[int, Trained]]:
    """Each finished ticket of `args.seed`, level by level, the dataset loaded once."""
    data = None
    for level in levels(run, args.seed):
        t = load_ticket(run, level=level, seed=args.seed, data_dir=args.data_dir,
                        device="cpu", data=data)
        data = t.data
        yield level, t


def unstructured(run: Path, args: argparse.Namespace) -> list[dict]:
    rows = []
    for level, t in tickets(run, args):
        exported, _ = export_ticket(t, "sparse")
        csr = sum(r["format"] == "csr" for r in exported.layers)
        measured = measure({"dense": t.model.eval(), "sparse": exported.module},
                           tuple(t.data.input_shape), BATCHES, min_seconds=args.seconds,
                           min_repeats=args.repeats)
        for r in measured:
            r.update(level=level, density=t.mask.density(), csr_layers=csr,
                     format="sparse" if r["model"] != "dense" else "dense")
        rows += measured
        print(f"level {level:2d}  {t.mask.density():7.2%} kept  {csr} CSR layers  " +
              "  ".join(f"b{r['batch']}: {r['speedup']:4.1f}x" for r in measured
                        if r["model"] == "sparse"), flush=True)
    return rows


def breakdown(run: Path, args: argparse.Namespace, batch: int = 64) -> list[dict]:
    """Where the sparse export's time goes at the level nearest 1.9%: each layer (and the
    ReLU after it: an MLP such as LeNet) of the export and of the dense network, timed alone
    on the input it gets in the network."""
    import numpy as np

    densities = levels(run, args.seed)
    level = min(densities, key=lambda k: abs(np.log(densities[k] / 0.019)))
    t0 = load_ticket(run, level=min(densities), seed=args.seed, data_dir=args.data_dir,
                     device="cpu")
    t = load_ticket(run, level=level, seed=args.seed, device="cpu", data=t0.data)
    sparse = export_ticket(t, "sparse")[0].module
    dense = t0.model.eval()
    x = torch.randn(batch, *t.data.input_shape, generator=torch.Generator().manual_seed(0))
    parts: dict = {"dense: whole": dense, "sparse: whole": sparse}
    for label, net in (("dense", dense), ("sparse", sparse)):
        inputs: dict = {}
        def keep(name: str, got: dict = inputs):  # a forward hook that returns None
            return lambda module, args, output: got.__setitem__(name, args[0])

        hooks = [m.register_forward_hook(keep(n)) for n, m in net.named_children()]
        with torch.inference_mode():
            net(x)
        for h in hooks:
            h.remove()
        children = list(net.named_children())
        for k, (n, m) in enumerate(children):
            parts[f"{label}: {n} ({type(m).__name__})"] = lambda _, m=m, i=inputs[n]: m(i)
            if isinstance(m, SparseLinear) and not inputs[n].t().is_contiguous():
                parts[f"{label}: {n}, its input's layout change"] = (
                    lambda _, i=inputs[n]: _feature_major(i))
            if k < len(children) - 1:  # an MLP: a ReLU after every layer but the output
                parts[f"{label}: {n} relu"] = lambda _, i=inputs[n], m=m: _relu(m, i)
    rows = measure(parts, tuple(t.data.input_shape), (batch,), baseline="dense: whole",
                   min_seconds=args.seconds, min_repeats=args.repeats)
    print(f"breakdown at level {level} ({densities[level]:.2%} kept), batch {batch}:")
    for r in rows:
        print(f"  {r['model']:32s} {1e3 * r['median_ms']:8.1f} us")
        r.update(level=level, density=densities[level])
    return rows


_OUTPUTS: dict = {}


def _relu(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The ReLU after `module` on its actual output (computed once, outside the timing)."""
    key = (id(module), id(x))
    if key not in _OUTPUTS:
        _OUTPUTS[key] = module(x)
    return _OUTPUTS[key].relu()


def structured(run: Path, args: argparse.Namespace) -> list[dict]:
    rows = []
    for level, t in tickets(run, args):
        dense = t.model.eval()
        x = t.data.x_val[:1]
        compact = export_ticket(t, "compact")[0].module
        ideal = count_macs(dense, x) / count_macs(compact, x)
        models = {"dense": dense, "dense channels-last": fast_layout(copy.deepcopy(dense)),
                  "compact": compact,  # channels-last already: the export's layout
                  "dense onnx": onnx_callable(dense, t.data.x_val[:8]),
                  "compact onnx": onnx_callable(compact, t.data.x_val[:8])}
        measured = measure(models, tuple(t.data.input_shape), BATCHES,
                           min_seconds=args.seconds, min_repeats=args.repeats)
        like = {"compact": "dense channels-last", "compact onnx": "dense onnx"}
        median = {(r["model"], r["batch"]): r["median_ms"] for r in measured}
        for r in measured:
            # `speedup`: over the dense network as trained (PyTorch, NCHW); `like_for_like`:
            # over the dense network in the same runtime and layout, which is what the
            # ideal (the multiply-accumulates saved) can be compared with
            base = like.get(r["model"], r["model"])
            r["like_for_like"] = median[(base, r["batch"])] / r["median_ms"]
            r.update(level=level, density=t.mask.density(), ideal=ideal,
                     of_ideal=r["like_for_like"] / ideal, format=r["model"])
        rows += measured
        print(f"level {level:2d}  {t.mask.density():7.2%} kept  ideal {ideal:4.1f}x  " +
              "  ".join(f"{r['model']} b{r['batch']}: {r['speedup']:4.1f}x "
                        f"({r['of_ideal']:.2f} of ideal)"
                        for r in measured if r["model"].startswith("compact")), flush=True)
    return rows


FORMATS = {"unstructured": ("sparse",), "structured": ("compact", "compact onnx")}


def draw(result: dict, seed: int, threads: int, out: Path) -> None:
    """OUT/<series>.{png,svg} from the rows (structured: like for like, ideal = MACs)."""
    for name, series in result["series"].items():
        points = [{"density": r["density"], "batch": r["batch"],
                   "speedup": r.get("like_for_like", r["speedup"]), "format": r["format"],
                   "ideal": r.get("ideal")}
                  for r in series["rows"] if r["format"] in FORMATS[name]]
        title = f"{series['run']} (seed {seed}), {threads} thread(s)"
        if name == "structured":
            title += "\nover the dense network in the same runtime and layout"
        save_figure(speedup_figure(points, title), out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unstructured", type=Path, help="a find run at weight granularity")
    parser.add_argument("--structured", type=Path, help="a find run by filters (or rows)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=0.5, help="time each model at least "
                        "this long per batch size and level")
    parser.add_argument("--repeats", type=int, default=10, help="and at least this many calls")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/deploy"))
    parser.add_argument("--breakdown-only", action="store_true", help="only time the "
                        "unstructured run's layers at ~1.9%% (OUT/breakdown.json)")
    parser.add_argument("--replot", action="store_true", help="only draw the figures again "
                        "from OUT/deploy.json")
    args = parser.parse_args()
    if args.breakdown_only:  # the per-layer times only, into OUT/breakdown.json
        torch.set_num_threads(args.threads)
        write_json(args.out / "breakdown.json", {
            "command": "PYTHONPATH=src python benchmarks/deploy.py --breakdown-only "
                       f"--unstructured {args.unstructured} --seed {args.seed} --threads "
                       f"{args.threads} --seconds {args.seconds} --repeats {args.repeats}",
            "torch": torch.__version__, "rows": breakdown(args.unstructured, args)})
        return
    if args.replot:
        result = json.loads((args.out / "deploy.json").read_text())
        draw(result, result.get("seed", args.seed), result["threads"], args.out)
        return
    torch.set_num_threads(args.threads)
    started = time.time()
    options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                       if v is not None and k not in ("replot", "breakdown_only"))
    result = {"command": f"PYTHONPATH=src python benchmarks/deploy.py {options}",
              "torch": torch.__version__, "threads": args.threads, "seed": args.seed,
              "machine": platform.processor() or platform.machine(), "series": {}}
    for name, run, fn in (("unstructured", args.unstructured, unstructured),
                          ("structured", args.structured, structured)):
        if run is None:
            continue
        print(f"{name}: {run.name}, seed {args.seed}, {args.threads} thread(s)", flush=True)
        result["series"][name] = {"run": run.name, "rows": fn(run, args)}
        if name == "unstructured":
            result["breakdown"] = breakdown(run, args)
    result["seconds"] = round(time.time() - started)
    write_json(args.out / "deploy.json", result)
    draw(result, args.seed, args.threads, args.out)
    print(f"written: {args.out / 'deploy.json'} and the figures ({result['seconds']} s)")



if __name__ == "__main__":
    main()
