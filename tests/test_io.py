"""File-system errors: one line, exit code 2, nothing already computed lost.

Tests run as root, where chmod stops no write, so read-only media and a full disk are
simulated by making the file system calls that write raise what the kernel would.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

from ticketlab import io as tio
from ticketlab.cli import main

FIND = ["find", "--train", "20it", "--eval-every", "10it", "--controls", "random", "--quiet"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file()}


def read_only(monkeypatch, below: Path) -> None:
    """Every new file under `below` fails as on read-only media (EROFS)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(below.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(tio.tempfile, "mkstemp", mkstemp)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ticketlab: error: ")
    return lines[0]


def test_disk_full_loses_nothing_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    assert cli(capsys, *FIND, "--levels", "1", "--out", str(out))[0] == 0
    before = snapshot(out)

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(tio.os, "fsync", fsync)
    code, _, err = cli(capsys, *FIND, "--levels", "2", "--out", str(out))
    assert code == 2
    line = one_line(err)
    assert "No space left on device" in line and "free some space" in line
    after = snapshot(out)
    assert {k: after[k] for k in before} == before  # nothing written before was touched
    assert not [k for k in after if k.endswith(".tmp")]  # no partial file left behind
    monkeypatch.undo()
    code, _, err = cli(capsys, *FIND, "--levels", "2", "--out", str(out))
    assert code == 0, err
    assert {k: v for k, v in snapshot(out).items() if k in before and "summary" not in k
            and "config" not in k} == {k: v for k, v in before.items()
                                       if "summary" not in k and "config" not in k}


def test_read_only_out(tmp_path, capsys, monkeypatch):
    read_only(monkeypatch, tmp_path)
    code, _, err = cli(capsys, *FIND, "--levels", "1", "--out", str(tmp_path / "runs"))
    assert code == 2
    line = one_line(err)
    assert "Read-only file system" in line and "--out" in line


def test_out_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "runs"
    out.write_text("not a directory")
    code, _, err = cli(capsys, *FIND, "--levels", "1", "--out", str(out))
    assert code == 2
    assert "is a file" in one_line(err) and "--out" in err
    assert out.read_text() == "not a directory"


@pytest.mark.parametrize("extra", [[], ["--checkpoint-every", "5"]])
def test_finished_run_on_read_only_media_prints_its_table(tmp_path, capsys, monkeypatch, extra):
    """Nothing needs writing, even when the command line differs (its record is skipped)."""
    out = tmp_path / "runs"
    code, table, _ = cli(capsys, *FIND, "--levels", "1", "--out", str(out))
    assert code == 0
    before = snapshot(out)
    read_only(monkeypatch, out)
    code, printed, err = cli(capsys, *FIND, "--levels", "1", "--out", str(out), *extra)
    assert code == 0, err
    assert printed == table
    assert snapshot(out) == before


def test_report_into_a_read_only_run_names_out(tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    assert cli(capsys, *FIND, "--levels", "1", "--out", str(out))[0] == 0
    (run,) = out.iterdir()
    before = snapshot(out)
    read_only(monkeypatch, out)
    code, _, err = cli(capsys, "report", str(run), "--quiet")
    assert code == 2
    line = one_line(err)
    assert "Read-only file system" in line and "--out" in line
    assert snapshot(out) == before
    code, _, err = cli(capsys, "report", str(run), "--quiet", "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert (tmp_path / "r" / "report.html").is_file()


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    tio.write_json(path, {"a": 1})

    def replace(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(tio.os, "replace", replace)
    with pytest.raises(tio.WriteError, match=r"cannot write .*a\.json") as e:
        tio.write_json(path, {"a": 2})
    assert e.value.errno == errno.ENOSPC
    assert tio.read_json(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
