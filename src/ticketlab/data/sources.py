"""Where dataset files come from and where they are looked for on disk.

Files are looked for in `<data_dir>/<folder>/` and then directly in `<data_dir>/`. A
download goes to a temporary file in the target folder and is renamed into place only
after its md5 matches, so an interrupted or wrong download never looks like a good file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ticketlab.errors import TicketlabError

log = logging.getLogger(__name__)

ENV_VAR = "TICKETLAB_DATA"
DEFAULT_DATA_DIR = Path("~/.cache/ticketlab/data")


@dataclass(frozen=True)
class SourceFile:
    name: str
    md5: str


@dataclass(frozen=True)
class FileSet:
    """One dataset's files (role -> file), its folder under the data dir and its mirrors."""

    folder: str
    files: dict[str, SourceFile] = field(default_factory=dict)
    mirrors: tuple[str, ...] = ()


def _idx_files(md5s: tuple[str, str, str, str]) -> dict[str, SourceFile]:
    roles = ("train_images", "train_labels", "test_images", "test_labels")
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return {r: SourceFile(n, m) for r, n, m in zip(roles, names, md5s, strict=True)}


SOURCES: dict[str, FileSet] = {
    "mnist": FileSet(
        folder="mnist",
        files=_idx_files((
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        )),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": FileSet(
        folder="fashion-mnist",
        files=_idx_files((
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        )),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    # The binary distributions only (see data/cifar.py); md5s as published on
    # https://www.cs.toronto.edu/~kriz/cifar.html
    "cifar10": FileSet(
        folder="cifar10",
        files={"archive": SourceFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")},
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
    ),
    "cifar100": FileSet(
        folder="cifar100",
        files={"archive": SourceFile("cifar-100-binary.tar.gz",
                                     "03b5dce01913d631647c71ecec9e9cb8")},
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
    ),
}


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The argument, else $TICKETLAB_DATA, else ~/.cache/ticketlab/data."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(ENV_VAR) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def _fileset(name: str) -> FileSet:
    if name not in SOURCES:
        raise TicketlabError(
            f"no files are known for dataset '{name}': choose one of {', '.join(sorted(SOURCES))}"
        )
    return SOURCES[name]


def locate_files(
    name: str, data_dir: str | Path | None = None, download: bool = False
) -> dict[str, Path]:
    """role -> path of each of the dataset's files, downloading missing ones if asked."""
    fileset = _fileset(name)
    root = resolve_data_dir(data_dir)
    home = root / fileset.folder
    found: dict[str, Path] = {}
    for role, f in fileset.files.items():
        for d in (home, root):
            if (d / f.name).is_file():
                found[role] = d / f.name
                break
    missing = [f.name for role, f in fileset.files.items() if role not in found]
    if not missing:
        return found
    if download:
        # Complete the set where part of it already is (the folder, else the flat layout).
        target = root if found and all(p.parent == root for p in found.values()) else home
        return {**found, **_download(name, target)}
    raise TicketlabError(
        f"{name} file(s) {', '.join(missing)} not found in {home} or {root}: pass --data-dir DIR "
        f"for a folder holding them (in DIR/{fileset.folder}/ or DIR/), set {ENV_VAR}=DIR, "
        "or add --download to fetch them"
    )


def download(
    name: str,
    directory: str | Path,
    mirrors: list[str] | tuple[str, ...] | None = None,
    timeout: float = 30,
) -> dict[str, Path]:
    """Fetches the dataset's files missing from `directory`; role -> path of every file."""
    fileset = _fileset(name)
    directory = Path(directory).expanduser()
    mirrors = tuple(fileset.mirrors if mirrors is None else mirrors)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TicketlabError(
            f"cannot create data directory {directory}: {e.strerror or e}; choose another "
            "with --data-dir DIR"
        ) from None
    paths = {}
    for role, f in fileset.files.items():
        dest = directory / f.name
        if not dest.is_file():
            _fetch(name, f, dest, mirrors, timeout)
        paths[role] = dest
    return paths


_download = download  # locate_files has a parameter named `download`


class _WrongMd5(Exception):
    pass


def _fetch(name: str, f: SourceFile, dest: Path, mirrors: tuple[str, ...], timeout: float) -> None:
    reasons = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + f.name
        log.info("downloading %s", url)
        try:
            _fetch_from(url, dest, f.md5, timeout)
            return
        except (OSError, ValueError, http.client.HTTPException, _WrongMd5) as e:
            reasons.append(f"{url}: {_reason(e, timeout)}")
    names = ", ".join(x.name for x in _fileset(name).files.values())
    raise TicketlabError(
        f"could not download {f.name} ({'; '.join(reasons) or 'no mirrors given'}): put the "
        f"{name} files ({names}) into {dest.parent} by hand, or pass --data-dir DIR for a folder "
        "that holds them"
    )


def _fetch_from(url: str, dest: Path, md5: str, timeout: float) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.md5(usedforsecurity=False)
        request = urllib.request.Request(url, headers={"User-Agent": "ticketlab"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise _WrongMd5(f"got a file with md5 {digest.hexdigest()}, expected {md5}")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _reason(e: Exception, timeout: float) -> str:
    if isinstance(e, urllib.error.HTTPError):
        text = f"HTTP {e.code} {e.reason}"
    elif isinstance(e, TimeoutError):
        text = f"timed out after {timeout:g} s"
    elif isinstance(e, urllib.error.URLError):
        text = str(e.reason)
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())
