"""Layers over replicate weights stacked along a first dimension, without `vmap`.

`training.Stack` trains replicates together through `torch.func.vmap`, which works for any
model. A model may also define `forward_stacked(params, x)` (x: replicates x batch x ...)
built from these functions; on a CPU it avoids vmap's per-operation overhead and the
transposed copy of every weight gradient that vmap's linear backward makes.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _StackedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        w_t = weight.transpose(1, 2)
        return torch.baddbmm(bias.unsqueeze(1), x, w_t) if bias is not None else x.bmm(w_t)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad_x = grad.bmm(weight) if ctx.needs_input_grad[0] else None
        grad_w = grad.transpose(1, 2).bmm(x)  # already in the weight's layout
        grad_b = grad.sum(1) if ctx.has_bias else None
        return grad_x, grad_w, grad_b


def stacked_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """F.linear per replicate: x (R, B, in), weight (R, out, in), bias (R, out)."""
    return _StackedLinear.apply(x, weight, bias)
