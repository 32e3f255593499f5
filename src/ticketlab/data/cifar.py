"""CIFAR-10 and CIFAR-100 from the official *binary* distributions, read straight from the tar.gz.

Records are fixed-length: label byte(s), then 3,072 pixel bytes (R, G, B planes of 32x32,
row-major), so the images are a reshape, no decoding. The Python-pickle distribution is
refused, never unpickled: unpickling a file runs whatever code it holds. The archive's md5 is
checked before reading; an already-extracted folder is read too, with its record counts
checked instead (no official per-file checksums are published).
"""

from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ticketlab.data.idx import check_md5
from ticketlab.data.raw import RawSplits
from ticketlab.data.sources import SOURCES, locate_files, resolve_data_dir
from ticketlab.errors import TicketlabError

PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarLayout:
    """Where the records are inside the official archive, and how long each one is."""

    archive: str  # the binary distribution's file name
    folder: str  # its top-level folder
    train: tuple[str, ...]  # member names inside `folder`
    test: tuple[str, ...]
    label_bytes: int
    label_byte: int  # which of the label bytes is the label used (CIFAR-100: fine, not coarse)
    num_classes: int
    records_per_member: int  # in the official files, to check an extracted folder
    pickled: tuple[str, ...]  # the pickle distribution's archive and folder, refused

    @property
    def record(self) -> int:
        return self.label_bytes + PIXELS


LAYOUTS = {
    "cifar10": CifarLayout(
        archive="cifar-10-binary.tar.gz", folder="cifar-10-batches-bin",
        train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)), test=("test_batch.bin",),
        label_bytes=1, label_byte=0, num_classes=10, records_per_member=10_000,
        pickled=("cifar-10-python.tar.gz", "cifar-10-batches-py"),
    ),
    "cifar100": CifarLayout(
        archive="cifar-100-binary.tar.gz", folder="cifar-100-binary",
        train=("train.bin",), test=("test.bin",),
        label_bytes=2, label_byte=1, num_classes=100, records_per_member=0,  # 50K / 10K
        pickled=("cifar-100-python.tar.gz", "cifar-100-python"),
    ),
}
_COUNTS = {"train.bin": 50_000, "test.bin": 10_000}  # CIFAR-100's two members


def load_cifar(name: str, data_dir: str | Path | None, download: bool) -> RawSplits:
    """The official splits of `name` ('cifar10' or 'cifar100') from the data directory."""
    layout = LAYOUTS[name]
    root = resolve_data_dir(data_dir)
    places = (root / SOURCES[name].folder, root)
    if not download and not any((d / layout.archive).is_file() for d in places):
        for d in places:
            if (d / layout.folder).is_dir():
                return read_cifar(d / layout.folder, name, check_counts=True)
        _refuse_pickled(name, places)
    paths = locate_files(name, data_dir, download)
    check_md5(paths["archive"], SOURCES[name].files["archive"].md5)
    return read_cifar(paths["archive"], name)


def read_cifar(path: str | Path, name: str, check_counts: bool = False) -> RawSplits:
    """Parses an archive or an extracted folder in the official layout; no md5 check here
    (`load_cifar` does it), so generated files in that layout can be read as well."""
    layout, path = LAYOUTS[name], Path(path)
    data = _read_folder(path, layout) if path.is_dir() else _read_archive(path, layout)
    splits = {}
    for split, members in (("train", layout.train), ("test", layout.test)):
        parts = [_records(path, m, data[m], layout, check_counts) for m in members]
        records = np.concatenate(parts) if len(parts) > 1 else parts[0]
        labels = records[:, layout.label_byte].astype(np.int64)
        if len(labels) and labels.max() >= layout.num_classes:
            raise TicketlabError(
                f"{path} holds label {labels.max()} in its {split} records, expected 0.."
                f"{layout.num_classes - 1}: {_fix(layout)}"
            )
        images = records[:, layout.label_bytes:].reshape(-1, 3, 32, 32).copy()
        splits[split] = images, labels
    return RawSplits(
        x_train=splits["train"][0], y_train=splits["train"][1],
        x_test=splits["test"][0], y_test=splits["test"][1],
        num_classes=layout.num_classes, value_range=(0.0, 255.0),
    )


def _fix(layout: CifarLayout) -> str:
    return (f"replace it with the original {layout.archive} from {PAGE}, or delete it and "
            "re-run with --download")


def _read_archive(path: Path, layout: CifarLayout) -> dict[str, bytes]:
    wanted = {f"{layout.folder}/{m}": m for m in (*layout.train, *layout.test)}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # one pass: a gzip stream is slow to seek backwards
                if member.name in wanted and member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None  # a regular file
                    found[wanted[member.name]] = f.read()
    except FileNotFoundError:
        raise TicketlabError(f"{path} not found: check the path or re-run with "
                             "--download") from None
    except (tarfile.TarError, EOFError, zlib.error) as e:
        reason = "it ends early" if isinstance(e, EOFError) else str(e) or type(e).__name__
        raise TicketlabError(
            f"{path} is not a readable tar.gz archive ({reason}): {_fix(layout)}"
        ) from None
    except OSError as e:
        raise TicketlabError(f"cannot read {path}: {e.strerror or e}; check it is a readable "
                             "file") from None
    missing = [m for name, m in wanted.items() if m not in found]
    if missing:
        raise TicketlabError(
            f"{path} lacks {', '.join(f'{layout.folder}/{m}' for m in missing)}: it is not "
            f"{layout.archive}; {_fix(layout)}"
        )
    return found


def _read_folder(path: Path, layout: CifarLayout) -> dict[str, bytes]:
    found = {}
    for m in (*layout.train, *layout.test):
        try:
            found[m] = (path / m).read_bytes()
        except FileNotFoundError:
            raise TicketlabError(
                f"{path / m} not found: the extracted folder {path} is incomplete; put "
                f"{layout.archive} from {PAGE} beside it, or re-run with --download"
            ) from None
        except OSError as e:
            raise TicketlabError(f"cannot read {path / m}: {e.strerror or e}; check it is a "
                                 "readable file") from None
    return found


def _records(path: Path, member: str, raw: bytes, layout: CifarLayout,
             check_counts: bool) -> np.ndarray:
    where = f"{path}/{member}" if path.is_dir() else f"{path} (member {layout.folder}/{member})"
    if len(raw) % layout.record:
        raise TicketlabError(
            f"{where} holds {len(raw):,} bytes, not a whole number of {layout.record:,}-byte "
            f"records: the file is truncated or not CIFAR's binary format; {_fix(layout)}"
        )
    records = np.frombuffer(raw, np.uint8).reshape(-1, layout.record)
    expected = layout.records_per_member or _COUNTS[member]
    if check_counts and len(records) != expected:
        raise TicketlabError(
            f"{where} holds {len(records):,} records, expected {expected:,}: {_fix(layout)}"
        )
    return records


def _refuse_pickled(name: str, places: tuple[Path, ...]) -> None:
    layout = LAYOUTS[name]
    for d in places:
        for p in layout.pickled:
            if (d / p).exists():
                raise TicketlabError(
                    f"{d / p} is the Python-pickle distribution of {name}, which ticketlab never "
                    f"unpickles (loading a pickle can run code): put the binary distribution "
                    f"{layout.archive} from {PAGE} into {places[0]}, or add --download"
                )
