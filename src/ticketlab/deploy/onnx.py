"""The `onnx` export: a (compact) model as an ONNX file with a free batch size, checked with
onnxruntime against torch before anyone relies on it.

The TorchScript-based exporter is used: it needs only `onnx`, whereas torch's default
torch.export-based exporter also needs `onnxscript`. The file is checked at the example's
batch size and at another one, since a batch dimension frozen into a reshape shows only there.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ticketlab.errors import TicketlabError
from ticketlab.io import atomic_write_bytes

OPSET = 17
_NEEDS = "ONNX export needs onnx and onnxruntime: pip install 'ticketlab[deploy]'"


def _runtime() -> Any:
    try:
        import onnx  # noqa: F401  (torch's exporter imports it)
        import onnxruntime
    except ImportError:
        raise TicketlabError(_NEEDS) from None
    return onnxruntime


class OnnxSession:
    """An onnxruntime session on the CPU, called like the torch model: Tensor -> Tensor."""

    def __init__(self, model: Path | bytes):
        ort = _runtime()
        options = ort.SessionOptions()
        options.log_severity_level = 4  # fatal only: failures come back as TicketlabError
        # as many threads as torch uses, so a benchmark compares like with like
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                model if isinstance(model, bytes) else str(model), options,
                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            where = "the export" if isinstance(model, bytes) else model
            raise TicketlabError(f"onnxruntime cannot load {where} ({str(e).splitlines()[0]}): "
                                 "export the model again") from None
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: Tensor) -> Tensor:
        array = x.detach().cpu().contiguous().numpy()
        try:
            (out,) = self.session.run(None, {self.input: array})
        except Exception as e:  # onnxruntime's own exception types
            reason = str(e).strip().splitlines()[0][:200]
            raise TicketlabError(f"onnxruntime cannot run the export on an input of shape "
                                 f"{tuple(x.shape)} ({reason}): if the batch size differs from "
                                 "the export's, the model's forward may fix it (use "
                                 "x.flatten(1), not a fixed size)") from None
        return torch.from_numpy(np.asarray(out))


def onnx_session(path: str | Path) -> OnnxSession:
    path = Path(path)
    if not path.is_file():
        raise TicketlabError(f"ONNX file {path} not found: check the path")
    return OnnxSession(path)


def to_onnx(model: nn.Module, example: Tensor, path: str | Path, *,
            tolerance: float = 1e-4) -> dict:
    """Writes `model` (traced in eval mode, its mode put back) to `path` as ONNX with a
    dynamic batch dimension, after running the exported bytes on `example` and on a batch of
    another size against torch.

    Raises TicketlabError when the largest absolute difference exceeds `tolerance`; nothing
    is written then. The write is atomic. Returns {path, max_abs_diff, opset}.
    """
    _runtime()
    path = Path(path)
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
            torch.onnx.export(model, (example.detach().to(device),), buffer, dynamo=False,
                              opset_version=OPSET, input_names=["input"],
                              output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        data = buffer.getvalue()
        diff = _max_diff(model, OnnxSession(data), example.detach())
    finally:
        model.train(was_training)
    if not diff <= tolerance:
        raise TicketlabError(f"the ONNX export differs from the torch model by {diff:.3g}, over "
                             f"the tolerance {tolerance:g}: export it as compact or sparse "
                             "instead")
    atomic_write_bytes(path, data)
    return {"path": str(path), "max_abs_diff": diff, "opset": OPSET}


def _max_diff(model: nn.Module, session: OnnxSession, example: Tensor) -> float:
    """Largest |onnx - torch| on the example and on it with one more sample."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    other = torch.cat([example, example[:1]]) if len(example) else example
    diff = 0.0
    with torch.no_grad():
        for x in (example, other):
            ref, out = model(x.to(device)).cpu(), session(x.cpu())
            if out.shape != ref.shape:
                raise TicketlabError(f"the ONNX export outputs shape {tuple(out.shape)} for "
                                     f"{tuple(ref.shape)}: the batch size may be frozen in the "
                                     "model's forward (use x.flatten(1), not a fixed view)")
            diff = max(diff, float((out.float() - ref.float()).abs().max()))
    return diff
