"""Sparse kernels: masked linear layers trained on their kept weights only.

A dense masked layer costs what the dense layer costs, whatever its density: the matrix
products multiply the zeros too. Below a density threshold (`TrainingHparams.sparse_below`,
a fixed rule, never a timing, so a run computes the same way on every machine), a masked
`nn.Linear` trains instead on a vector of its kept weights (CSR order):

- forward, y = x Wᵀ + b: a sparse-dense product with the kept weights only;
- input gradient, dy W: the same with the transposed pattern (skipped for the first layer,
  whose input needs no gradient);
- weight gradient: dyᵀ x sampled at the kept positions only (`torch.sparse.sampled_addmm`),
  never the dense product;
- the optimizer steps the kept values only. Adam's and SGD's updates are elementwise and a
  pruned weight's gradient is zero, so this is the dense masked update minus its zeros.

The numbers differ from the dense kernels' by float rounding (sums taken in another order);
over a long training that rounding compounds, so the setting is part of the run hash and
each unit records which of its layers used sparse kernels.

The model keeps its plain `nn.Linear` modules: training replaces their `forward` on the
instance and `sync()` writes the values back into `weight`, so state dicts, snapshots and
checkpoints are the dense model's and load into plain models.
"""

from __future__ import annotations

import types
import warnings

import torch
from torch import Tensor, nn

from ticketlab.pruning.mask import Mask

# torch warns once per process that sparse CSR tensors are in beta; the kernels used here are
# tested against the dense ones (tests/training/test_sparse_kernels.py).
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta",
                        category=UserWarning)


# Batches above this many rows are multiplied in blocks: a whole validation set's xᵀ (784 x
# 5,000 floats) leaves the cache between the sparse rows that read it, and runs about 3x
# slower than blocks of 512 at 10% density (benchmarks/sparse_kernels.py); each output is
# the same sum either way.
CHUNK = 512


class _SparseLinearFn(torch.autograd.Function):
    """y = x Wᵀ + b with W given by its kept values in a fixed CSR pattern.

    MKL's sparse products want the dense operand row-major, so the input is transposed once
    (xᵀ, features x batch) and kept for the weight gradient; outputs are made row-major
    again, since elementwise kernels (ReLU's backward) are slow on transposed layouts."""

    @staticmethod
    def forward(ctx, x: Tensor, values: Tensor, bias: Tensor | None, layer: SparseLinear
                ) -> Tensor:  # type: ignore[override]
        flat = x.reshape(-1, x.shape[-1])
        ctx.layer, ctx.shape = layer, x.shape
        w = layer.csr(values)
        ctx.chunked = len(flat) > CHUNK
        if ctx.chunked:  # an evaluation: blocks of xᵀ that stay in cache
            ctx.save_for_backward(flat, values)
            y = torch.cat([torch.sparse.mm(w, flat[i:i + CHUNK].t().contiguous()).t()
                           for i in range(0, len(flat), CHUNK)])
        else:
            xt = flat.t().contiguous()
            ctx.save_for_backward(xt, values)
            y = torch.sparse.mm(w, xt).t().contiguous()
        if bias is not None:
            y += bias
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, dy: Tensor):  # type: ignore[override]
        saved, values = ctx.saved_tensors
        xt = saved.t().contiguous() if ctx.chunked else saved
        layer: SparseLinear = ctx.layer
        dyt = dy.reshape(-1, dy.shape[-1]).t().contiguous()
        dx = dvalues = dbias = None
        if ctx.needs_input_grad[0]:
            dx = torch.sparse.mm(layer.csr_t(values), dyt).t().contiguous().reshape(ctx.shape)
        if ctx.needs_input_grad[1]:
            dvalues = torch.sparse.sampled_addmm(layer.pattern, dyt, xt.t(), beta=0.0).values()
        if ctx.needs_input_grad[2]:
            dbias = dyt.sum(1)
        return dx, dvalues, dbias, None


class SparseLinear:
    """One masked `nn.Linear` trained through its kept values (`values`, a Parameter)."""

    def __init__(self, linear: nn.Linear, keep: Tensor):
        self.linear = linear
        w = linear.weight
        keep = keep.to(device=w.device, dtype=torch.bool)
        self.keep = keep
        pattern = keep.to(w.dtype).to_sparse_csr()
        self.pattern = pattern  # values of ones; sampled_addmm fills the same positions
        self.crow, self.col = pattern.crow_indices(), pattern.col_indices()
        self.shape = tuple(w.shape)
        # The transposed pattern's entries, as positions in `values` (row-major order).
        order = torch.arange(int(keep.sum()), device=w.device)
        index = torch.zeros(self.shape, dtype=torch.long, device=w.device)
        index[keep] = order
        t = keep.t().contiguous().to(w.dtype).to_sparse_csr()
        self.crow_t, self.col_t = t.crow_indices(), t.col_indices()
        self.perm_t = index.t()[keep.t()]
        self.values = nn.Parameter(w.detach()[keep].clone(), requires_grad=w.requires_grad)

    def csr(self, values: Tensor) -> Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape,
                                       check_invariants=False)

    def csr_t(self, values: Tensor) -> Tensor:
        return torch.sparse_csr_tensor(self.crow_t, self.col_t, values[self.perm_t],
                                       self.shape[::-1], check_invariants=False)

    def forward(self, x: Tensor) -> Tensor:
        return _SparseLinearFn.apply(x, self.values, self.linear.bias, self)

    def attach(self) -> None:
        """Routes the module's calls through the kept values."""
        self.linear.forward = types.MethodType(lambda _, x: self.forward(x), self.linear)

    def detach(self) -> None:
        self.sync()
        self.linear.__dict__.pop("forward", None)

    @torch.no_grad()
    def sync(self) -> None:
        """Writes the kept values into the dense weight (its pruned entries stay zero)."""
        w = self.linear.weight
        w.zero_()
        w[self.keep] = self.values.detach()

    @torch.no_grad()
    def reload(self) -> None:
        """Takes the kept values from the dense weight (after a checkpoint is loaded)."""
        self.values.copy_(self.linear.weight.detach()[self.keep])


# Smaller layers keep dense kernels: a sparse product's fixed cost (building the CSR views,
# the transposes) eats what it saves until a lower density than the larger layers need. At
# batch 60 on one core (benchmarks/sparse_kernels.py), a 300x100 layer (30,000 weights) is
# 1.0x at 10% density and 1.3x at 5% (0.04 ms a step), 256x256 (65,536) 1.4x at 10%,
# 784x300 1.5x at 10% and 2.7x at 5% (docs/full_reproduction.md).
MIN_WEIGHTS = 65_536


def qualifies(module: nn.Module, weights: int, density: float, below: float | None) -> bool:
    """The rule: an `nn.Linear` of at least `MIN_WEIGHTS` weights whose mask keeps at most
    `below` of them trains with sparse kernels. It depends on the mask alone (never on a
    timing), so a level computes the same way on every machine."""
    return (below is not None and below > 0 and type(module) is nn.Linear
            and weights >= MIN_WEIGHTS and density <= below)


def sparse_layer_names(model: nn.Module, mask: Mask | None, below: float | None) -> list[str]:
    """The weights (names) of `model`'s layers that `qualifies` for sparse kernels."""
    if mask is None:
        return []
    modules = {f"{n}.weight" if n else "weight": m for n, m in model.named_modules()}
    return [k for k, keep in mask.items() if k in modules
            and qualifies(modules[k], keep.numel(), int(keep.sum()) / keep.numel(), below)]


def sparse_layers(model: nn.Module, mask: Mask | None, below: float | None
                  ) -> dict[str, SparseLinear]:
    """`sparse_layer_names`, each ready to train (not yet attached)."""
    modules = dict(model.named_modules())
    return {key: SparseLinear(modules[key.removesuffix("weight").removesuffix(".")], mask[key])
            for key in sparse_layer_names(model, mask, below)} if mask is not None else {}
