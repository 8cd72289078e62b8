"""Reading a config file safely: the bytes of a regular file, within a size, as UTF-8 text.

A config is written by an admin, but it is also what a compromised account or
a careless copy-paste writes over a live server, which reloads it at once. So
the file must be a regular file (a FIFO would block the reader, ``/dev/zero``
fill its memory) of at most ``MAX_FILE_BYTES``, and valid UTF-8, else the line
and column of the first bad byte is reported. What YAML may make of the text
is bounded by :mod:`mosaic.config.yaml_plain`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: Far above any real config (1,000 tenants x 5 mounts, 3 users each: 1.25 MB), far below
#: trouble: a served config costs ~30 bytes of memory per byte of YAML (bench/tenants.py).
MAX_FILE_BYTES = 16 * 2**20


class FileProblem(Exception):
    """The file cannot be read as config text; ``line`` and ``column`` are 1-based, 0 if none."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


def read_text(path: Path) -> str:
    """The file's text, refusing what is not a regular, bounded, UTF-8 file."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileProblem(f"cannot read config: {exc.strerror}") from None
    try:
        _check_regular(os.fstat(fd))
    except FileProblem:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file:
        try:
            raw = file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise FileProblem(f"cannot read config: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:  # it grew after fstat
        raise FileProblem(_too_big(len(raw)))
    return decode(raw)


def _check_regular(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise FileProblem("cannot read config: not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise FileProblem(_too_big(info.st_size))


def _too_big(size: int) -> str:
    return (f"config file is {size:,} bytes; at most {MAX_FILE_BYTES:,} "
            f"({MAX_FILE_BYTES // 2**20} MiB) are read")


def decode(raw: bytes) -> str:
    """UTF-8 text (one leading BOM dropped), or a problem at the first bad byte."""
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start].decode("utf-8")
        line, column = position(before, len(before))
        raise FileProblem(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot start "
                          "or continue a character here", line, column) from None


def position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character ``index`` of ``text``."""
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1
