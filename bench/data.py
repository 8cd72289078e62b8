"""The test tree: generated once, then hard-linked into every server's folder.

Every server serves an identical tree (hard links of one source, so the big
files cost their disk space once) plus fresh folders for the write tests::

    read/d1000/file-00000.txt ...   PROPFIND Depth 1 listings
    read/d10000/...
    read/small.bin                  4 KiB GET
    read/big.bin, read/huge.bin     single-stream GET and the RSS check
    write/put4k/                    targets of the concurrent PUTs
    move/src-N/, delete/d-N/        folders of 1,000 files to MOVE and DELETE

The fixture folders are made before the server starts, so servers that cache
directory listings (rclone) see them.
"""

from __future__ import annotations

import os
from pathlib import Path

from .settings import MIB, Settings

LISTED_FILE_SIZE = 1024
FIXTURE_FILE_SIZE = 1024
_BLOCK = os.urandom(MIB)


def listing_dir(count: int) -> str:
    return f"read/d{count}"


def write_file(path: Path, size: int) -> None:
    """A file of ``size`` bytes of incompressible data."""
    with path.open("wb") as out:
        for offset in range(0, size, MIB):
            out.write(_BLOCK[: min(MIB, size - offset)])


def make_folder(path: Path, count: int, size: int) -> None:
    path.mkdir(parents=True)
    data = _BLOCK[:size]
    for index in range(count):
        (path / f"file-{index:05d}.txt").write_bytes(data)


def make_source(base: Path, settings: Settings) -> Path:
    """The read-only tree every server gets a hard-linked copy of."""
    read = base / "read"
    for count in settings.listing_sizes:
        make_folder(base / listing_dir(count), count, LISTED_FILE_SIZE)
    write_file(read / "small.bin", settings.small_size)
    write_file(read / "big.bin", settings.big_size)
    write_file(read / "huge.bin", settings.huge_size)
    return base


def link_tree(source: Path, target: Path) -> None:
    """Copy the folder structure of ``source`` to ``target``, hard-linking the files."""
    for folder, _dirs, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            os.link(Path(folder) / name, target / relative / name)


def prepare_served(target: Path, source: Path, settings: Settings) -> None:
    """Fill a server's (empty or missing) folder with the tree and fresh fixtures."""
    link_tree(source, target)
    (target / "write" / "put4k").mkdir(parents=True)
    for run in range(settings.tree_runs):
        make_folder(target / "move" / f"src-{run}", settings.tree_files, FIXTURE_FILE_SIZE)
        make_folder(target / "delete" / f"d-{run}", settings.tree_files, FIXTURE_FILE_SIZE)
