"""A tenant's whole tree as one fsspec filesystem, seen through one user's rights.

The DAV layer, tests and future sync agents all talk to this one interface.
Paths are virtual and relative to the tenant root ("" or "/" is the root).
Mount points show up as folders in their parent's listing whatever the parent
backend holds; an operation under a broken mount fails for that subtree only.
Permissions are enforced here so that every protocol gets them.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

from fsspec import AbstractFileSystem

from mosaic.vfs import paths
from mosaic.vfs.errors import AccessDeniedError, ReadOnlyError
from mosaic.vfs.mounts import MountEntry, MountTable
from mosaic.vfs.permissions import PermissionView
from mosaic.vfs.quota import Limit, QuotaWriter, check_size

COPY_CHUNK = 1024 * 1024


def _dir_info(name: str, mtime: float = 0.0) -> dict[str, Any]:
    return {"name": name, "type": "directory", "size": 0, "mtime": mtime}


def _names(listed: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str]]:
    """Each backend entry with its own name (backends give paths of their own)."""
    for item in listed:
        yield item, paths.basename(item["name"].rstrip("/"))


class TenantFileSystem(AbstractFileSystem):
    cachable = False
    protocol = "mosaic"
    root_marker = ""

    def __init__(self, table: MountTable, permissions: PermissionView, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table = table
        self.permissions = permissions

    @property
    def tenant(self) -> str:
        return self.table.tenant

    # -- resolution and checks ------------------------------------------------

    def _resolve(self, path: str) -> tuple[str, MountEntry, AbstractFileSystem, str]:
        vpath = paths.normalize(path)
        entry, rel = self.table.resolve(vpath)
        return vpath, entry, entry.filesystem(self.tenant), rel

    def _check_read(self, vpath: str) -> None:
        if not self.permissions.can_read(vpath):
            raise AccessDeniedError("/" + vpath)

    def _check_visible(self, vpath: str) -> None:
        if not self.permissions.can_traverse(vpath):
            # Hidden entries look absent, so their names do not leak.
            raise FileNotFoundError(2, "No such file or directory", "/" + vpath)

    def _check_write(self, vpath: str, entry: MountEntry, recursive: bool = False) -> None:
        if entry.read_only:
            raise ReadOnlyError("/" + vpath)
        allowed = (self.permissions.weakest_below(vpath) if recursive
                   else self.permissions.access(vpath))
        if allowed != "write":
            raise AccessDeniedError("/" + vpath)

    def _check_not_virtual(self, vpath: str) -> None:
        """Mount points, the folders leading to them and the root cannot be
        replaced, moved or deleted: they are configuration, not content."""
        if not vpath or self.table.is_virtual(vpath):
            raise AccessDeniedError("/" + vpath)

    def _check_writable_target(self, vpath: str, entry: MountEntry) -> None:
        self._check_not_virtual(vpath)
        self._check_write(vpath, entry)

    # -- reading ----------------------------------------------------------------

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        vpath, entry, fs, rel = self._resolve(path)
        self._check_visible(vpath)
        virtual = self.table.virtual_children(vpath)
        try:
            listed = fs.ls(rel, detail=True)
        except FileNotFoundError:
            if not virtual:
                raise
            listed = []
        result = self._merge_listing(vpath, entry, listed, virtual)
        return result if detail else [item["name"] for item in result]

    def _merge_listing(self, vpath: str, entry: MountEntry, listed: list[dict[str, Any]],
                       virtual: dict[str, MountEntry | None]) -> list[dict[str, Any]]:
        shadowed = {paths.match_key(name) for name in virtual}
        items = [{**item, "name": paths.join(vpath, name)}
                 for item, name in _names(listed)
                 if not shadowed or paths.match_key(name) not in shadowed]
        items += [_dir_info(paths.join(vpath, name)) for name in virtual]
        if not self.permissions.rules_below(vpath):
            # Every child inherits this folder's access, and no rule below
            # reveals anything: one decision for all (10,000 lookups otherwise).
            return items if self.permissions.can_read(vpath) else []
        return [item for item in items if self.permissions.can_traverse(item["name"])]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        vpath = paths.normalize(path)
        self._check_visible(vpath)
        entry, rel = self.table.resolve(vpath)
        if entry.path == vpath and entry.path and entry.fs is None:
            return _dir_info(vpath)  # a broken mount still shows as a folder
        fs = entry.filesystem(self.tenant)
        try:
            found = fs.info(rel, **kwargs)  # fresh=True: past any cache of the mount
        except FileNotFoundError:
            if self.table.is_virtual(vpath):
                return _dir_info(vpath)
            raise
        return {**found, "name": vpath}

    def open(self, path: str, mode: str = "rb", block_size: int | None = None,
             **kwargs: Any) -> Any:
        vpath, entry, fs, rel = self._resolve(path)
        if "r" in mode:
            self._check_visible(vpath)
            self._check_read(vpath)
            return fs.open(rel, mode, **kwargs)
        self._check_writable_target(vpath, entry)
        limits = self._limits(entry)
        if not limits:
            return fs.open(rel, mode, **kwargs)
        replaced = _size_or_zero(fs, rel)
        if kwargs.get("size") is not None:  # announced: refuse before reading a byte
            check_size("/" + vpath, kwargs["size"], replaced, limits)
        target = fs.open(rel, mode, **kwargs)
        if kwargs.get("autocommit", True):
            return target  # published as written: nothing to take back
        return QuotaWriter(target, "/" + vpath, entry.usage, limits, replaced)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        with self.open(path, "rb") as handle:
            if start:
                handle.seek(start)
            return handle.read(-1 if end is None else end - (start or 0))

    # -- writing ----------------------------------------------------------------

    def mkdir(self, path: str, create_parents: bool = False, **kwargs: Any) -> None:
        vpath, entry, fs, rel = self._resolve(path)
        if vpath and self.table.is_virtual(vpath):
            raise FileExistsError(17, "File exists", "/" + vpath)
        self._check_writable_target(vpath, entry)
        parent_is_virtual = self.table.is_virtual(paths.parent(vpath))
        fs.mkdir(rel, create_parents=create_parents or parent_is_virtual)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        vpath = paths.normalize(path)
        if self.exists(vpath):
            if exist_ok and self.isdir(vpath):
                return
            raise FileExistsError(17, "File exists", "/" + vpath)
        self.mkdir(vpath, create_parents=True)

    def rmdir(self, path: str) -> None:
        vpath, entry, fs, rel = self._resolve(path)
        self._check_not_virtual(vpath)
        self._check_write(vpath, entry)
        fs.rmdir(rel)

    def rm_file(self, path: str) -> None:
        vpath, entry, fs, rel = self._resolve(path)
        self._check_not_virtual(vpath)
        self._check_write(vpath, entry)
        freed = _size_or_zero(fs, rel) if self._limits(entry) else 0
        fs.rm_file(rel)
        if entry.usage is not None:
            entry.usage.committed(-freed)

    def rm(self, path: str, recursive: bool = False, maxdepth: int | None = None) -> None:
        vpath, entry, fs, rel = self._resolve(path)
        self._check_not_virtual(vpath)
        self._check_write(vpath, entry, recursive=recursive)
        fs.rm(rel, recursive=recursive)
        if entry.usage is not None:
            entry.usage.forget()  # a tree of unknown size left

    def set_mtime(self, path: str, mtime: float) -> None:
        vpath, entry, fs, rel = self._resolve(path)
        self._check_write(vpath, entry)
        fs.set_mtime(rel, mtime)

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        vpath, entry, fs, rel = self._resolve(path)
        self._check_writable_target(vpath, entry)
        fs.touch(rel, truncate=truncate, **kwargs)

    # -- move and copy -------------------------------------------------------------

    def mv(self, path1: str, path2: str, recursive: bool = True, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        src, src_entry, src_fs, src_rel = self._resolve(path1)
        dst, dst_entry, _dst_fs, dst_rel = self._resolve(path2)
        self._check_not_virtual(src)
        self._check_write(src, src_entry, recursive=True)
        self._check_writable_target(dst, dst_entry)
        if src_entry is dst_entry:
            src_fs.mv(src_rel, dst_rel)
            return
        self._copy_whole(src, dst)
        src_fs.rm(src_rel, recursive=True)
        if src_entry.usage is not None:
            src_entry.usage.forget()

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        self.copy(path1, path2, recursive=False)

    def copy(self, path1: str, path2: str, recursive: bool = True, **kwargs: Any) -> None:
        src, src_entry, src_fs, src_rel = self._resolve(path1)
        dst, dst_entry, _dst_fs, dst_rel = self._resolve(path2)
        if self.permissions.weakest_below(src) == "none":
            raise AccessDeniedError("/" + src)
        self._check_writable_target(dst, dst_entry)
        is_dir = self.isdir(src)
        if src_entry is dst_entry and not self.table.has_mount_below(src):
            self._native_copy(dst, dst_entry, src_fs, src_rel, dst_rel, is_dir, recursive)
            return
        self._copy_whole(src, dst, recursive=recursive)

    def _native_copy(self, dst: str, entry: MountEntry, fs: AbstractFileSystem, src_rel: str,
                     dst_rel: str, is_dir: bool, recursive: bool) -> None:
        """A copy inside one mount, by the backend; with a quota, its size is
        checked first (a server-side copy has no stream to count)."""
        limits = self._limits(entry)
        size = (_tree_size(fs, src_rel) if is_dir else _size_or_zero(fs, src_rel)) \
            if limits else 0
        replaced = _size_or_zero(fs, dst_rel) if limits and not is_dir else 0
        check_size("/" + dst, size, replaced, limits)
        if is_dir:
            fs.copy(src_rel, dst_rel, recursive=recursive)
        else:
            fs.cp_file(src_rel, dst_rel)
        if entry.usage is not None:
            entry.usage.committed(size - replaced)

    def _copy_whole(self, src: str, dst: str, recursive: bool = True) -> None:
        """Copy across mounts; on failure remove what was copied, so a client
        never finds half a folder at the destination (the source is untouched)."""
        existed = self.exists(dst)
        try:
            self._copy_across(src, dst, recursive=recursive)
        except BaseException:
            if not existed:
                with contextlib.suppress(Exception):
                    self.rm(dst, recursive=True)
            raise

    def _copy_across(self, src: str, dst: str, recursive: bool = True) -> None:
        """Stream a file or tree between mounts (no native operation spans two)."""
        if not self.isdir(src):
            self._stream_file(src, dst)
            return
        self.mkdir(dst)
        if not recursive:
            return
        for item in self.ls(src, detail=True):
            child = paths.basename(item["name"])
            self._copy_across(item["name"], paths.join(dst, child))

    def _stream_file(self, src: str, dst: str) -> None:
        with self.open(src, "rb") as reader:
            writer = self.open(dst, "wb", autocommit=False)
            try:
                shutil.copyfileobj(reader, writer, COPY_CHUNK)
                writer.close()
                writer.commit()
            except BaseException:
                writer.discard()
                raise

    # -- quota ------------------------------------------------------------------

    def _limits(self, entry: MountEntry) -> list[Limit]:
        """The quotas a write into ``entry`` must stay within."""
        if entry.usage is None:
            return []
        limits = []
        if entry.quota is not None:
            limits.append(Limit("mount", entry.quota, (entry.usage,)))
        if self.table.quota is not None:
            usages = tuple(e.usage for e in self.table.entries if e.usage is not None)
            limits.append(Limit("tenant", self.table.quota, usages))
        return limits

    def space(self, path: str) -> tuple[int, int] | None:
        """(used, available) bytes at a folder (RFC 4331): the tightest configured
        quota, bounded by the volume's free space when the backend knows it;
        else the volume's figures; None when nothing limits the store."""
        _vpath, entry, fs, _rel = self._resolve(path)
        volume = fs.space() if entry.capabilities.volume_space else None
        limits = self._limits(entry)
        if not limits:
            return volume
        tightest = min(limits, key=Limit.available)
        available = tightest.available()
        if volume is not None:
            available = min(available, volume[1])
        return tightest.used(), available

    def mount_of(self, path: str) -> MountEntry:
        return self.table.resolve(paths.normalize(path))[0]

    # -- identity ---------------------------------------------------------------

    def ref_key(self, path: str) -> str:
        return self.table.ref_key(paths.normalize(path))


def _size_or_zero(fs: AbstractFileSystem, rel: str) -> int:
    """The size of the file at ``rel``; 0 if there is none (or it is a folder)."""
    try:
        info = fs.info(rel)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    return int(info.get("size") or 0) if info.get("type") == "file" else 0


def _tree_size(fs: AbstractFileSystem, rel: str) -> int:
    return sum(int(info.get("size") or 0)
               for info in fs.find(rel, detail=True, withdirs=False).values())
