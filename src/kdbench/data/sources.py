"""Where a dataset's files come from: a folder you name, the package, a cache, the system, or a
checksum-verified download.

Search order for an IDX dataset: `--data-dir`; the copy bundled in the package (MNIST); the cache
folder (`$KDBENCH_DATA/<name>`, default `~/.cache/kdbench/<name>`); a system package's folder
(Debian's `dataset-fashion-mnist` installs `/usr/share/datasets/fashion-mnist`); and, last, a
download into the cache (pooch), accepted only if every file matches its pinned SHA-256.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kdbench.errors import DataError


@dataclass(frozen=True)
class Source:
    base_url: str
    gz_sha256: dict[str, str]  # file name (with .gz) -> SHA-256 of the file as downloaded
    system: tuple[str, ...] = ()  # folders a system package installs the files into


IDX_SOURCES: dict[str, Source] = {
    "fashion-mnist": Source(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": (
                "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc"
            ),
            "train-labels-idx1-ubyte.gz": (
                "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf"
            ),
        },
        ("/usr/share/datasets/fashion-mnist",),
    ),
    "kmnist": Source(
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        {
            "train-images-idx3-ubyte.gz": (
                "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"
            ),
            "train-labels-idx1-ubyte.gz": (
                "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"
            ),
        },
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("KDBENCH_DATA") or Path.home() / ".cache" / "kdbench")


def _complete(folder: Path, stems: list[str]) -> bool:
    return all((folder / f"{s}.gz").is_file() or (folder / s).is_file() for s in stems)


def locate(name: str, data_dir: str | None, stems: list[str]) -> Path:
    """The folder holding dataset `name`'s files, downloading them into the cache if needed."""
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DataError(f"--data-dir {data_dir} is not a folder; give the folder of IDX files")
        return folder
    if name == "mnist":
        return Path(str(resources.files("kdbench") / "data" / "mnist"))
    source = IDX_SOURCES[name]
    cached = cache_root() / name
    for folder in (cached, *map(Path, source.system)):
        if _complete(folder, stems):
            return folder
    return download(name, source, cached)


def checked_fetch(fetch: Callable[[], str], name: str, file: str, fix: str) -> str:
    """A pooch download, its failures as one line: unreachable, or not the pinned SHA-256 (pooch
    keeps no such file). `fix`: where the user can put the files instead."""
    import requests  # pooch's transport: only when a download is needed

    try:
        return fetch()
    except (OSError, requests.RequestException) as exc:
        raise DataError(f"cannot download {name} ({file}: {exc}); {fix}") from None
    except ValueError as exc:  # pooch: the file's hash is not the pinned one
        if "hash" not in str(exc):
            raise
        raise DataError(
            f"downloaded {file} fails its SHA-256 check; nothing was kept: retry, or {fix}"
        ) from None


def download(name: str, source: Source, folder: Path) -> Path:
    """Fetch every file with pooch into a temporary folder, each checked against its pinned
    SHA-256 (pooch keeps no file that fails), and only then move them all into `folder`: a
    failed or tampered download leaves nothing behind, not even the files that passed."""
    import pooch  # only when a download is needed

    print(f"kdbench: downloading {name} into {folder}", file=sys.stderr)
    pooch.get_logger().setLevel("WARNING")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}-") as tmp:
        registry = {file: f"sha256:{sha}" for file, sha in source.gz_sha256.items()}
        fetcher = pooch.create(path=tmp, base_url=source.base_url, registry=registry)
        fix = f"put its four IDX files in {folder} or pass --data-dir"
        for file in registry:
            checked_fetch(lambda file=file: fetcher.fetch(file), name, file, fix)
        folder.mkdir(exist_ok=True)
        for file in registry:
            os.replace(Path(tmp) / file, folder / file)
    return folder
