"""``memory``: a private in-process tree, for tests and scratch mounts.

Every ``build()`` gets its own store (fsspec's MemoryFileSystem keeps one store
per process, which would let tenants see each other's files). ETags come from
a per-store version counter bumped on every write.

This module also holds the half of the provider contract that does not depend
on the backend (:class:`ProviderFileSystem`, :class:`Upload`); ``local`` builds
on it too.
"""

from __future__ import annotations

import errno
import io
import itertools
import os
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from fsspec import AbstractFileSystem
from pydantic import BaseModel, ConfigDict

from mosaic.providers.base import BuildContext, Capabilities
from mosaic.vfs import paths
from mosaic.vfs.errors import DirectoryNotEmptyError, InvalidPathError

CAPABILITIES = Capabilities(
    empty_directories=True,
    atomic_rename=True,
    server_side_copy=True,
    mtime_precision=1e-6,
    settable_mtime=True,
)

Parts = tuple[str, ...]


class Options(BaseModel):
    """No options: the tree lives and dies with the process."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def build(options: Options, context: BuildContext) -> MemoryFileSystem:
    return MemoryFileSystem()


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
            return self._open_read(parts)
        autocommit = kwargs.pop("autocommit", not self._intrans)
        upload = self._open_write(parts, autocommit)
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


# -- the memory tree --


@dataclass(eq=False)
class _File:
    data: bytes
    mtime: float
    version: int


@dataclass(eq=False)
class _Dir:
    mtime: float
    version: int
    children: dict[str, _File | _Dir] = field(default_factory=dict)


def _entry(rel: str, node: _File | _Dir) -> dict[str, Any]:
    is_dir = isinstance(node, _Dir)
    return {
        "name": rel,
        "type": "directory" if is_dir else "file",
        "size": 0 if is_dir else len(node.data),
        "mtime": node.mtime,
        "etag": f"{node.version:x}",
    }


class MemoryFileSystem(ProviderFileSystem):
    """A private tree in this process; one lock serialises all changes."""

    protocol = "mosaic-memory"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._versions = itertools.count(1)
        self._root = _Dir(time.time(), next(self._versions))

    def _node(self, parts: Parts) -> _File | _Dir:
        node: _File | _Dir = self._root
        for name in parts:
            if not isinstance(node, _Dir):
                raise oserror(errno.ENOTDIR, "/".join(parts))
            if name not in node.children:
                raise oserror(errno.ENOENT, "/".join(parts))
            node = node.children[name]
        return node

    def _dir(self, parts: Parts, rel: str) -> _Dir:
        node = self._node(parts)
        if not isinstance(node, _Dir):
            raise oserror(errno.ENOTDIR, rel)
        return node

    def _parent(self, parts: Parts) -> _Dir:
        if not parts:
            raise InvalidPathError("the root cannot be the target of this operation")
        return self._dir(parts[:-1], "/".join(parts))

    def _attach(self, parts: Parts, node: _File | _Dir) -> None:
        parent = self._parent(parts)
        parent.children[parts[-1]] = node
        parent.mtime, parent.version = time.time(), next(self._versions)

    def _detach(self, parts: Parts) -> _File | _Dir:
        node = self._node(parts)
        parent = self._parent(parts)
        del parent.children[parts[-1]]
        parent.mtime, parent.version = time.time(), next(self._versions)
        return node

    # -- reading ------------------------------------------------------------------------

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        parts = self._split(path)
        with self._lock:
            return _entry("/".join(parts), self._node(parts))

    def ls(self, path: str = "", detail: bool = True, **kwargs: Any) -> list[Any]:
        """Entries of a directory; a file raises NotADirectoryError."""
        parts = self._split(path)
        with self._lock:
            node = self._dir(parts, "/".join(parts))
            entries = [_entry("/".join((*parts, n)), c) for n, c in node.children.items()]
        return entries if detail else [e["name"] for e in entries]

    def _open_read(self, parts: Parts) -> BinaryIO:
        with self._lock:
            node = self._node(parts)
        if isinstance(node, _Dir):
            raise oserror(errno.EISDIR, "/".join(parts))
        return io.BytesIO(node.data)  # bytes are immutable: a snapshot for free

    # -- writing ------------------------------------------------------------------------

    def _open_write(self, parts: Parts, autocommit: bool) -> Upload:
        self._check_writable(parts)
        buffer = io.BytesIO()
        return Upload(buffer, "/".join(parts), lambda: self._put(parts, buffer.getvalue()),
                      lambda: None, autocommit)

    def _check_writable(self, parts: Parts) -> None:
        if not parts:
            raise oserror(errno.EISDIR, "")
        with self._lock:
            if isinstance(self._parent(parts).children.get(parts[-1]), _Dir):
                raise oserror(errno.EISDIR, "/".join(parts))

    def _put(self, parts: Parts, data: bytes) -> None:
        with self._lock:
            self._check_writable(parts)  # again: the tree may have changed meanwhile
            self._attach(parts, _File(data, time.time(), next(self._versions)))

    def mkdir(self, path: str, create_parents: bool = False, **kwargs: Any) -> None:
        parts = self._split(path)
        with self._lock:
            if create_parents:
                self._ensure_dirs(parts[:-1])
            if not parts or parts[-1] in self._parent(parts).children:
                raise oserror(errno.EEXIST, "/".join(parts))
            self._attach(parts, _Dir(time.time(), next(self._versions)))

    def _ensure_dirs(self, parts: Parts) -> None:
        for depth in range(1, len(parts) + 1):
            if parts[depth - 1] not in self._parent(parts[:depth]).children:
                self._attach(parts[:depth], _Dir(time.time(), next(self._versions)))

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        parts = self._split(path)
        with self._lock:
            if truncate or not self.exists(path):
                self._put(parts, b"")
            else:
                self._node(parts).mtime = time.time()

    def set_mtime(self, path: str, mtime: float) -> None:
        parts = self._split(path)
        with self._lock:
            self._node(parts).mtime = float(mtime)

    # -- removing -----------------------------------------------------------------------

    def rmdir(self, path: str) -> None:
        parts = self._split(path)
        with self._lock:
            if self._dir(parts, "/".join(parts)).children:
                raise oserror(errno.ENOTEMPTY, "/".join(parts))
            self._detach(parts)

    def rm_file(self, path: str) -> None:
        parts = self._split(path)
        with self._lock:
            if isinstance(self._node(parts), _Dir):
                raise oserror(errno.EISDIR, "/".join(parts))
            self._detach(parts)

    def _rmtree(self, parts: Parts) -> None:
        with self._lock:
            self._detach(parts)

    # -- moving and copying ---------------------------------------------------------------

    def mv(self, path1: str, path2: str, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        """Rename with POSIX semantics: replaces a file, or an empty directory."""
        src, dst = self._check_transfer(path1, path2)
        with self._lock:
            node = self._node(src)
            target = self._parent(dst).children.get(dst[-1])
            if node is not target:
                _check_replaceable(node, target, "/".join(dst))
                self._attach(dst, self._detach(src))

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        src, dst = self._check_transfer(path1, path2)
        with self._lock:
            node = self._node(src)
            if isinstance(node, _Dir):
                raise oserror(errno.EISDIR, "/".join(src))
            self._put(dst, node.data)


def _check_replaceable(node: _File | _Dir, target: _File | _Dir | None, rel: str) -> None:
    """POSIX rename rules for an existing target."""
    if isinstance(target, _Dir) and isinstance(node, _File):
        raise oserror(errno.EISDIR, rel)
    if isinstance(target, _File) and isinstance(node, _Dir):
        raise oserror(errno.ENOTDIR, rel)
    if isinstance(target, _Dir) and target.children:
        raise oserror(errno.ENOTEMPTY, rel)
