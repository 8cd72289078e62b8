"""``memory``: a private in-process tree, for tests and scratch mounts.

Every ``build()`` gets its own store (fsspec's MemoryFileSystem keeps one store
per process, which would let tenants see each other's files). ETags come from
a per-store version counter bumped on every write.
"""

from __future__ import annotations

import errno
import io
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict

from mosaic.core.capabilities import BuildContext, Capabilities
from mosaic.core.errors import InvalidPathError
from mosaic.providers.common import Parts, ProviderFileSystem, Upload, oserror

CAPABILITIES = Capabilities(
    empty_directories=True,
    atomic_rename=True,
    server_side_copy=True,
    mtime_precision=1e-6,
    settable_mtime=True,
)



class Options(BaseModel):
    """No options: the tree lives and dies with the process."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def build(options: Options, context: BuildContext) -> MemoryFileSystem:
    return MemoryFileSystem()


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

    def _open_read(self, parts: Parts, fresh_info: dict[str, Any] | None = None) -> BinaryIO:
        with self._lock:
            node = self._node(parts)
        if isinstance(node, _Dir):
            raise oserror(errno.EISDIR, "/".join(parts))
        return io.BytesIO(node.data)  # bytes are immutable: a snapshot for free

    # -- writing ------------------------------------------------------------------------

    def _open_write(self, parts: Parts, autocommit: bool, size: int | None = None) -> Upload:
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
