"""`export`: a ticket (a model and its mask) as a model that is smaller and faster, verified.

Formats: `sparse` (any mask: Linear layers multiply only their kept weights, see
`deploy.sparse`), `compact` (whole filters or neurons removed become smaller dense layers, see
`deploy.compact`) and `onnx` (the compact model, for onnxruntime). Every export is checked
against the masked model on real inputs before anything is written (`deploy.verify`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ticketlab.errors import TicketlabError
from ticketlab.pruning.mask import Mask

FORMATS = ("sparse", "compact", "onnx")


@dataclass
class Exported:
    """An export in memory: `module` computes like `reference` (the masked model) to within
    `max_abs_diff` on the verification inputs; `layers` says what each masked layer became."""

    format: str
    module: nn.Module
    reference: nn.Module
    mask: Mask
    layers: list[dict[str, Any]]
    max_abs_diff: float
    example: Tensor
    spec: dict[str, Any] | None = None  # how ticketlab rebuilds the architecture, if it can
    extra: dict[str, Any] = field(default_factory=dict)


def check_format(name: str) -> None:
    if name not in FORMATS:
        raise TicketlabError(f"unknown export format '{name}': choose one of "
                             f"{', '.join(FORMATS)}")


def export(model: nn.Module, mask: Mask, format: str = "sparse", *, inputs: Tensor,
           round_to: int = 1, spec: Mapping[str, Any] | None = None) -> Exported:
    """`model` (trained weights; the mask need not be applied) under `mask` as `format`,
    verified on `inputs` (a batch of real inputs; a few hundred are plenty).

    `round_to` (compact, onnx): channel counts rounded up to a multiple the hardware likes.
    `spec`: {"model", "input_shape", "num_classes"} so that `load_export` can rebuild the
    architecture without being given it."""
    from ticketlab.deploy.verify import verify

    check_format(format)
    if round_to < 1:
        raise TicketlabError(f"--round-to must be a whole number >= 1, got {round_to}")
    mask.check_fits(model)
    reference = mask.apply_(copy.deepcopy(model)).eval()
    inputs = inputs.to(next(reference.parameters()).device)
    if format == "sparse":
        from ticketlab.deploy.sparse import sparsify_model
        module, layers = sparsify_model(reference, mask)
    else:
        from ticketlab.deploy.compact import compact
        module, layers = compact(reference, mask, inputs[:2], round_to=round_to)
    module.eval()
    diff = verify(reference, module, inputs, format)
    return Exported(format, module, reference, mask, layers, diff, inputs[:2].clone(),
                    dict(spec) if spec else None, {"round_to": round_to,
                                                   "verified_on": len(inputs)})


def torchscript(exported: Exported, inputs: Tensor) -> torch.jit.ScriptModule:
    """The export traced to TorchScript (loads with `torch.jit.load`, torch alone), verified
    on `inputs` like the export itself."""
    from ticketlab.deploy.verify import verify

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes turned into constants
        try:
            traced = torch.jit.trace(exported.module, exported.example, check_trace=False)
        except Exception as e:
            raise TicketlabError(f"this model cannot be traced to TorchScript ({e}); the "
                                 "safetensors export is unaffected") from None
    verify(exported.reference, traced, inputs, f"{exported.format} TorchScript")
    return traced


def state_bytes(state: Mapping[str, Tensor]) -> int:
    """Size of `state` as a safetensors file (the dense checkpoint's size, to compare)."""
    from safetensors.torch import save

    return len(save({k: v.detach().cpu().contiguous() for k, v in state.items()}))
