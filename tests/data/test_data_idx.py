from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from ticketlab.data import check_md5, md5_of, read_idx
from ticketlab.data import idx as idx_module
from ticketlab.errors import TicketlabError


def one_line_error(func, *args) -> str:
    with pytest.raises(TicketlabError) as info:
        func(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_read_idx_roundtrip(tmp_path, write_idx):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "x.gz", images))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4) and out.flags.writeable
    np.testing.assert_array_equal(out, images)


def test_read_idx_big_endian_int32(tmp_path, write_idx):
    values = np.array([1, -2, 70000], dtype=np.int32)
    out = read_idx(write_idx(tmp_path / "x.gz", values, code=0x0C))
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize(
    ("header", "payload", "expected"),
    [
        (b"\x01\x00\x08\x01", b"", "magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x02", b"ab", "type code 0x07"),
        (b"\x00\x00\x08\x00", b"", "at least one dimension"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", b"", "header is truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05", b"abc", "needs 5 data bytes, found 3"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02", b"abc", "needs 2 data bytes, found 3"),
        (b"\x00\x00", b"", "4-byte header"),
    ],
)
def test_read_idx_bad_header(tmp_path, header, payload, expected):
    path = tmp_path / "bad-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(header + payload))
    message = one_line_error(read_idx, path)
    assert str(path) in message and expected in message and "original file" in message


def test_read_idx_missing_not_gzip_truncated(tmp_path, write_idx):
    assert "not found" in one_line_error(read_idx, tmp_path / "nope.gz")

    plain = tmp_path / "plain.gz"
    plain.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    assert "not gzip" in one_line_error(read_idx, plain)

    good = write_idx(tmp_path / "good.gz", np.zeros(5000, dtype=np.uint8) + 7)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good.read_bytes()[:-12])
    message = one_line_error(read_idx, cut)
    assert str(cut) in message and "truncated" in message


def test_truncated_real_file(tmp_path, mnist_dir):
    cut = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data = (mnist_dir / cut.name).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated" in one_line_error(read_idx, cut)


def test_md5_and_check(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello")
    expected = hashlib.md5(b"hello").hexdigest()
    assert md5_of(path) == expected
    check_md5(path, expected.upper())
    message = one_line_error(check_md5, path, "0" * 32)
    assert str(path) in message and expected in message and "0" * 32 in message
    assert "delete it and re-run with --download, or replace it with the original file" in message
    assert "not found" in one_line_error(md5_of, tmp_path / "missing")


def test_md5_cached_per_file_version(tmp_path, monkeypatch):
    calls = []
    real = hashlib.file_digest

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(idx_module.hashlib, "file_digest", counting)
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    first = md5_of(path)
    md5_of(path)
    check_md5(path, first)
    assert len(calls) == 1
    path.write_bytes(b"other")  # new size and mtime: hashed again
    assert md5_of(path) == hashlib.md5(b"other").hexdigest() and len(calls) == 2
