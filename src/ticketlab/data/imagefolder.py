"""Any class-per-folder tree of JPEG/PNG images (Imagenette, a user's photos) as a dataset.

Layouts, in this order:
- `PATH/train/<class>/*` with `PATH/val/<class>/*` (or `PATH/test/`): the given split, as
  Imagenette ships it; the val/test folder is the test set (validation is held out of train).
- `PATH/<class>/*`: no split given, so a fixed 20% of each class is the test set (a frozen
  legacy-numpy permutation of the class's sorted file names, like the digits set).

Classes are the sorted subfolder names of the training folder. Each image is decoded once
with Pillow, converted to RGB, its shorter side resized to `size` and the centre cropped to
size x size (the usual evaluation transform; the aspect ratio is kept, nothing stretched).
The uint8 result is cached beside the data (`PATH/.ticketlab-<size>px.safetensors`, or under
the data dir when PATH is read-only) with a digest of the file list (names, sizes, mtimes),
so the next run loads it in seconds and a changed tree is decoded again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ticketlab.data.raw import RawSplits
from ticketlab.data.sources import resolve_data_dir
from ticketlab.errors import DamagedFile, TicketlabError
from ticketlab.io import READ_ONLY, WriteError, load_tensors, save_tensors

EXTENSIONS = (".jpg", ".jpeg", ".png")
DEFAULT_SIZE = 64
TEST_FRACTION = 0.2  # of each class, when the tree has no train/val split
_TEST_SPLIT_SEED = 0  # never change: it defines the test set of unsplit trees
_CACHE_VERSION = "1"  # bump when decoding changes, so old caches are not reused
_LAYOUT = ("expected PATH/train/<class>/*.jpg with PATH/val/<class>/*.jpg, or "
           "PATH/<class>/*.jpg (JPEG or PNG)")


@dataclass(frozen=True)
class FolderScan:
    """What listing the tree tells without decoding: classes and each split's files."""

    root: Path
    classes: tuple[str, ...]
    train: tuple[tuple[Path, int], ...]  # (file, class index), sorted
    test: tuple[tuple[Path, int], ...]
    split_given: bool  # train/ and val/ (or test/) folders, not a held-out 20%


def scan(path: str | Path) -> FolderScan:
    """Lists the tree; refuses a missing folder, fewer than two classes, an empty class."""
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "not found"
        raise TicketlabError(f"image folder {root} {what}: check PATH in --dataset "
                             f"imagefolder:PATH ({_LAYOUT})")
    train_dir = root / "train"
    if train_dir.is_dir():
        test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
        if test_dir is None:
            raise TicketlabError(f"image folder {root} has train/ but no val/ or test/ folder "
                                 f"beside it: add one ({_LAYOUT})")
        classes = _classes(train_dir)
        train = _files(train_dir, classes)
        unknown = sorted(set(_subfolders(test_dir)) - set(classes))
        if unknown:
            raise TicketlabError(f"{test_dir} has class folder(s) {', '.join(unknown)} that "
                                 f"{train_dir} lacks: give both splits the same classes")
        test = _files(test_dir, tuple(c for c in classes if (test_dir / c).is_dir()), classes)
        return FolderScan(root, classes, train, test, split_given=True)
    classes = _classes(root)
    train_list, test_list = [], []
    for item in _files(root, classes):
        train_list.append(item)
    for k in range(len(classes)):  # a fixed share of each class, so none is left out
        members = [f for f in train_list if f[1] == k]
        n_test = round(len(members) * TEST_FRACTION)
        order = np.random.RandomState(_TEST_SPLIT_SEED).permutation(len(members))
        test_list += [members[i] for i in sorted(order[:n_test])]
    held = set(test_list)
    return FolderScan(root, classes, tuple(f for f in train_list if f not in held),
                      tuple(sorted(test_list)), split_given=False)


def _subfolders(d: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise TicketlabError(f"cannot list {d}: {e.strerror or e}; check its permissions") from None


def _classes(d: Path) -> tuple[str, ...]:
    classes = tuple(_subfolders(d))
    if len(classes) < 2:
        found = f"one ({classes[0]})" if classes else "none"
        raise TicketlabError(f"image folder {d} holds {found} class folder(s): a classifier "
                             f"needs at least two, one subfolder of images per class "
                             f"({_LAYOUT})")
    return classes


def _files(d: Path, present: tuple[str, ...], classes: tuple[str, ...] | None = None
           ) -> tuple[tuple[Path, int], ...]:
    index = {c: k for k, c in enumerate(classes or present)}
    out = []
    for c in present:
        try:
            names = sorted(e.name for e in os.scandir(d / c)
                           if e.is_file() and not e.name.startswith(".")
                           and e.name.lower().endswith(EXTENSIONS))
        except OSError as e:
            raise TicketlabError(f"cannot list {d / c}: {e.strerror or e}; check its "
                                 "permissions") from None
        if not names:
            raise TicketlabError(f"class folder {d / c} holds no JPEG or PNG images "
                                 f"({', '.join(EXTENSIONS)}): add some or remove the folder")
        out += [(d / c / n, index[c]) for n in names]
    return tuple(out)


def file_list_digest(s: FolderScan, size: int) -> str:
    """sha256 of every file's split, relative name, size and mtime, the classes and `size`."""
    h = hashlib.sha256(f"v{_CACHE_VERSION}|{size}|{'/'.join(s.classes)}|".encode())
    for split, files in (("train", s.train), ("test", s.test)):
        for f, k in files:
            try:
                st = f.stat()
            except OSError as e:
                raise TicketlabError(f"cannot read {f}: {e.strerror or e}; check it is a "
                                     "readable file") from None
            h.update(f"{split}|{f.relative_to(s.root)}|{k}|{st.st_size}|{st.st_mtime_ns}\n"
                     .encode())
    return h.hexdigest()


def decode(path: Path, size: int) -> np.ndarray:
    """One image as uint8 3 x size x size: RGB, shorter side to `size`, centre crop."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale still >= size
            rgb = ImageOps.fit(img.convert("RGB"), (size, size),
                               method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise TicketlabError(f"cannot decode image {path} ({reason}): replace the file or "
                             "remove it from the folder") from None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def cache_paths(s: FolderScan, size: int, data_dir: str | Path | None) -> tuple[Path, Path]:
    """Beside the data, and the fallback under the data dir (for a read-only tree)."""
    name = f".ticketlab-{size}px.safetensors"
    absolute = s.root.resolve()
    key = hashlib.sha256(str(absolute).encode()).hexdigest()[:16]
    fallback = resolve_data_dir(data_dir) / "imagefolder" / f"{absolute.name}-{key}-{size}px"
    return s.root / name, fallback.with_name(fallback.name + ".safetensors")


def load_image_folder(path: str | Path, size: int = DEFAULT_SIZE,
                      data_dir: str | Path | None = None) -> RawSplits:
    """The tree's splits as uint8 images 3 x size x size, from the cache when it is current."""
    s = scan(path)
    digest = file_list_digest(s, size)
    places = cache_paths(s, size, data_dir)
    arrays = _read_cache(places, digest)
    if arrays is None:
        arrays = {
            "x_train": np.stack([decode(f, size) for f, _ in s.train]),
            "y_train": np.array([k for _, k in s.train], dtype=np.int64),
            "x_test": np.stack([decode(f, size) for f, _ in s.test]) if s.test
            else np.zeros((0, 3, size, size), np.uint8),
            "y_test": np.array([k for _, k in s.test], dtype=np.int64),
        }
        _write_cache(places, arrays, digest)
    return RawSplits(**arrays, num_classes=len(s.classes), value_range=(0.0, 255.0))


def _read_cache(places: tuple[Path, ...], digest: str) -> dict[str, np.ndarray] | None:
    for p in places:
        if not p.is_file():
            continue
        try:
            tensors, meta = load_tensors(p, "images")
        except DamagedFile:
            continue  # rebuilt and overwritten below
        if meta.get("files") == digest:
            return {k: v.numpy() for k, v in tensors.items()}
    return None


def _write_cache(places: tuple[Path, ...], arrays: dict[str, np.ndarray], digest: str) -> None:
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    for p in places:
        try:
            save_tensors(p, tensors, "images", {"files": digest})
            return
        except WriteError as e:
            if e.errno in READ_ONLY and p != places[-1]:
                continue
            raise TicketlabError(f"cannot write the decoded-image cache {p} "
                                 f"({os.strerror(e.errno) if e.errno else e}): pass --data-dir "
                                 "DIR for a writable folder to keep it in") from None
