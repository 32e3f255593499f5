"""Exports and benchmarks of a `find` run's tickets: the engine of `ticketlab export` and
`ticketlab bench` (the CLI only parses and prints)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ticketlab.data.dataset import Dataset
from ticketlab.deploy.export import FORMATS, Exported, check_format, export
from ticketlab.errors import TicketlabError
from ticketlab.experiments.store import RunStore
from ticketlab.experiments.trained import Trained, load_trained, pick_unit

VERIFY_INPUTS = 512  # validation images every export is checked on (the test set is not read)


def load_ticket(run_dir: Path, *, level: int | None = None, seed: int | None = None,
                variant: str | None = None, data_dir: Path | None = None,
                device: str = "auto", data: Dataset | None = None) -> Trained:
    """A finished unit of a run (level None: the seed's last), with its data (`data`: the
    run's dataset already loaded, when several units are read)."""
    store = RunStore.open(Path(run_dir))
    return load_trained(store, pick_unit(store, level, seed, variant), data_dir=data_dir,
                        device=device, data=data)


def spec_of(t: Trained) -> dict[str, Any]:
    return {"model": t.config.model.model, "input_shape": list(t.data.input_shape),
            "num_classes": t.data.num_classes}


def export_ticket(t: Trained, format: str, *, round_to: int = 1) -> tuple[Exported, Tensor]:
    """`t`'s final weights under its mask as `format`, verified on validation images; also
    returns those images (the TorchScript and ONNX files are checked on them too)."""
    check_format(format)
    inputs = t.data.x_val[:VERIFY_INPUTS]
    return export(t.model, t.mask, format, inputs=inputs, round_to=round_to,
                  spec=spec_of(t)), inputs


def bench_candidates(t: Trained, formats: tuple[str, ...] | None, *, round_to: int = 1,
                     note: Callable[[str], None] | None = None
                     ) -> dict[str, Callable[[Tensor], Tensor]]:
    """The dense network (all weights, the same architecture) and `t` in each format, ready
    for `deploy.bench.measure`. formats None: sparse, and compact and onnx where the ticket
    is structured and the deploy extra is installed."""
    models: dict[str, Callable[[Tensor], Tensor]] = {"dense": copy.deepcopy(t.model).eval()}
    chosen = formats or FORMATS
    for fmt in chosen:
        try:
            exported, inputs = export_ticket(t, fmt, round_to=round_to)
        except TicketlabError as e:
            if formats:  # asked for by name: say why not
                raise
            if note:
                note(f"{fmt}: skipped ({e})")
            continue
        if fmt == "onnx":  # the dense network in onnxruntime too: the runtime's own gain
            models["dense onnx"] = onnx_callable(models["dense"], inputs)
            models[fmt] = onnx_callable(exported.module, inputs)
        else:
            models[fmt] = exported.module
    return models


def onnx_callable(module: nn.Module, inputs: Tensor) -> Callable[[Tensor], Tensor]:
    """`module` in an onnxruntime session (as many threads as torch), called like it."""
    import tempfile

    from ticketlab.deploy.onnx import onnx_session, to_onnx

    with tempfile.TemporaryDirectory(prefix="ticketlab-onnx-") as folder:
        to_onnx(module, inputs, Path(folder) / "model.onnx")
        return onnx_session(Path(folder) / "model.onnx")  # the session holds the model


def load_artifact(path: Path) -> tuple[nn.Module, nn.Module, tuple[int, ...]]:
    """(dense model of the architecture, the export, the input shape) for an export file
    made by ticketlab; the file is read once."""
    from ticketlab.deploy.artifact import read_meta, rebuild
    from ticketlab.models import build_model

    tensors, meta = read_meta(path)
    spec = meta.get("spec")
    if not spec:
        raise TicketlabError(f"{path} does not say its architecture: bench its run instead "
                             "(ticketlab bench RUN_DIR)")
    shape = tuple(spec["input_shape"])

    def fresh() -> nn.Module:
        return build_model(spec["model"], shape, spec["num_classes"])

    return fresh().eval(), rebuild(tensors, meta, fresh(), path), shape
