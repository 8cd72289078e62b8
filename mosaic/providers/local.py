"""``local``: a directory of the server's disk, served as a tenant boundary.

Why a path cannot leave the root:

* :func:`split_path` refuses "..", NUL, backslashes, drive letters and
  still-percent-encoded dots, slashes and backslashes before any syscall;
* every operation walks down from the root one component at a time with
  ``openat(O_DIRECTORY | O_NOFOLLOW)`` (``os.open(..., dir_fd=...)``) and acts on
  the last component relative to its parent's descriptor with calls that never
  follow a symlink (``O_NOFOLLOW``, ``follow_symlinks=False``, rename, unlink).
  A symlink swapped in concurrently therefore makes the kernel fail the call; it
  is never followed. An open upload keeps its directory's descriptor, so it
  publishes where it was opened even if the path is re-pointed meanwhile.

Symlinks are refused everywhere with ``InvalidPathError``, also those pointing
inside the root, and hidden from listings, like FIFOs, sockets and devices.
``rm(recursive=True)`` deletes links inside the tree without following them.
Hard links to outside files look like ordinary files: keeping them out of a
served directory is the administrator's job.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, field_validator

from mosaic.core import paths
from mosaic.core.capabilities import BuildContext, Capabilities
from mosaic.core.errors import (
    CrossDeviceError,
    InvalidPathError,
    MountUnavailableError,
    ReadOnlyError,
)
from mosaic.core.health import HEALTH
from mosaic.providers.common import Parts, ProviderFileSystem, Upload, oserror
from mosaic.providers.upload_register import UploadRegister, lock_for_writing, remove_if_abandoned

CAPABILITIES = Capabilities(
    empty_directories=True,
    atomic_rename=True,
    server_side_copy=True,
    mtime_precision=1e-9,
    settable_mtime=True,
    volume_space=True,
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in the root must not hang a worker thread.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK again: a FIFO swapped in after the check fails (ENXIO) instead of hanging.
_TOUCH_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_COPY_CHUNK = 1024 * 1024

#: Prefix of in-flight upload files: never listed, never accepted in a path.
TEMP_PREFIX = ".~mosaic-upload-"
#: An upload temp file untouched this long belongs to a crashed process.
STALE_UPLOAD_S = 24 * 3600
# The DAV layer decodes a URL once; what is still encoded was encoded twice on purpose.
_ENCODED = re.compile(r"%(?:2e|2f|5c|00)", re.IGNORECASE)
_DRIVE = re.compile(r"[A-Za-z]:")
# os.fsdecode's escapes for bytes that are not UTF-8: no URL can name such a file.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str
    create: bool = True

    @field_validator("root")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if "\x00" in value or not os.path.isabs(value):
            raise ValueError("root must be an absolute directory path")
        return value


def build(options: Options, context: BuildContext) -> LocalFileSystem:
    try:
        if options.create:
            os.makedirs(options.root, exist_ok=True)
        usable = os.path.isdir(options.root)
    except OSError:
        usable = False
    if not usable:
        # The message names the mount, never the server directory.
        raise MountUnavailableError(context.tenant, context.mount,
                                    "root directory is missing or cannot be created")
    fs = LocalFileSystem(options.root, tenant=context.tenant, mount=context.mount,
                         owner=context.user,
                         uploads=UploadRegister(context.data_dir, options.root))
    fs.sweep_abandoned_uploads()
    return fs


def split_path(path: str) -> Parts:
    """Validate a root-relative path into its components ("" is the root)."""
    if _ENCODED.search(path):
        raise InvalidPathError("path contains a percent-encoded '.', '/', '\\' or NUL")
    normal = paths.normalize(path)  # refuses NUL, backslash, "." and ".."
    parts = tuple(normal.split("/")) if normal else ()
    if parts and _DRIVE.fullmatch(parts[0]):
        raise InvalidPathError("path starts with a drive letter")
    if any(part.startswith(TEMP_PREFIX) for part in parts):
        raise InvalidPathError("path uses a name reserved for uploads")
    return parts


def join(parts: Parts) -> str:
    return "/".join(parts)


_TRANSLATED = "_mosaic_relative"  # marks an error already naming the relative path


def _translated(exc: OSError, rel: str) -> OSError:
    code = exc.errno or errno.EIO
    special: dict[int, type[OSError]] = {errno.EROFS: ReadOnlyError, errno.EXDEV: CrossDeviceError}
    if code in special:
        return special[code](rel)
    if code == errno.ELOOP:
        return InvalidPathError(f"symbolic link refused: {rel!r}")
    if code in (errno.EINVAL, errno.ENAMETOOLONG):
        return InvalidPathError(f"invalid path: {rel!r}")
    new = oserror(code, rel)
    setattr(new, _TRANSLATED, True)
    return new


@contextmanager
def translate_errors(rel: str) -> Iterator[None]:
    """Re-raise OS errors as the same type naming only ``rel`` (no server paths)."""
    try:
        yield
    except OSError as exc:
        if type(exc).__module__ != "builtins" or getattr(exc, _TRANSLATED, False):
            raise
        raise _translated(exc, rel) from None


def _checked(st: os.stat_result, rel: str) -> os.stat_result:
    """Refuse what this provider never serves: symlinks and special files."""
    if stat.S_ISLNK(st.st_mode):
        raise InvalidPathError(f"symbolic link refused: {rel!r}")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise InvalidPathError(f"unsupported file type: {rel!r}")
    return st


def _entry(rel: str, st: os.stat_result) -> dict[str, Any]:
    is_dir = stat.S_ISDIR(st.st_mode)
    return {
        "name": rel,
        "type": "directory" if is_dir else "file",
        "size": 0 if is_dir else st.st_size,
        # int / int is correctly rounded (int / 1e9 is not): set_mtime(x) reads back x.
        "mtime": st.st_mtime_ns / 1_000_000_000,
        "etag": f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}",
    }


class _TempSlot:
    """The hidden temp file of one upload and the directory it is published in."""

    def __init__(self, dir_fd: int, name: str, rel: str,
                 uploads: UploadRegister | None = None) -> None:
        self.dir_fd = os.dup(dir_fd)  # the upload outlives the caller's descriptor
        self.name = name
        self.rel = rel
        self.temp = TEMP_PREFIX + secrets.token_hex(8)
        self._uploads = uploads
        self._marker: Path | None = None

    def create(self) -> BinaryIO:
        fd = os.open(self.temp, _TEMP_FLAGS, 0o666, dir_fd=self.dir_fd)
        try:
            # Held until the file is closed, i.e. after it is published: the
            # next start of this mount, in any process, leaves it alone.
            lock_for_writing(fd)
        except BaseException:
            os.close(fd)
            raise
        if self._uploads is not None:
            folder = self.rel.rpartition("/")[0]
            self._marker = self._uploads.add(f"{folder}/{self.temp}" if folder else self.temp)
        return os.fdopen(fd, "wb")

    def publish(self) -> None:
        with translate_errors(self.rel):
            os.replace(self.temp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)

    def cleanup(self) -> None:
        try:
            with suppress(FileNotFoundError):  # already published
                os.unlink(self.temp, dir_fd=self.dir_fd)
        finally:
            os.close(self.dir_fd)
            UploadRegister.remove(self._marker)


class LocalFileSystem(ProviderFileSystem):
    """A confined view of one local directory; paths are relative to it."""

    protocol = "mosaic-local"

    def __init__(self, root: str, tenant: str = "", mount: str = "",
                 owner: str | None = None, uploads: UploadRegister | None = None) -> None:
        super().__init__()
        self._root = os.path.realpath(root)  # the configured root itself is trusted
        self._tenant = tenant
        self._mount = mount
        self._owner = owner  # of a per-user mount
        self._uploads = uploads

    def _split(self, path: str) -> Parts:
        return split_path(path)

    def space(self) -> tuple[int, int]:
        """(used, free) bytes of the volume holding the root, as ``df`` shows them
        (free: what an unprivileged writer may still use)."""
        fd = self._open_root()
        try:
            st = os.fstatvfs(fd)
        finally:
            os.close(fd)
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize

    # -- walking ------------------------------------------------------------------

    def _open_root(self) -> int:
        try:
            fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            reason = "root directory is missing"
            HEALTH.failed(self._tenant, self._mount, reason, self._owner)
            raise MountUnavailableError(self._tenant, self._mount, reason) from None
        HEALTH.served(self._tenant, self._mount, self._owner)
        return fd

    def _walk(self, parts: Parts, create: bool = False) -> int:
        """A descriptor of directory ``parts``, reached without following any link."""
        fd = self._open_root()
        try:
            for name in parts:
                child = _step(fd, name, create)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextmanager
    def _dir(self, parts: Parts, create: bool = False, rel: str | None = None) -> Iterator[int]:
        """The directory ``parts``; errors name ``rel`` (default: that directory)."""
        with translate_errors(join(parts) if rel is None else rel):
            fd = self._walk(parts, create)
            try:
                yield fd
            finally:
                os.close(fd)

    @contextmanager
    def _at(self, parts: Parts, create: bool = False) -> Iterator[tuple[int, str]]:
        """(parent descriptor, last name) of a non-root path; errors name the path."""
        if not parts:
            raise InvalidPathError("the root cannot be the target of this operation")
        rel = join(parts)
        with self._dir(parts[:-1], create, rel) as parent, translate_errors(rel):
            yield parent, parts[-1]

    def _lstat(self, parts: Parts) -> os.stat_result:
        if not parts:
            with self._dir(()) as fd:
                return os.fstat(fd)
        with self._at(parts) as (parent, name):
            return _checked(os.stat(name, dir_fd=parent, follow_symlinks=False), join(parts))

    def sweep_abandoned_uploads(self) -> None:
        """Remove the temp files of uploads whose process died (see upload_register)."""
        if self._uploads is None:
            return
        for marker, temp_rel in self._uploads.entries():
            folder, _, name = temp_rel.rpartition("/")
            try:
                # The marker is ours, but it still never leads out of the root.
                parts = split_path(folder)
                if not name.startswith(TEMP_PREFIX):
                    raise InvalidPathError("not an upload temp file")
            except InvalidPathError:
                self._uploads.remove(marker)
                continue
            try:
                with self._dir(parts) as parent:
                    gone = remove_if_abandoned(parent, name)
            except (FileNotFoundError, NotADirectoryError):
                gone = True  # its folder went, and the file with it
            except OSError:
                gone = False  # cannot tell now: try again at the next start
            if gone:
                self._uploads.remove(marker)

    # -- reading ------------------------------------------------------------------

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        parts = self._split(path)
        return _entry(join(parts), self._lstat(parts))

    def ls(self, path: str = "", detail: bool = True, **kwargs: Any) -> list[Any]:
        """One ``os.scandir``; a file raises NotADirectoryError (it is no directory)."""
        parts = self._split(path)
        with self._dir(parts) as fd, os.scandir(fd) as scan:
            # Entries of an fd-based scandir stat through it: use them inside.
            items = list(scan)
            _sweep_stale_uploads(fd, items)
            entries = [e for e in (_scan_entry(parts, item) for item in items) if e]
        return entries if detail else [e["name"] for e in entries]

    def _open_read(self, parts: Parts, fresh_info: dict[str, Any] | None = None) -> BinaryIO:
        rel = join(parts)
        if not parts:
            raise oserror(errno.EISDIR, rel)
        with self._at(parts) as (parent, name):
            fd = os.open(name, _READ_FLAGS, dir_fd=parent)
            try:
                st = _checked(os.fstat(fd), rel)
                if stat.S_ISDIR(st.st_mode):
                    raise oserror(errno.EISDIR, rel)
                os.set_blocking(fd, True)
                return os.fdopen(fd, "rb")
            except BaseException:
                os.close(fd)
                raise

    # -- writing ------------------------------------------------------------------

    def _open_write(self, parts: Parts, autocommit: bool, size: int | None = None) -> Upload:
        rel = join(parts)
        if not parts:
            raise oserror(errno.EISDIR, rel)
        with self._at(parts) as (parent, name):
            self._refuse_dir_or_link(parent, name, rel)
            slot = _TempSlot(parent, name, rel, self._uploads)
            try:
                raw = slot.create()
            except BaseException:
                slot.cleanup()
                raise
        return Upload(raw, rel, slot.publish, slot.cleanup, autocommit)

    @staticmethod
    def _refuse_dir_or_link(parent: int, name: str, rel: str) -> None:
        st = _existing(parent, name, rel)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise oserror(errno.EISDIR, rel)

    def mkdir(self, path: str, create_parents: bool = False, **kwargs: Any) -> None:
        parts = self._split(path)
        if not parts:
            raise oserror(errno.EEXIST, "")
        with self._at(parts, create=create_parents) as (parent, name):
            try:
                os.mkdir(name, dir_fd=parent)
            except FileExistsError:
                _existing(parent, name, join(parts))  # a link is refused, not "exists"
                raise

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        parts = self._split(path)
        rel = join(parts)
        if not truncate and self.exists(rel):
            self.set_mtime(rel, time.time())
            return
        with self._at(parts) as (parent, name):
            self._refuse_dir_or_link(parent, name, rel)
            os.close(os.open(name, _TOUCH_FLAGS, 0o666, dir_fd=parent))

    def set_mtime(self, path: str, mtime: float) -> None:
        parts = self._split(path)
        st = self._lstat(parts)
        ns = _float_to_ns(mtime)
        if not parts:
            with self._dir(()) as fd:
                os.utime(fd, ns=(st.st_atime_ns, ns))
            return
        with self._at(parts) as (parent, name):
            os.utime(name, ns=(st.st_atime_ns, ns), dir_fd=parent, follow_symlinks=False)

    # -- removing -----------------------------------------------------------------

    def rmdir(self, path: str) -> None:
        parts = self._split(path)
        self._lstat(parts)  # refuses links before the syscall sees them
        with self._at(parts) as (parent, name):
            os.rmdir(name, dir_fd=parent)

    def rm_file(self, path: str) -> None:
        parts = self._split(path)
        if stat.S_ISDIR(self._lstat(parts).st_mode):
            raise oserror(errno.EISDIR, join(parts))
        with self._at(parts) as (parent, name):
            os.unlink(name, dir_fd=parent)

    def _rmtree(self, parts: Parts) -> None:
        with self._at(parts) as (parent, name):
            # rmtree's fd-based walk unlinks symlinks, it never follows them.
            shutil.rmtree(name, dir_fd=parent)

    # -- moving and copying ---------------------------------------------------------

    def mv(self, path1: str, path2: str, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        src, dst = self._check_transfer(path1, path2)
        self._lstat(src)
        with self._at(src) as (src_parent, src_name), self._at(dst) as (dst_parent, dst_name):
            _existing(dst_parent, dst_name, join(dst))  # refuses a link as the target
            os.rename(src_name, dst_name, src_dir_fd=src_parent, dst_dir_fd=dst_parent)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        src, dst = self._check_transfer(path1, path2)
        with self._open_read(src) as reader, self._open_write(dst, autocommit=True) as writer:
            shutil.copyfileobj(reader, writer, _COPY_CHUNK)


def _step(fd: int, name: str, create: bool) -> int:
    """Open the child directory ``name`` of ``fd``; never through a symlink."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
        with suppress(FileExistsError):  # a concurrent mkdir is fine
            os.mkdir(name, dir_fd=fd)
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except NotADirectoryError:
        # O_DIRECTORY | O_NOFOLLOW answers ENOTDIR for a link, too: tell them apart.
        if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            raise InvalidPathError("symbolic link refused") from None
        raise


def _existing(parent: int, name: str, rel: str) -> os.stat_result | None:
    """The status of ``name`` if it exists; a link or special file is refused."""
    try:
        return _checked(os.stat(name, dir_fd=parent, follow_symlinks=False), rel)
    except FileNotFoundError:
        return None


def _sweep_stale_uploads(dir_fd: int, items: list[os.DirEntry[str]]) -> None:
    """Remove upload temp files a crashed process left behind (untouched for a
    day: a live upload writes to its file all the time). Done while listing, so
    no separate walk of the tree is ever needed."""
    cutoff = time.time() - STALE_UPLOAD_S
    for item in items:
        if item.name.startswith(TEMP_PREFIX):
            with suppress(OSError):
                if item.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(item.name, dir_fd=dir_fd)


def _scan_entry(parts: Parts, item: os.DirEntry[str]) -> dict[str, Any] | None:
    """The listing entry of a scandir item, or None for what is never shown."""
    if item.name.startswith(TEMP_PREFIX) or _UNDECODABLE.search(item.name):
        return None
    try:
        st = item.stat(follow_symlinks=False)
    except FileNotFoundError:  # deleted while we listed
        return None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return None
    return _entry(join((*parts, item.name)), st)


def _float_to_ns(mtime: float) -> int:
    # Whole seconds first: mtime * 1e9 as one float would lose ~100 ns at today's dates.
    seconds, fraction = divmod(mtime, 1)
    return int(seconds) * 1_000_000_000 + round(fraction * 1_000_000_000)
