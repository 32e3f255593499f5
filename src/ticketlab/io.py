"""Files on disk: every write is atomic (a temporary file renamed into place).

Tensor files carry a checksum of their payload and what they hold (`kind`: weights or mask) in
their safetensors metadata, verified on every read, so flipped bits, edited values or a file
of the wrong kind are reported instead of silently trained on. Files without a checksum (made
by ticketlab before 0.2) are still read. A failed write (disk full, read-only place) is a
`TicketlabError` naming the file and the fix; the file it would have replaced is untouched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from ticketlab.errors import DamagedFile, TicketlabError

_UMASK = os.umask(0)
os.umask(_UMASK)


READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class WriteError(TicketlabError):
    """A write the file system refused; `errno` says why (e.g. `READ_ONLY`, ENOSPC)."""

    def __init__(self, message: str, errno_: int | None):
        super().__init__(message)
        self.errno = errno_


def write_error(path: Path, e: OSError) -> WriteError:
    """The one-line error for a write that the file system refused, with its fix."""
    reason = e.strerror or type(e).__name__
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        fix = ("free some space (or choose another place with --out) and run the same command "
               "again: what is already written is kept")
    elif e.errno in READ_ONLY:
        fix = "choose a writable directory with --out"
    elif e.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file stands where a directory should be: choose another --out"
    else:
        fix = "check that place (or choose another with --out) and run the same command again"
    return WriteError(f"cannot write {path} ({reason}): {fix}", e.errno)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a partial one, even after SIGKILL."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from other users
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
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
        raise DamagedFile(path, f"not JSON: {e}") from None


# ---------------------------------------------------------------------------- tensor files

def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of names, dtypes, shapes and raw bytes: what a tensor file must give back."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], kind: str,
                 metadata: dict[str, str] | None = None) -> str:
    """Writes a safetensors file tagged with its kind and checksum; returns the checksum."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    digest = tensor_digest(tensors)
    meta = {**(metadata or {}), "kind": kind, "sha256": digest}
    atomic_write_bytes(Path(path), save(tensors, metadata=meta))
    return digest


def load_tensors(path: Path, kind: str, device: torch.device | str = "cpu"
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Reads a tensor file, checking its checksum and kind; returns tensors and metadata.

    Raises `DamagedFile` when the bytes do not parse, do not match the checksum written with
    them, or hold another kind of tensors (a mask where weights belong, or the reverse).
    """
    path = Path(path)
    try:
        tensors = load_file(str(path), device="cpu")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DamagedFile(path, f"unreadable: {e}") from None
    is_mask = meta.get("kind", "mask" if meta.get("format") == "ticketlab.mask" else None)
    if is_mask is None:  # an old file: tell by what it holds
        bools = [t.dtype == torch.bool for t in tensors.values()]
        is_mask = "mask" if bools and all(bools) else "weights"
    if is_mask != kind:
        raise DamagedFile(path, f"it holds a {is_mask}, not {kind}")
    digest = meta.get("sha256")
    if digest is not None and tensor_digest(tensors) != digest:
        raise DamagedFile(path, "its tensors do not match the checksum written with them")
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


def file_digest(path: Path) -> str | None:
    """The checksum in a tensor file's metadata (header only; None for old files)."""
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("sha256")
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return None


def save_state(path: Path, state: dict[str, torch.Tensor]) -> str:
    """A state dict as safetensors: loads into a plain model with `load_state_dict`."""
    return save_tensors(path, state, "weights")


def load_state(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise TicketlabError(f"weights file {path} not found: check the path")
    return load_tensors(path, "weights", device)[0]
