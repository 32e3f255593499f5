"""Gzipped IDX files (the MNIST format) and md5 checks of the files we read.

Every problem is a TicketlabError naming the file, so a damaged download never reaches
training as garbage or as a numpy/gzip traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

from ticketlab.errors import TicketlabError

# IDX type code -> big-endian numpy dtype (MNIST-style datasets use only 0x08, uint8).
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FIX = "replace it with the original file, or delete it and re-run with --download"
_MISSING = "not found: check the path or re-run with --download"
_UNREADABLE = "check it is a readable file"

# (resolved path, size, mtime_ns) -> md5: each file is hashed once per process.
_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in a gzipped IDX file, in native byte order (writable)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise TicketlabError(f"{path} {_MISSING}") from None
    except gzip.BadGzipFile:
        raise TicketlabError(
            f"{path} is not gzip-compressed: expected the original .gz IDX file; {_FIX}"
        ) from None
    except EOFError:
        raise TicketlabError(f"{path} is truncated (the gzip stream ends early); {_FIX}") from None
    except zlib.error as e:
        raise TicketlabError(f"{path} is corrupt ({e}); {_FIX}") from None
    except OSError as e:
        raise TicketlabError(f"cannot read {path}: {e.strerror or e}; {_UNREADABLE}") from None

    def bad(what: str) -> TicketlabError:
        return TicketlabError(f"{path} is not a valid IDX file: {what}; {_FIX}")

    if len(raw) < 4:
        raise bad(f"expected a 4-byte header, the file holds {len(raw)} bytes")
    if raw[:2] != b"\0\0":
        raise bad(f"expected magic 0x0000, a type code and a dimension count; got {raw[:4].hex()}")
    if raw[2] not in _DTYPES:
        raise bad(f"unknown type code 0x{raw[2]:02x} (expected 0x08 for uint8)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0:
        raise bad("expected at least one dimension, the header says 0")
    if len(raw) < header:
        raise bad(f"expected {ndim} big-endian int32 dimensions, the header is truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    if min(shape) < 0:
        raise bad(f"negative dimension in shape {shape}")
    dtype = np.dtype(_DTYPES[raw[2]])
    count = math.prod(shape)
    if len(raw) - header != count * dtype.itemsize:
        raise bad(
            f"shape {shape} of {dtype.name} needs {count * dtype.itemsize} data bytes, "
            f"found {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype, count=count, offset=header)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def md5_of(path: str | Path) -> str:
    """The file's md5 hex digest, cached by (resolved path, size, mtime) for the process."""
    path = Path(path)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _MD5_CACHE:
            with path.open("rb") as f:
                digest = hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False))
            _MD5_CACHE[key] = digest.hexdigest()
    except FileNotFoundError:
        raise TicketlabError(f"{path} {_MISSING}") from None
    except OSError as e:
        raise TicketlabError(f"cannot read {path}: {e.strerror or e}; {_UNREADABLE}") from None
    return _MD5_CACHE[key]


def check_md5(path: str | Path, expected: str) -> None:
    """Refuses a file that is not byte-identical to the published one."""
    actual = md5_of(path)
    if actual != expected.lower():
        raise TicketlabError(
            f"{path} has md5 {actual}, expected {expected.lower()}: the file is damaged or not the "
            "original; delete it and re-run with --download, or replace it with the original file"
        )
