from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ticketlab.data import SOURCES, download, locate_files, md5_of, resolve_data_dir
from ticketlab.errors import TicketlabError

MNIST_NAMES = [f.name for f in SOURCES["mnist"].files.values()]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    handler = partial(_Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def link_files(src: Path, dst: Path, names: list[str]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        (dst / name).symlink_to(src / name)


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETLAB_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("TICKETLAB_DATA")
    assert resolve_data_dir(None) == Path.home() / ".cache" / "ticketlab" / "data"


def test_locate_in_folder_flat_and_env(tmp_path, monkeypatch, mnist_dir):
    paths = locate_files("mnist", mnist_dir.parent)
    assert paths["train_images"] == mnist_dir / "train-images-idx3-ubyte.gz"
    link_files(mnist_dir, tmp_path, MNIST_NAMES)  # flat layout: files directly in the data dir
    assert set(locate_files("mnist", tmp_path).values()) == {tmp_path / n for n in MNIST_NAMES}
    monkeypatch.setenv("TICKETLAB_DATA", str(mnist_dir.parent))
    assert locate_files("mnist")["test_labels"].parent == mnist_dir


def test_missing_file_message(tmp_path, mnist_dir):
    link_files(mnist_dir, tmp_path / "mnist", MNIST_NAMES[1:])
    with pytest.raises(TicketlabError) as info:
        locate_files("mnist", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert MNIST_NAMES[0] in message and str(tmp_path / "mnist") in message
    for hint in ("--data-dir", "TICKETLAB_DATA", "--download"):
        assert hint in message
    assert MNIST_NAMES[1] not in message


def test_download_from_local_mirrors(tmp_path, mnist_dir):
    """404 on the first mirror, a wrong file on the second, the real one on the third."""
    good, bad, empty = tmp_path / "good", tmp_path / "bad", tmp_path / "empty"
    for d in (good, bad, empty):
        d.mkdir()
    for name in MNIST_NAMES:
        shutil.copyfile(mnist_dir / name, good / name)
        (bad / name).write_bytes(b"not the file")
    target = tmp_path / "data" / "mnist"
    link_files(mnist_dir, target, MNIST_NAMES[:1])  # present already: not fetched again
    with serve(empty) as m404, serve(bad) as mbad, serve(good) as mgood:
        paths = download("mnist", target, mirrors=[m404, mbad, mgood], timeout=10)
    assert sorted(p.name for p in target.iterdir()) == sorted(MNIST_NAMES)  # no .part left
    assert (target / MNIST_NAMES[0]).is_symlink()
    for role, f in SOURCES["mnist"].files.items():
        assert paths[role] == target / f.name and md5_of(paths[role]) == f.md5


def test_download_failure_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = tmp_path / "mnist"
    with pytest.raises(TicketlabError) as info:
        download("mnist", target, mirrors=[f"http://127.0.0.1:{port}/"], timeout=5)
    message = str(info.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte.gz" in message and f"127.0.0.1:{port}" in message
    assert "by hand" in message and str(target) in message and "--data-dir" in message
    assert list(target.iterdir()) == []  # nothing half-written left behind
