"""Is a sparse Linear layer faster than the dense one on this CPU, and from which density?

Groundwork for issue 12's `sparse` export, which must choose per layer between a dense weight
and a sparse one (never slower than dense). For LeNet-300-100's layer shapes it times
`x @ W.T` with W dense and with W in CSR (torch.sparse_csr, W stored as (out, in), computed as
(W @ x.T).T), at several densities and batch sizes, in one process, and prints the ratios:

    PYTHONPATH=src python benchmarks/sparse_linear.py [--threads 1] [--repeats 200]

Ratios > 1.0x mean CSR is faster. Machines are noisy: compare ratios from one run, never
absolute times across runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

SHAPES = {"fc1 784->300": (300, 784), "fc2 300->100": (100, 300), "fc3 100->10": (10, 100)}
DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.019, 0.01)
BATCHES = (1, 64, 256)


def median_seconds(fn, repeats: int) -> float:
    for _ in range(max(3, repeats // 10)):  # warm-up
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s); CSR speed-up over dense "
          "(median of repeats)")
    print(f"{'layer':14s} {'batch':>5s} " + " ".join(f"{d:>7.3f}" for d in DENSITIES))
    for name, (out_f, in_f) in SHAPES.items():
        for batch in BATCHES:
            x = torch.randn(batch, in_f, generator=g)
            cells = []
            for density in DENSITIES:
                w = torch.randn(out_f, in_f, generator=g)
                w = w * (torch.rand(out_f, in_f, generator=g) < density)
                csr = w.to_sparse_csr()
                xt = x.t().contiguous()
                dense_t = median_seconds(lambda w=w, x=x: x @ w.t(), args.repeats)
                sparse_t = median_seconds(lambda c=csr, xt=xt: (c @ xt).t(), args.repeats)
                assert torch.allclose(x @ w.t(), (csr @ xt).t(), atol=1e-4, rtol=1e-4)
                cells.append(f"{dense_t / sparse_t:6.1f}x")
            print(f"{name:14s} {batch:5d} " + " ".join(cells))


if __name__ == "__main__":
    main()
