"""The backend-independent half of the provider contract.

Shared by every provider filesystem: the error constructor, the atomic
``Upload`` and ``ProviderFileSystem``, the base class that implements the
composite operations (exists, rm, copy, ...) from a provider's primitives.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, BinaryIO

from fsspec import AbstractFileSystem

from mosaic.core import paths
from mosaic.core.errors import DirectoryNotEmptyError, InvalidPathError

Parts = tuple[str, ...]


def oserror(code: int, rel: str) -> OSError:
    """The error for ``code`` (built-in subclass chosen by errno) naming only ``rel``."""
    if code == errno.ENOTEMPTY:
        return DirectoryNotEmptyError(rel)
    return OSError(code, os.strerror(code), rel)


# -- the backend-independent half of the contract --


class Upload:
    """A file being written: invisible until :meth:`commit` publishes it whole.

    With ``autocommit=True`` (fsspec's default) ``close()`` publishes, unless a
    write failed or the ``with`` block raised. With ``autocommit=False`` the
    caller decides with ``commit()`` or ``discard()``, before or after
    ``close()``. An upload dropped unpublished is discarded, never published.
    """

    mode = "wb"

    def __init__(self, raw: BinaryIO, path: str, publish: Callable[[], None],
                 cleanup: Callable[[], None], autocommit: bool) -> None:
        self._raw = raw
        self.path = path
        self._publish = publish
        self._cleanup = cleanup
        self.autocommit = autocommit
        self._closed = False
        self._failed = False
        self._outcome: str | None = None  # "committed" | "discarded"

    @property
    def closed(self) -> bool:
        return self._closed

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError(f"upload of {self.path!r} is closed")
        try:
            return self._raw.write(data)
        except BaseException:
            self._failed = True  # never publish a file with a hole in it
            raise

    def tell(self) -> int:
        return self._raw.tell()

    def flush(self) -> None:
        if self._outcome is None:
            self._raw.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.autocommit:
                self._finish(publish=not self._failed)

    def commit(self) -> None:
        if self._outcome == "discarded":
            raise ValueError(f"upload of {self.path!r} was discarded")
        self._finish(publish=True)

    def discard(self) -> None:
        self._finish(publish=False)

    def _finish(self, publish: bool) -> None:
        if self._outcome is not None:
            return
        self._closed = True
        self._outcome = "committed" if publish else "discarded"
        try:
            if publish:
                self._raw.flush()
                self._publish()
        finally:
            try:
                self._raw.close()
            finally:
                self._cleanup()

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.discard()
        else:
            self.close()

    def __del__(self) -> None:
        if getattr(self, "_outcome", "") is None:
            with suppress(Exception):
                self.discard()


class ProviderFileSystem(AbstractFileSystem):
    """What every provider filesystem does the same way.

    Subclasses supply ``_split`` (validate a relative path into components),
    ``_open_read``, ``_open_write``, ``_rmtree`` and the primitives ``info``,
    ``ls``, ``mkdir``, ``rmdir``, ``rm_file``, ``mv``, ``cp_file``, ``touch``,
    ``set_mtime``.
    """

    cachable = False  # fsspec must never hand one tenant's instance to another
    root_marker = ""
    # Identity, not fsspec's token equality: two trees built alike are still two trees.
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def _split(self, path: str) -> Parts:
        parts = paths.normalize(path)
        return tuple(parts.split("/")) if parts else ()

    def open(self, path: str, mode: str = "rb", block_size: int | None = None,
             cache_options: dict[str, Any] | None = None, compression: str | None = None,
             **kwargs: Any) -> Any:
        """Binary only: "rb" (seekable) or "wb" (an :class:`Upload`)."""
        if compression is not None or mode not in ("rb", "wb"):
            raise ValueError(f"unsupported open mode {mode!r} (use 'rb' or 'wb')")
        parts = self._split(path)
        if mode == "rb":
            # fresh_info: what info(fresh=True) just said of this file; the read
            # then serves exactly that version (its length and ETag already sent)
            return self._open_read(parts, kwargs.get("fresh_info"))
        autocommit = kwargs.pop("autocommit", not self._intrans)
        # size: the whole body's length, announced by the caller (a PUT's
        # Content-Length); a provider may stream it to its store as one request
        upload = self._open_write(parts, autocommit, kwargs.pop("size", None))
        # fsspec's own open() queues every autocommit=False file on the transaction,
        # in or out of one: outside a transaction that list only grows.
        if not autocommit and self._intrans:
            self.transaction.files.append(upload)
        return upload

    def exists(self, path: str, **kwargs: Any) -> bool:
        return self._kind(path) is not None

    def isdir(self, path: str) -> bool:
        return self._kind(path) == "directory"

    def isfile(self, path: str) -> bool:
        return self._kind(path) == "file"

    def _kind(self, path: str) -> str | None:
        try:
            return self.info(path)["type"]
        except (FileNotFoundError, NotADirectoryError):
            return None

    def modified(self, path: str) -> datetime:
        return datetime.fromtimestamp(self.info(path)["mtime"], tz=UTC)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        try:
            self.mkdir(path, create_parents=True)
        except FileExistsError:
            if not exist_ok or not self.isdir(path):
                raise

    def rm(self, path: str, recursive: bool = False, maxdepth: int | None = None) -> None:
        parts = self._split(path)
        if not parts:
            raise InvalidPathError("the root cannot be removed")
        if self.info(path)["type"] == "file":
            self.rm_file(path)
        elif recursive:
            self._rmtree(parts)
        else:
            self.rmdir(path)

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def copy(self, path1: str, path2: str, recursive: bool = True, **kwargs: Any) -> None:
        """Copy a file, or a tree into a new directory (only the directory if not recursive)."""
        src, dst = self._check_transfer(path1, path2)
        if self.info(path1)["type"] == "file":
            self.cp_file(path1, path2)
            return
        self.mkdir("/".join(dst))
        if not recursive:
            return
        for entry in self.ls("/".join(src), detail=True):
            name = entry["name"].rpartition("/")[2]
            self.copy(entry["name"], "/".join((*dst, name)), recursive=True)

    def _check_transfer(self, path1: str, path2: str) -> tuple[Parts, Parts]:
        src, dst = self._split(path1), self._split(path2)
        if not src or not dst:
            raise InvalidPathError("the root cannot be moved or copied")
        if len(dst) > len(src) and dst[: len(src)] == src:
            raise InvalidPathError("a directory cannot be moved or copied into itself")
        return src, dst
