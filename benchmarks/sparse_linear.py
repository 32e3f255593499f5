"""Is the sparse export's layer faster than nn.Linear, and from which density?

Justifies the per-layer rule of the `sparse` export (ticketlab.deploy.sparse: CSR when at
most MAX_DENSITY of a Linear weight is kept and it has at least MIN_WEIGHTS weights). For
LeNet-300-100's layer shapes it times `SparseLinear` (the export's layer, layout changes
included) against `nn.Linear` with the same masked weight, at several densities and batch
sizes, with `deploy.bench.measure` (in one process), and prints the ratios:

    PYTHONPATH=src python benchmarks/sparse_linear.py [--threads 1] [--seconds 0.2]

`N.Nx` > 1.0 means the sparse layer is faster; `*` marks the cells the rule sends to CSR.
The input of each sparse layer is batch-major (the first layer's case, which pays a
transposing copy); a layer after another sparse layer gets its input feature-major for free,
so this is the sparse layer's worst case. Machines are noisy: compare ratios from one run.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ticketlab.deploy.bench import measure
from ticketlab.deploy.sparse import MAX_DENSITY, MIN_WEIGHTS, SparseLinear, goes_sparse

SHAPES = {"fc1 784->300": (300, 784), "fc2 300->100": (100, 300), "fc3 100->10": (10, 100)}
DENSITIES = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.019, 0.01)
BATCHES = (1, 64, 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100, help="at least this many calls")
    parser.add_argument("--seconds", type=float, default=0.2, help="and this long, per cell")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s); SparseLinear speed-up over "
          "nn.Linear (deploy.bench.measure: medians of blocks of calls); rule: CSR at "
          f"density <= {MAX_DENSITY} and >= {MIN_WEIGHTS} weights (*)")
    print(f"{'layer':14s} {'batch':>5s} " + " ".join(f"{d:>7.3f}" for d in DENSITIES))
    for name, (out_f, in_f) in SHAPES.items():
        for batch in BATCHES:
            x = torch.randn(batch, in_f, generator=g)
            cells = []
            for density in DENSITIES:
                dense = nn.Linear(in_f, out_f)
                keep = torch.rand(out_f, in_f, generator=g) < density
                with torch.no_grad():
                    dense.weight.mul_(keep)
                sparse = SparseLinear(dense.weight, keep, dense.bias)
                with torch.inference_mode():
                    assert torch.allclose(sparse(x), dense(x), atol=1e-4, rtol=1e-4)
                _, row = measure({"dense": dense, "sparse": sparse}, (in_f,), (batch,),
                                 min_repeats=args.repeats, min_seconds=args.seconds)
                star = "*" if goes_sparse(keep, dense) else " "
                cells.append(f"{row['speedup']:5.1f}x{star}")
            print(f"{name:14s} {batch:5d} " + " ".join(cells))


if __name__ == "__main__":
    main()
