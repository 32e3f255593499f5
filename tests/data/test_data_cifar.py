"""The CIFAR readers on small archives generated in the official binary layout.

The real archives cannot be fetched here; the generated ones have the official member names
and record format with a few records each. Their md5 differs from the official one, so the
full loader is run with SOURCES overridden to the generated file's md5 (explicit, per test).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import cli
from ticketlab.data import SOURCES, load_dataset, load_raw, md5_of
from ticketlab.data.cifar import LAYOUTS, read_cifar
from ticketlab.data.sources import SourceFile
from ticketlab.errors import TicketlabError


def _records(n: int, label_bytes: int, num_classes: int, seed: int) -> tuple[bytes, np.ndarray,
                                                                              np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, (n, label_bytes), dtype=np.uint8)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    raw = np.concatenate([labels, images.reshape(n, -1)], axis=1).tobytes()
    return raw, images, labels[:, -1].astype(np.int64)


def make_cifar(path: Path, name: str, n: int = 3, members: dict[str, bytes] | None = None,
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Writes `name`'s archive (tar.gz) or, for a path without .gz, its extracted folder.
    Returns split -> (images, labels) as the reader must give them back."""
    layout = LAYOUTS[name]
    classes = layout.num_classes
    data, expected = {}, {}
    for split, names in (("train", layout.train), ("test", layout.test)):
        xs, ys = [], []
        for i, m in enumerate(names):
            seed = 10 * (split == "test") + i
            raw, x, y = _records(n + i, layout.label_bytes, classes, seed)
            data[m] = raw
            xs.append(x)
            ys.append(y)
        expected[split] = np.concatenate(xs), np.concatenate(ys)
    data.update(members or {})
    data["batches.meta.txt"] = b"airplane\n"
    if path.name.endswith(".gz"):
        with tarfile.open(path, "w:gz") as tar:
            for m, raw in data.items():
                info = tarfile.TarInfo(f"{layout.folder}/{m}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    else:
        path.mkdir(parents=True)
        for m, raw in data.items():
            (path / m).write_bytes(raw)
    return expected


def _official_md5(monkeypatch, name: str, archive: Path) -> None:
    """Lets the full loader accept a generated archive: its md5 stands in for the official."""
    fs = SOURCES[name]
    files = {"archive": SourceFile(fs.files["archive"].name, md5_of(archive))}
    monkeypatch.setitem(SOURCES, name, dataclasses.replace(fs, files=files))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_archive_and_folder_read_back_the_records(tmp_path, name):
    layout = LAYOUTS[name]
    expected = make_cifar(tmp_path / layout.archive, name)
    raw = read_cifar(tmp_path / layout.archive, name)
    n_train = 3 * len(layout.train) + sum(range(len(layout.train)))
    assert raw.x_train.shape == (n_train, 3, 32, 32) and raw.x_train.dtype == np.uint8
    assert raw.num_classes == layout.num_classes and raw.value_range == (0.0, 255.0)
    for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        assert np.array_equal(x, expected[split][0]) and np.array_equal(y, expected[split][1])
    assert raw.x_train.flags.writeable and raw.x_train.flags.c_contiguous

    folder = tmp_path / "extracted" / layout.folder
    expected = make_cifar(folder, name, n=2)
    raw = read_cifar(folder, name)
    assert np.array_equal(raw.x_train, expected["train"][0])
    assert np.array_equal(raw.y_test, expected["test"][1])


def test_channel_major_pixels_and_fine_labels(tmp_path):
    """Byte 1 + c*1024 + r*32 + col is pixel (c, r, col); CIFAR-100 uses the second byte."""
    record = np.zeros(2 + 3072, np.uint8)
    record[:2] = (7, 42)  # coarse 7, fine 42
    record[2 + 2 * 1024 + 5 * 32 + 9] = 200  # blue, row 5, column 9
    one = record.tobytes()
    make_cifar(tmp_path / "c.tar.gz", "cifar100", members={"train.bin": one, "test.bin": one})
    raw = read_cifar(tmp_path / "c.tar.gz", "cifar100")
    assert raw.y_train.tolist() == [42]
    assert raw.x_train[0, 2, 5, 9] == 200 and raw.x_train.sum() == 200


def test_full_loader_checks_md5_and_holds_out_5000(tmp_path, monkeypatch):
    archive = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    make_cifar(archive, "cifar10", n=1100)
    with pytest.raises(TicketlabError, match=r"cifar-10-binary.tar.gz has md5 .* expected "
                                             r"c32a1d4ab5d03f1284b67883e8d87530"):
        load_raw("cifar10", tmp_path)
    _official_md5(monkeypatch, "cifar10", archive)
    assert load_raw("cifar-10", tmp_path).x_train.shape == (5 * 1100 + 10, 3, 32, 32)
    ds = load_dataset("cifar10", tmp_path)  # the paper's 5,000 validation images
    assert len(ds.y_val) == 5000 and ds.n_train == 510 and ds.input_shape == (3, 32, 32)
    assert len(ds.mean) == 3


def test_extracted_folder_is_read_with_its_record_counts_checked(tmp_path):
    make_cifar(tmp_path / "cifar10" / "cifar-10-batches-bin", "cifar10")
    with pytest.raises(TicketlabError, match=r"data_batch_1.bin holds 3 records, expected "
                                             "10,000: replace it with the original "
                                             "cifar-10-binary.tar.gz"):
        load_raw("cifar10", tmp_path)


def test_bad_archives_are_named_with_the_fix(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    make_cifar(archive, "cifar10")
    whole = archive.read_bytes()
    fix = "replace it with the original cifar-10-binary.tar.gz from https://www.cs.toronto.edu"
    cases = {
        "truncated.tar.gz": (whole[: len(whole) // 2], "is not a readable tar.gz archive"),
        "not-gzip.tar.gz": (b"PK\x03\x04 a zip file", "is not a readable tar.gz archive"),
        "corrupt.tar.gz": (whole[:100] + bytes(200) + whole[300:], "is not a readable tar.gz"),
        "no-tar.tar.gz": (gzip.compress(b"x" * 3073), "is not a readable tar.gz archive"),
    }
    for file, (data, needle) in cases.items():
        (tmp_path / file).write_bytes(data)
        with pytest.raises(TicketlabError) as info:
            read_cifar(tmp_path / file, "cifar10")
        message = str(info.value)
        assert file in message and needle in message and fix in message, message
        assert "\n" not in message

    short = tmp_path / "short.tar.gz"
    make_cifar(short, "cifar10", members={"test_batch.bin": bytes(3073 * 2 + 5)})
    with pytest.raises(TicketlabError, match=r"short.tar.gz \(member cifar-10-batches-bin/"
                                             r"test_batch.bin\) holds 6,151 bytes, not a whole "
                                             "number of 3,073-byte records"):
        read_cifar(short, "cifar10")

    wrong = tmp_path / "wrong.tar.gz"  # CIFAR-100 members where CIFAR-10 is expected
    make_cifar(wrong, "cifar100")
    with pytest.raises(TicketlabError, match=r"wrong.tar.gz lacks cifar-10-batches-bin/"
                                             r"data_batch_1.bin, .*: it is not "
                                             r"cifar-10-binary.tar.gz"):
        read_cifar(wrong, "cifar10")

    bad_label = tmp_path / "label.tar.gz"
    make_cifar(bad_label, "cifar10", members={"test_batch.bin": bytes([10]) + bytes(3072)})
    with pytest.raises(TicketlabError, match=r"holds label 10 in its test records, expected "
                                             r"0..9"):
        read_cifar(bad_label, "cifar10")


@pytest.mark.parametrize("pickled", ["cifar-10-python.tar.gz", "cifar-10-batches-py"])
def test_the_pickle_distribution_is_refused(tmp_path, pickled):
    trap = tmp_path / pickled
    if pickled.endswith(".gz"):
        trap.write_bytes(b"never read")
    else:
        trap.mkdir()
        (trap / "data_batch_1").write_bytes(b"never unpickled")
    with pytest.raises(TicketlabError) as info:
        load_raw("cifar10", tmp_path)
    assert str(info.value) == (
        f"{trap} is the Python-pickle distribution of cifar10, which ticketlab never unpickles "
        "(loading a pickle can run code): put the binary distribution cifar-10-binary.tar.gz "
        f"from https://www.cs.toronto.edu/~kriz/cifar.html into {tmp_path / 'cifar10'}, "
        "or add --download"
    )


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(TicketlabError, match=r"cifar100 file.s. cifar-100-binary.tar.gz not "
                                             r"found in .*--download"):
        load_raw("cifar100", tmp_path)


@pytest.mark.parametrize("setup, needle", [
    ("pickled", "is the Python-pickle distribution of cifar10"),
    ("corrupt", "cifar-10-binary.tar.gz has md5"),
    ("missing", "cifar-10-binary.tar.gz not found"),
])
def test_cli_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys, setup, needle):
    data = tmp_path / "data"
    data.mkdir()
    if setup == "pickled":
        (data / "cifar-10-python.tar.gz").write_bytes(b"x")
    elif setup == "corrupt":
        make_cifar(data / "cifar-10-binary.tar.gz", "cifar10")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "find", "--dataset", "cifar10", "--data-dir", str(data),
                       "--model", "conv2", "--out", str(tmp_path / "runs"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert needle in err and "Traceback" not in err
