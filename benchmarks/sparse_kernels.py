"""One masked linear layer with dense and with sparse kernels (`training.sparse`), the
measurements the rule `--sparse-below` / `MIN_WEIGHTS` was chosen from.

For layers of several sizes and densities, on one thread: a training step's share of one
layer (forward, backward with the weight gradient and, as for every layer but the first,
the input gradient) at batch 60, and an evaluation's forward at batch 5,000 (whole, and in
the blocks of `CHUNK` rows the kernels use). Each figure is the best of 5 rounds, dense and
sparse interleaved, so a busy neighbour slows both; the ratio is dense / sparse (`N.Nx`:
above 1, sparse is faster).

Run:
    python benchmarks/sparse_kernels.py            # ~1 min
    python benchmarks/sparse_kernels.py --quick
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from ticketlab.training.sparse import CHUNK, SparseLinear


def best(f: Callable[[], object], n: int, rounds: int = 5) -> float:
    f()
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(n):
            f()
        times.append((time.perf_counter() - began) / n)
    return min(times)


def train_step(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    y = forward(x)
    y.backward(torch.ones_like(y))


def unblocked(sparse: SparseLinear, x: torch.Tensor) -> torch.Tensor:
    """The sparse product over the whole batch at once (what the blocks replace)."""
    return torch.sparse.mm(sparse.csr(sparse.values), x.t().contiguous()).t().contiguous()


def layer(out_f: int, in_f: int, density: float) -> tuple[nn.Linear, SparseLinear]:
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(in_f, out_f)
    keep = torch.rand(out_f, in_f, generator=g) < density
    with torch.no_grad():
        lin.weight.mul_(keep)
    return lin, SparseLinear(lin, keep)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = 30 if args.quick else 300
    densities = (0.2, 0.012) if args.quick else (0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.012)
    print(f"torch {torch.__version__}, 1 thread; ms, dense / sparse (ratio)")
    print("\ntraining, batch 60: forward + backward (weight and input gradients)")
    for out_f, in_f in ((100, 300), (256, 256), (256, 512), (300, 784)):
        x = torch.rand(60, in_f, requires_grad=True)
        cells = []
        for d in densities:
            lin, sparse = layer(out_f, in_f, d)
            a = min(best(partial(train_step, lin, x), n) for _ in range(2))
            b = min(best(partial(train_step, sparse.forward, x), n) for _ in range(2))
            cells.append(f"{100 * d:g}%: {1e3 * a:.3f}/{1e3 * b:.3f} ({a / b:.1f}x)")
        print(f"  {in_f}->{out_f} ({in_f * out_f:,} weights): " + "; ".join(cells))

    print(f"\nevaluation, batch 5,000, 784->300: forward, whole and in blocks of {CHUNK}")
    x = torch.rand(5000, 784)
    with torch.inference_mode():
        for d in densities:
            lin, sparse = layer(300, 784, d)
            m = n // 30 + 1
            dense = best(partial(lin, x), m)
            whole = best(partial(unblocked, sparse, x), m)
            blocks = best(partial(sparse.forward, x), m)
            print(f"  {100 * d:g}%: dense {1e3 * dense:.1f}, sparse whole {1e3 * whole:.1f} "
                  f"({dense / whole:.1f}x), in blocks {1e3 * blocks:.1f} ({dense / blocks:.1f}x)")


if __name__ == "__main__":
    main()
