"""The `sparse` export: Linear layers that multiply only their kept weights.

PyTorch multiplies a masked layer's zeros like any other weight. Here each Linear layer that
the rule below picks holds its kept weights in CSR (int32 indices, the ones MKL's sparse
kernels take without a conversion), multiplies only those, and reads only the inputs some
kept weight uses. The CSR product wants the batch in its columns, so a sparse layer takes its
input feature-major (one copy, numpy's transpose: twice as fast as torch's on a CPU) and hands
its output back as a transposed view; the ReLU after it keeps that layout, so the next sparse
layer needs no copy at all.

The rule is fixed, not timed on the machine that exports, so an export is the same
everywhere (measured by benchmarks/sparse_linear.py, table in docs/deploy.md): a Linear
weight goes to CSR when at most `MAX_DENSITY` of it is kept and it has at least
`MIN_WEIGHTS` weights. Denser or smaller layers, and every other layer (convolutions
included), stay dense with their pruned weights at zero: a dense product is faster there.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ticketlab.errors import TicketlabError
from ticketlab.pruning.mask import Mask

MAX_DENSITY = 0.1
MIN_WEIGHTS = 4096
GATHER_BELOW = 0.5  # read only the used inputs when at most this fraction is used


def goes_sparse(mask: Tensor, module: nn.Module) -> bool:
    """The rule: a Linear weight with at most MAX_DENSITY kept and MIN_WEIGHTS weights."""
    return (isinstance(module, nn.Linear) and mask.numel() >= MIN_WEIGHTS
            and int(mask.sum()) <= MAX_DENSITY * mask.numel())


def _feature_major(x: Tensor) -> Tensor:
    """A batch-major x (batch, features) as a contiguous (features, batch) tensor."""
    if (x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad
            and not torch.jit.is_scripting() and not torch.jit.is_tracing()):
        # numpy's transposing copy is twice as fast as torch's on a CPU
        return torch.from_numpy(x.numpy().T.copy())
    return x.t().contiguous()


class SparseLinear(nn.Module):
    """`nn.Linear` with only its kept weights, in CSR; inputs that no kept weight reads are
    skipped. Outputs equal `x @ (weight * mask).T + bias` up to float summation order."""

    def __init__(self, weight: Tensor, mask: Tensor, bias: Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        keep = mask.to(torch.bool)
        used = keep.any(0).nonzero().flatten()
        # skipping unread inputs costs a gather; it pays when many are unread (an MNIST
        # ticket's first layer drops the border pixels, ~10%: not enough)
        self.gather = len(used) <= GATHER_BELOW * self.in_features
        if not self.gather:
            used = torch.arange(self.in_features, device=weight.device)
        # CSR from the mask's positions, not the values: a kept weight that is 0 stays stored
        col = keep.nonzero()[:, 1]
        if self.gather:  # column k of the CSR is input used[k]
            col = torch.searchsorted(used, col)
        crow = torch.cat([keep.new_zeros(1, dtype=torch.int64), keep.sum(1).cumsum(0)])
        values = weight.detach()[keep].clone()
        crow, col = crow.to(torch.int32), col.to(torch.int32)
        with warnings.catch_warnings():  # "CSR support is in beta", "invariant checks off"
            warnings.simplefilter("ignore", UserWarning)
            csr = torch.sparse_csr_tensor(crow, col, values, (self.out_features, len(used)),
                                          dtype=weight.dtype, device=weight.device,
                                          check_invariants=False)
        self.register_buffer("weight", csr)
        self.register_buffer("inputs", used)
        b = bias.detach() if bias is not None else torch.zeros(self.out_features,
                                                                 dtype=weight.dtype)
        self.register_buffer("bias", b.reshape(-1, 1).clone().to(weight.device))

    @property
    def density(self) -> float:
        return self.weight.values().numel() / (self.out_features * self.in_features)

    def dense_weight(self) -> Tensor:
        """The masked dense weight this layer computes with."""
        w = torch.zeros(self.out_features, self.in_features, dtype=self.bias.dtype,
                        device=self.bias.device)
        w[:, self.inputs] = self.weight.to_dense()
        return w

    def kept(self) -> Tensor:
        """The layer's mask: which weights it keeps (bool, out x in)."""
        keep = torch.zeros(self.out_features, self.in_features, dtype=torch.bool,
                           device=self.bias.device)
        rows = torch.repeat_interleave(torch.arange(self.out_features, device=keep.device),
                                       self.weight.crow_indices().diff().long())
        keep[rows, self.inputs[self.weight.col_indices().long()]] = True
        return keep

    def __deepcopy__(self, memo: dict) -> SparseLinear:
        # torch cannot deep-copy a CSR tensor ("Cannot access storage"): rebuild the layer
        copied = SparseLinear(self.dense_weight(), self.kept(), self.bias[:, 0].clone())
        copied.train(self.training)
        memo[id(self)] = copied
        return copied

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            return self.forward(x.reshape(-1, self.in_features)).reshape(
                *x.shape[:-1], self.out_features)
        if x.shape[0] == 1:  # one sample: a matrix-vector product, no layout to change
            v = x[0].index_select(0, self.inputs) if self.gather else x[0]
            return torch.addmv(self.bias.view(-1), self.weight, v).unsqueeze(0)
        xt = x.t()
        if not xt.is_contiguous():  # batch-major (the first sparse layer): one copy
            xt = _feature_major(x)
        if self.gather:
            xt = xt.index_select(0, self.inputs)
        return torch.addmm(self.bias, self.weight, xt).t()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"kept={self.weight.values().numel()} ({self.density:.2%}), "
                f"inputs read={len(self.inputs)}")


def sparsify_model(model: nn.Module, mask: Mask) -> tuple[nn.Module, list[dict]]:
    """A copy of `model` with the mask applied and each Linear layer the rule picks replaced
    by a `SparseLinear`; one record per masked tensor saying what it became."""
    mask.check_fits(model)
    model = mask.apply_(copy.deepcopy(model)).eval()
    modules = dict(model.named_modules())
    records = []
    for name, m in mask.items():
        owner, _, attr = name.rpartition(".")
        module = modules.get(owner)
        sparse = attr == "weight" and module is not None and goes_sparse(m, module)
        records.append({"layer": name, "weights": m.numel(), "kept": int(m.sum()),
                        "density": int(m.sum()) / m.numel(),
                        "format": "csr" if sparse else "dense"})
        if sparse:
            assert isinstance(module, nn.Linear)
            _replace(model, owner, SparseLinear(module.weight, m.to(module.weight.device),
                                                module.bias))
    return model, records


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def sparse_state(model: nn.Module, mask: Mask) -> tuple[dict[str, Tensor], dict[str, str]]:
    """What a sparse export stores: each masked tensor as its kept values and their flat
    positions (the smallest integer type that holds them), everything else as it is.

    Returns (tensors, shapes): `name.values` and `name.index` for masked tensors, whose
    shapes are kept in `shapes` (JSON-able strings for safetensors' metadata)."""
    state = model.state_dict()
    tensors: dict[str, Tensor] = {}
    shapes: dict[str, str] = {}
    for name, value in state.items():
        if name in mask:
            keep = mask[name].to(value.device).reshape(-1).to(torch.bool)
            index = keep.nonzero().flatten()
            tensors[f"{name}.values"] = value.reshape(-1)[index].contiguous()
            tensors[f"{name}.index"] = index.to(_index_dtype(value.numel()))
            shapes[name] = ",".join(map(str, value.shape))
        else:
            tensors[name] = value.contiguous()
    return tensors, shapes


def _index_dtype(n: int) -> torch.dtype:
    return torch.int16 if n <= 2**15 else torch.int32 if n <= 2**31 else torch.int64


def dense_state(tensors: Mapping[str, Tensor], shapes: Mapping[str, str],
                groups: Mapping[str, str]) -> tuple[dict[str, Tensor], Mask]:
    """`sparse_state` undone: the masked state dict and its mask."""
    state = {k: v for k, v in tensors.items() if not k.endswith((".values", ".index"))}
    masks = {}
    for name, shape_text in shapes.items():
        shape = tuple(int(s) for s in shape_text.split(",") if s)
        try:
            values, index = tensors[f"{name}.values"], tensors[f"{name}.index"].long()
        except KeyError as e:
            raise TicketlabError(f"sparse export lacks {e.args[0]}: the file is damaged; "
                                 "export the ticket again") from None
        n = int(torch.tensor(shape).prod()) if shape else 1
        if len(values) != len(index) or (len(index) and int(index.max()) >= n):
            raise TicketlabError(f"sparse export's {name} does not fit its shape {shape}: the "
                                 "file is damaged; export the ticket again")
        flat = torch.zeros(n, dtype=values.dtype)
        flat[index] = values
        keep = torch.zeros(n, dtype=torch.bool)
        keep[index] = True
        state[name] = flat.reshape(shape)
        masks[name] = keep.reshape(shape)
    return state, Mask(masks, {k: groups.get(k, "") for k in masks})
