"""The file objects an ``smb`` mount hands out, raising the VFS vocabulary.

smbclient's buffered reader and writer raise smbprotocol's own errors; a
connection lost mid-transfer must reach the DAV layer as the mount being
unavailable (503), not as an unknown error (500). ``translating`` is the
filesystem's context manager doing that for one path.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any, BinaryIO


class Reader:
    """smbclient's buffered reader, raising the VFS vocabulary (a connection lost
    mid-download is the mount unavailable, not an unknown error)."""

    def __init__(self, raw: BinaryIO, translating: Callable[[], Any]) -> None:
        self._raw = raw
        self._translating = translating

    def read(self, size: int = -1) -> bytes:
        with self._translating():
            return self._raw.read(size)

    def readinto(self, buffer: Any) -> int:
        with self._translating():
            return self._raw.readinto(buffer)

    def seek(self, offset: int, whence: int = 0) -> int:
        with self._translating():
            return self._raw.seek(offset, whence)

    def close(self) -> None:
        with suppress(OSError), self._translating():  # a lost connection closed it anyway
            self._raw.close()

    def __getattr__(self, name: str) -> Any:  # tell, seekable, readable, closed, ...
        return getattr(self._raw, name)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TempWriter:
    """The buffered writer of an upload's temp file. Closing it twice is harmless;
    closing a broken one (a write failed) raises nothing more: it is never published."""

    def __init__(self, raw: BinaryIO, translating: Callable[[], Any]) -> None:
        self._raw = raw
        self._translating = translating
        self._written = 0
        self._broken = False
        self._closed = False

    def write(self, data: bytes) -> int:
        try:
            with self._translating():
                count = self._raw.write(data)
        except BaseException:
            self._broken = True
            raise
        self._written += count
        return count

    def tell(self) -> int:
        return self._written

    @property
    def closed(self) -> bool:
        return self._closed

    def flush(self) -> None:
        with self._translating():
            self._raw.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with self._translating():
                self._raw.close()
        except OSError:
            if not self._broken:
                raise
