"""Exports on disk: a safetensors file (checksummed, written atomically) whose metadata says
how to rebuild the model, a TorchScript twin that loads with torch alone, or an ONNX file.

A sparse export stores each masked tensor as its kept values and their positions only, so
its size follows the density; a compact export stores the smaller layers' dense tensors.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketlab.deploy.export import Exported, state_bytes, torchscript
from ticketlab.errors import DamagedFile, TicketlabError
from ticketlab.io import atomic_write_bytes, load_tensors, save_tensors

KIND = "export"


def save_export(exported: Exported, path: Path, inputs: torch.Tensor, *,
                script: bool = True) -> dict[str, Any]:
    """Writes `exported` to `path` (.safetensors, or .onnx for the onnx format) and, with
    `script`, its TorchScript twin beside it (same name, .pt); returns what was written and
    the sizes, the dense checkpoint's among them."""
    path = Path(path)
    if path.is_dir():
        name = "ticket.onnx" if exported.format == "onnx" else "ticket.safetensors"
        raise TicketlabError(f"--out {path} is a directory: give a file name, e.g. "
                             f"{path / name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    dense = state_bytes(exported.reference.state_dict())
    written: dict[str, Any] = {"format": exported.format, "dense_bytes": dense,
                               "max_abs_diff": exported.max_abs_diff, "files": {}}
    if exported.format == "onnx":
        from ticketlab.deploy.onnx import to_onnx

        info = to_onnx(exported.module, inputs, path)
        written["files"][str(path)] = path.stat().st_size
        written["onnx"] = info
        return written
    if exported.format == "sparse":
        from ticketlab.deploy.sparse import sparse_state

        tensors, shapes = sparse_state(exported.reference, exported.mask)
    else:
        tensors, shapes = exported.module.state_dict(), {}
    meta = {"format": exported.format, "spec": exported.spec, "shapes": shapes,
            "groups": exported.mask.groups, "layers": exported.layers,
            "max_abs_diff": exported.max_abs_diff, **exported.extra}
    save_tensors(path, dict(tensors), KIND, {"ticketlab.export": json.dumps(meta)})
    written["files"][str(path)] = path.stat().st_size
    if script:
        twin = path.with_suffix(".pt")
        traced = torchscript(exported, inputs)
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # "deprecated, use torch.export": which cannot hold
            warnings.simplefilter("ignore", DeprecationWarning)  # CSR tensors (torch 2.13)
            torch.jit.save(traced, buffer)
        atomic_write_bytes(twin, buffer.getvalue())
        written["files"][str(twin)] = twin.stat().st_size
    return written


def read_meta(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise TicketlabError(f"export {path} not found: check the path")
    try:
        tensors, raw = load_tensors(path, KIND)
        meta = json.loads(raw["ticketlab.export"])
    except DamagedFile as e:
        raise TicketlabError(f"{e}: export the ticket again") from None
    except (KeyError, ValueError):
        raise TicketlabError(f"{path} is not a ticketlab export (no export metadata): "
                             "export the ticket with ticketlab export") from None
    return tensors, meta


def load_export(path: Path, model: nn.Module | None = None) -> nn.Module:
    """A saved sparse or compact export as a module (eval mode), rebuilt on `model` (a fresh
    model of the original architecture) or, for a ticketlab model, on its recorded spec."""
    tensors, meta = read_meta(path)
    if model is None:
        spec = meta.get("spec")
        if not spec:
            raise TicketlabError(f"{path} was exported from a model ticketlab cannot rebuild: "
                                 "pass a fresh instance of its architecture (model=...), or "
                                 "load its TorchScript twin with torch.jit.load")
        from ticketlab.models import build_model

        model = build_model(spec["model"], tuple(spec["input_shape"]), spec["num_classes"])
    return rebuild(tensors, meta, model, path)


def rebuild(tensors: dict[str, torch.Tensor], meta: dict[str, Any], model: nn.Module,
            path: Path) -> nn.Module:
    """`read_meta`'s tensors and metadata as the export, on `model` (original architecture)."""
    try:
        if meta["format"] == "sparse":
            from ticketlab.deploy.sparse import dense_state, sparsify_model

            state, mask = dense_state(tensors, meta["shapes"], meta["groups"])
            model.load_state_dict(state)
            return sparsify_model(model, mask)[0].eval()
        from ticketlab.deploy.compact import resize_like

        return resize_like(model, tensors).eval()
    except RuntimeError as e:
        raise TicketlabError(f"{path} does not fit this architecture ({str(e).splitlines()[0]})"
                             ": pass the model it was exported from") from None
