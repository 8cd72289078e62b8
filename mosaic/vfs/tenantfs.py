"""A tenant's whole tree as one fsspec filesystem, seen through one user's rights.

The DAV layer, tests and future sync agents all talk to this one interface.
Paths are virtual and relative to the tenant root ("" or "/" is the root).
Mount points show up as folders in their parent's listing whatever the parent
backend holds; an operation under a broken mount fails for that subtree only.
Permissions are enforced here so that every protocol gets them.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fsspec import AbstractFileSystem

from mosaic.core import names, paths
from mosaic.core.errors import AccessDeniedError, InvalidPathError, ReadOnlyError, SameFileError
from mosaic.vfs import fit
from mosaic.vfs.mounts import MountEntry, MountTable
from mosaic.vfs.permissions import PermissionView
from mosaic.vfs.quota import Limit, QuotaWriter, check_size

COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class _Side:
    """One end of a move or copy, resolved."""

    vpath: str
    entry: MountEntry
    fs: AbstractFileSystem
    rel: str


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
        # the store's naming rules, before it is asked (or found down)
        fit.check_path(rel, entry.capabilities, "/" + entry.path)
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
        fit.check_path(rel, entry.capabilities, "/" + entry.path)
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
        """Set a file's or folder's time; on a store that cannot keep one
        (``settable_mtime`` False) the time is ignored, the path still checked."""
        vpath, entry, fs, rel = self._resolve(path)
        self._check_write(vpath, entry)
        if entry.capabilities.settable_mtime:
            fs.set_mtime(rel, mtime)
        else:
            fs.info(rel)  # a missing path is still a FileNotFoundError

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        vpath, entry, fs, rel = self._resolve(path)
        self._check_writable_target(vpath, entry)
        fs.touch(rel, truncate=truncate, **kwargs)

    # -- move and copy -------------------------------------------------------------

    def same_entry(self, path1: str, path2: str) -> bool:
        """Two spellings of one file or folder: another case of its name in a mount
        whose names are case-insensitive (``report.txt`` and ``Report.txt`` on SMB)."""
        entry1, rel1 = self.table.resolve(paths.normalize(path1))
        entry2, rel2 = self.table.resolve(paths.normalize(path2))
        return (entry1 is entry2 and entry1.capabilities.case_insensitive_names
                and names.case_key(rel1) == names.case_key(rel2))

    def check_transfer(self, path1: str, path2: str, *, move: bool,
                       recursive: bool = True) -> None:
        """Refuse a move or copy of ``path1`` to ``path2`` that cannot be done whole:
        rights, mount points, a copy onto itself, a folder into itself, and names the
        destination's store cannot hold (a reserved name anywhere in the tree, two
        names that would be one there). Nothing is written; an existing destination
        is not looked at (WebDAV deletes it first)."""
        self._transfer_plan(path1, path2, move, recursive)

    def _transfer_plan(self, path1: str, path2: str, move: bool,
                       recursive: bool = True) -> tuple[_Side, _Side]:
        src, dst = _Side(*self._resolve(path1)), _Side(*self._resolve(path2))
        if move:
            self._check_not_virtual(src.vpath)
            self._check_write(src.vpath, src.entry, recursive=True)
        elif self.permissions.weakest_below(src.vpath) == "none":
            raise AccessDeniedError("/" + src.vpath)
        self._check_writable_target(dst.vpath, dst.entry)
        if self.same_entry(src.vpath, dst.vpath):
            if not move:
                raise SameFileError("/" + dst.vpath, "/" + dst.entry.path)
            return src, dst  # a case-only rename: the store's own
        self._check_not_into_itself(src, dst)
        if recursive and not self._names_fit(src, dst):
            fit.check_tree(functools.partial(self._walk, src.vpath), dst.entry.capabilities,
                           "/" + dst.entry.path)
        return src, dst

    def _names_fit(self, src: _Side, dst: _Side) -> bool:
        """The source's names fit the destination's store without a look at them:
        they are stored under its rules already (other mounts below the source may not)."""
        if self.table.has_mount_below(src.vpath):
            return False
        return src.entry is dst.entry or fit.rules_hold(src.entry.capabilities,
                                                        dst.entry.capabilities)

    def _check_not_into_itself(self, src: _Side, dst: _Side) -> None:
        if src.entry is dst.entry:
            key = names.case_key if src.entry.capabilities.case_insensitive_names else str
            inner, outer = key(dst.rel), key(src.rel)
        else:  # another mount below the source
            inner, outer = paths.match_key(dst.vpath), paths.match_key(src.vpath)
        if inner != outer and paths.is_within(inner, outer):
            raise InvalidPathError("a directory cannot be moved or copied into itself")

    def _walk(self, top: str) -> Iterator[tuple[str, list[str]]]:
        """(folder, member names) of every folder from ``top`` down (a file: nothing)."""
        if not self.isdir(top):
            return
        pending = [top]
        while pending:
            folder = pending.pop()
            listed = self.ls(folder, detail=True)
            yield folder, [paths.basename(item["name"]) for item in listed]
            pending += [item["name"] for item in listed if item["type"] == "directory"]

    def mv(self, path1: str, path2: str, recursive: bool = True, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        """Natively within a mount whose store can rename (``atomic_rename``) or copy on
        its side (``server_side_copy``: it copies and deletes there); else streamed
        through here, then the source removed."""
        src, dst = self._transfer_plan(path1, path2, move=True)
        caps = src.entry.capabilities
        native = caps.atomic_rename or caps.server_side_copy
        # a case-only rename is always the store's: a copy onto itself would lose it
        if src.entry is dst.entry and (native or self.same_entry(src.vpath, dst.vpath)):
            src.fs.mv(src.rel, dst.rel)
            return
        self._copy_whole(src.vpath, dst.vpath)
        src.fs.rm(src.rel, recursive=True)
        if src.entry.usage is not None:
            src.entry.usage.forget()

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        self.copy(path1, path2, recursive=False)

    def copy(self, path1: str, path2: str, recursive: bool = True, **kwargs: Any) -> None:
        """Natively within a mount whose store copies on its side
        (``server_side_copy``); else streamed through here."""
        src, dst = self._transfer_plan(path1, path2, move=False, recursive=recursive)
        is_dir = self.isdir(src.vpath)
        native = src.entry is dst.entry and src.entry.capabilities.server_side_copy
        if native and not self.table.has_mount_below(src.vpath):
            self._native_copy(dst.vpath, dst.entry, src.fs, src.rel, dst.rel, is_dir, recursive)
            return
        self._copy_whole(src.vpath, dst.vpath, recursive=recursive)

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

    def check_write(self, path: str) -> None:
        """Raise unless the user may change ``path``: its content, and what others see of
        it beside the content (a WebDAV lock, dead properties)."""
        vpath = paths.normalize(path)
        self._check_write(vpath, self.table.resolve(vpath)[0])

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
