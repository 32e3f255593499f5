"""imagefolder:PATH on small trees of PNG/JPEG images generated with Pillow in the test."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import cli
from ticketlab.data import get_dataset, imagefolder, load_dataset, load_raw
from ticketlab.data.imagefolder import decode, scan
from ticketlab.errors import TicketlabError
from ticketlab.io import write_error

COLOURS = {"cat": (255, 0, 0), "dog": (0, 0, 255), "fox": (0, 255, 0)}


def make_tree(root: Path, split: bool = True, per_class: int = 3) -> Path:
    """Each class a solid colour; sizes vary, so resizing and cropping are exercised."""
    for s in (("train", "val") if split else (".",)):
        for c, rgb in COLOURS.items():
            d = root / s / c
            d.mkdir(parents=True)
            for i in range(per_class if s != "val" else 1):
                img = Image.new("RGB", (20 + 4 * i, 12 + i), rgb)
                img.save(d / f"{i}.{'png' if i % 2 else 'jpg'}", quality=95)
    return root


def test_train_val_tree(tmp_path):
    root = make_tree(tmp_path / "tree")
    info = get_dataset(f"imagefolder:{root}")
    assert info.name == f"imagefolder:{root}"
    assert (info.n_train, info.n_test, info.num_classes) == (9, 3, 3)
    assert info.input_shape == (3, 64, 64)
    assert get_dataset(f"imagefolder:{root}", image_size=16).input_shape == (3, 16, 16)

    raw = load_raw(f"imagefolder:{root}", image_size=16)
    assert raw.x_train.shape == (9, 3, 16, 16) and raw.x_train.dtype == np.uint8
    assert raw.y_train.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # classes: sorted folder names
    assert raw.y_test.tolist() == [0, 1, 2]
    for x, y in zip(raw.x_train, raw.y_train, strict=True):  # each class its colour (JPEG ~)
        colour = np.array(list(COLOURS.values())[y]).reshape(3, 1, 1)
        assert np.abs(x.astype(int) - colour).max() <= 8

    ds = load_dataset(f"imagefolder:{root}", image_size=16, validation_size=2)
    assert ds.input_shape == (3, 16, 16) and ds.n_train == 7 and len(ds.y_test) == 3


def test_shorter_side_then_centre_crop(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))  # the left quarter white: cropped away
    img.save(tmp_path / "a.png")
    x = decode(tmp_path / "a.png", 10)
    assert x.shape == (3, 10, 10) and x.max() < 60  # only the centre 20x20, scaled to 10x10


def test_tree_without_split_holds_out_a_fixed_fifth_of_each_class(tmp_path):
    root = make_tree(tmp_path / "flat", split=False, per_class=5)
    s = scan(root)
    assert not s.split_given and len(s.test) == 3 and len(s.train) == 12
    assert sorted(k for _, k in s.test) == [0, 1, 2]
    assert scan(root) == s  # fixed: the same files every time
    assert "a fixed 20% of each class" in get_dataset(f"imagefolder:{root}").source


def test_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "tree")
    calls = []
    real = imagefolder.decode

    def counting(path: Path, size: int) -> np.ndarray:
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(imagefolder, "decode", counting)
    first = load_raw(f"imagefolder:{root}", image_size=16)
    assert len(calls) == 12 and (root / ".ticketlab-16px.safetensors").is_file()
    second = load_raw(f"imagefolder:{root}", image_size=16)
    assert len(calls) == 12  # nothing decoded: read from the cache
    assert np.array_equal(first.x_train, second.x_train)
    assert np.array_equal(first.y_test, second.y_test)

    load_raw(f"imagefolder:{root}", image_size=8)  # another size: its own cache
    assert len(calls) == 24

    changed = root / "train" / "dog" / "1.png"
    Image.new("RGB", (20, 12), (9, 9, 9)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new mtime even on a coarse clock
    third = load_raw(f"imagefolder:{root}", image_size=16)
    assert len(calls) == 36 and third.x_train[4].max() < 20  # decoded again, new pixels

    (root / ".ticketlab-16px.safetensors").write_bytes(b"garbage")  # damaged: rebuilt
    assert np.array_equal(load_raw(f"imagefolder:{root}", image_size=16).x_train, third.x_train)
    assert len(calls) == 48


def test_read_only_tree_caches_under_the_data_dir(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "tree")
    real = imagefolder.save_tensors

    def read_only_tree(path: Path, *args, **kwargs) -> str:
        if path.parent == root:
            raise write_error(path, OSError(errno.EROFS, os.strerror(errno.EROFS)))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(imagefolder, "save_tensors", read_only_tree)
    first = load_raw(f"imagefolder:{root}", data_dir=tmp_path / "data", image_size=8)
    (cached,) = (tmp_path / "data" / "imagefolder").iterdir()
    assert cached.name.startswith("tree-") and cached.name.endswith("-8px.safetensors")
    monkeypatch.setattr(imagefolder, "decode", None)  # the second load must not decode
    again = load_raw(f"imagefolder:{root}", data_dir=tmp_path / "data", image_size=8)
    assert np.array_equal(first.x_train, again.x_train)


def _bad_tree(tmp_path: Path, case: str) -> tuple[Path, str]:
    root = tmp_path / case
    if case == "missing":
        return root, f"image folder {root} not found: check PATH in --dataset imagefolder:PATH"
    make_tree(root)
    if case == "one-class":
        for c in ("dog", "fox"):
            for s in ("train", "val"):
                for f in (root / s / c).iterdir():
                    f.unlink()
                (root / s / c).rmdir()
        return root, f"image folder {root / 'train'} holds one (cat) class folder(s)"
    if case == "empty-class":
        for f in (root / "train" / "fox").iterdir():
            f.unlink()
        return root, f"class folder {root / 'train' / 'fox'} holds no JPEG or PNG images"
    if case == "corrupt-image":
        bad = root / "train" / "dog" / "0.jpg"
        bad.write_bytes(bad.read_bytes()[:30])
        return root, f"cannot decode image {bad}"
    if case == "no-val":
        for s in ("val",):
            for c in COLOURS:
                for f in (root / s / c).iterdir():
                    f.unlink()
                (root / s / c).rmdir()
            (root / s).rmdir()
        return root, "has train/ but no val/ or test/ folder beside it"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "one-class", "empty-class", "corrupt-image",
                                  "no-val"])
def test_bad_trees_are_one_line_errors(tmp_path, case):
    root, needle = _bad_tree(tmp_path, case)
    with pytest.raises(TicketlabError) as info:
        load_raw(f"imagefolder:{root}", image_size=8)
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


@pytest.mark.parametrize("case", ["one-class", "corrupt-image"])
def test_cli_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys, case):
    root, needle = _bad_tree(tmp_path, case)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "find", "--dataset", f"imagefolder:{root}", "--model", "conv2",
                       "--out", str(tmp_path / "runs"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert needle in err and "Traceback" not in err
