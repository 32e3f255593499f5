"""Files on disk: every write is atomic (a temporary file renamed into place)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ticketlab.errors import TicketlabError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a partial one, even after SIGKILL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def finite_json(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, ±inf) replaced by None: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON (no NaN or Infinity, which strict parsers reject): non-finite -> null."""
    text = json.dumps(finite_json(obj), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TicketlabError(f"{path} not found: check the run directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TicketlabError(f"{path} is corrupt ({e}): delete it to recompute") from None


def save_state(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A state dict as safetensors: loads into a plain model with `load_state_dict`."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write_bytes(Path(path), save(tensors))


def load_state(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise TicketlabError(f"weights file {path} not found: check the path")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise TicketlabError(
            f"weights file {path} is corrupt ({e}): delete it to recompute"
        ) from None
