"""What every object-store provider (S3, Azure Blob, GCS, Swift) shares.

An object store has keys, not folders. :class:`ObjectStoreFileSystem` makes
one behave like a file tree on top of a few primitives that each backend
supplies as an :class:`~mosaic.providers.primitives.ObjectStore`:

* a folder is a marker object ``dir/`` (so an empty folder persists and is
  listed) or, for trees written by other tools, any key below ``dir/``;
* a listing is one paged prefix/delimiter call per folder, never a request
  per entry; a file and a folder sharing a name are listed once, as the file
  (the same rule :meth:`info` follows);
* an upload whose size the client announced, up to ``single_put_max_mib``, is
  one request streamed to the store (:class:`~mosaic.providers.transfers.StreamedWriter`:
  flat memory, published on its last byte); others stream in parts
  (:class:`~mosaic.providers.transfers.ParallelWriter`, several in flight),
  published only by ``commit()``. ``discard()`` cuts the request off or aborts
  the parts, so a failed PUT leaves nothing and the previous version intact
  (plain fsspec commits a partial object when a ``with fs.open(p, "wb")``
  block raises: :class:`~mosaic.providers.common.Upload` never does);
* a move is a server-side copy of every object, then one bulk delete. A
  failed copy removes what it copied (the source was not touched yet), so
  the client sees the move fail whole. A process killed during a move leaves
  a journal (:mod:`mosaic.providers.journal`); the mount's next start, in any
  worker, finishes that move before serving;
* the modification time a client sets is kept in object metadata
  (:data:`MTIME_KEY`), because no store lets a client set its own. Stores
  whose listings carry no metadata (S3) show the store's time in listings;
  ``info`` always shows the set time. A folder listed by its parent has no
  time (0.0): a delimiter listing returns none for it;
* native errors are translated once, by the backend's table of error codes
  (:attr:`ObjectStore.ERRORS`), into the VFS's vocabulary; mount-wide ones
  (store down, bucket missing, credentials refused) become
  :class:`MountUnavailableError` naming the tenant and mount, never a secret
  or the store's address.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import posixpath
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO

from mosaic.core.capabilities import BuildContext, Capabilities
from mosaic.core.errors import FileTooLargeError, InvalidPathError, MountUnavailableError
from mosaic.core.health import HEALTH
from mosaic.providers.common import Parts, ProviderFileSystem, Upload, oserror
from mosaic.providers.journal import Move, MoveJournal
from mosaic.providers.listcache import ListingCache
from mosaic.providers.primitives import (
    MTIME_KEY,
    STREAM_CHUNK,
    Fault,
    Listing,
    ObjectStore,
    ObjectStoreOptions,
    StoredObject,
    parts_for,
    strong_etag,
)
from mosaic.providers.transfers import (
    ParallelWriter,
    PartedUpload,
    StreamedReader,
    StreamedWriter,
)

log = logging.getLogger(__name__)

Writer = ParallelWriter | StreamedWriter

CAPABILITIES = Capabilities(
    empty_directories=True,  # marker objects
    atomic_rename=False,  # a folder move is copy + delete
    server_side_copy=True,
    mtime_precision=1.0,  # the stores' own times are whole seconds
    settable_mtime=True,  # kept in metadata
)

MARKER = "/"  # a folder's marker object is its key plus this
COPY_CONCURRENCY = 8  # server-side copies in flight during a folder move

_MOUNT_FAULTS = {Fault.NO_BUCKET, Fault.CREDENTIALS, Fault.UNREACHABLE}


def _dir_entry(rel: str, mtime: float = 0.0) -> dict[str, Any]:
    return {"name": rel, "type": "directory", "size": 0, "mtime": mtime}


def _file_entry(rel: str, obj: StoredObject) -> dict[str, Any]:
    # store_etag: as the store sends it, for If-Match on a read of this version
    return {"name": rel, "type": "file", "size": obj.size, "mtime": obj.effective_mtime,
            "etag": strong_etag(obj.etag), "store_etag": obj.etag}


def _known_object(key: str, info: dict[str, Any] | None) -> StoredObject | None:
    """The object a file's fresh ``info`` (see :func:`_file_entry`) describes."""
    if not info or info.get("type") != "file" or "store_etag" not in info:
        return None
    return StoredObject(key, int(info["size"]), float(info["mtime"]), info["store_etag"])


def _valid_name(name: str) -> bool:
    """Key segments other tools may write that no path can name."""
    return bool(name) and name not in (".", "..") and "\\" not in name and "\x00" not in name


class ObjectStoreFileSystem(ProviderFileSystem):
    """A file tree over an :class:`ObjectStore`, below an optional key prefix."""

    protocol = "mosaic-objectstore"

    def __init__(self, store: ObjectStore, options: ObjectStoreOptions,
                 context: BuildContext) -> None:
        super().__init__()
        self._store = store
        prefix = options.prefix
        self._prefix = f"{prefix}/" if prefix else ""
        self._tenant = context.tenant
        self._mount = context.mount
        self._owner = context.user  # of a per-user mount
        identity = (context.tenant, context.mount, context.user or "", type(store).__name__,
                    prefix)
        self._cache = ListingCache.for_mount(options.listing_cache_seconds, context.data_dir,
                                             *identity)
        digest = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:32]
        self._journal = MoveJournal(context.data_dir / "move-journal" / digest)
        self._finish_interrupted_moves()

    # -- keys and errors ----------------------------------------------------------

    def _key(self, parts: Parts) -> str:
        return self._prefix + "/".join(parts)

    def _dir_prefix(self, parts: Parts) -> str:
        """The prefix of a folder's contents ("" or "a/b/"); its marker's key too."""
        return self._key(parts) + MARKER if parts else self._prefix

    @contextmanager
    def _errors(self, rel: str) -> Iterator[None]:
        """Translate the store's errors by its table, naming only ``rel``."""
        try:
            yield
        except (MountUnavailableError, InvalidPathError):
            raise
        except FileTooLargeError as exc:
            exc.filename = rel
            raise
        except Exception as exc:
            raise self._translate(exc, rel) from None
        HEALTH.served(self._tenant, self._mount, self._owner)

    def _translate(self, exc: Exception, rel: str) -> OSError:
        code = self._store.error_code(exc)
        fault = self._store.ERRORS.get(code or "")
        if fault is None and type(exc).__module__ == "builtins" \
                and isinstance(exc, (FileNotFoundError, FileExistsError, PermissionError)):
            return oserror(exc.errno or errno.EIO, rel)
        if fault in _MOUNT_FAULTS:
            return self._unavailable(fault.value)  # type: ignore[union-attr]
        if fault is Fault.MISSING:
            return oserror(errno.ENOENT, rel)
        if fault is Fault.EXISTS:
            return oserror(errno.EEXIST, rel)
        if fault is Fault.DENIED:
            return oserror(errno.EACCES, rel)
        if fault is Fault.INVALID:
            return InvalidPathError(f"the store refuses this name: {rel!r}")
        log.warning("tenant %s mount %s: storage error %s (%s) on %r", self._tenant,
                    self._mount, code, type(exc).__name__, rel)
        return OSError(errno.EIO, f"storage error ({code or type(exc).__name__})", rel)

    def _unavailable(self, reason: str) -> MountUnavailableError:
        # Forget what the store listed: served from memory, a cached listing
        # would hide the outage and report the mount back while it is not.
        self._cache.invalidate()
        HEALTH.failed(self._tenant, self._mount, reason, self._owner)
        return MountUnavailableError(self._tenant, self._mount, reason)

    # -- looking things up ----------------------------------------------------------

    def _head(self, key: str, rel: str, fresh: bool = False) -> StoredObject | None:
        with self._errors(rel):
            if fresh:
                return self._store.head(key)
            return self._cache.get(("head", key), lambda: self._store.head(key))

    def _list(self, prefix: str, rel: str, recursive: bool = False,
              limit: int | None = None) -> Listing:
        def fetch() -> Listing:
            return self._store.list(prefix, recursive=recursive, limit=limit)
        with self._errors(rel):
            if recursive and limit is None:
                return fetch()  # whole trees (moves, deletes) are read fresh, never kept
            return self._cache.get(("list", prefix, recursive, limit), fetch)

    @contextmanager
    def _changing(self, rel: str) -> Iterator[None]:
        """A change to the store: errors translated; the cache forgotten after it,
        whether it worked or not (a failed change may have done half)."""
        try:
            with self._errors(rel):
                yield
        finally:
            self._cache.invalidate()

    def _probe(self, parts: Parts, folder_first: bool = False, fresh: bool = False
               ) -> tuple[str, StoredObject | None] | None:
        """("file", obj) | ("directory", marker or None) | None if absent.

        A file wins over a same-named folder (only other tools make both);
        ``folder_first`` asks for the marker first where a folder is expected
        (one request instead of two), so there the folder wins.
        """
        rel = "/".join(parts)
        if not parts:
            return "directory", None
        prefix = self._dir_prefix(parts)
        marker = self._head(prefix, rel) if folder_first else None
        if marker is not None:
            return "directory", marker
        obj = self._head(self._key(parts), rel, fresh)
        if obj is not None:
            return "file", obj
        if not folder_first and self._cache.enabled:
            return self._probe_by_listing(prefix, rel)
        if not folder_first:
            marker = self._head(prefix, rel)
            if marker is not None:
                return "directory", marker
        if self._list(prefix, rel, recursive=True, limit=1).objects:
            return "directory", None  # a folder other tools made without a marker
        return None

    def _probe_by_listing(self, prefix: str, rel: str) -> tuple[str, StoredObject | None] | None:
        """A folder is what its delimiter listing is not empty for: the very
        listing ``ls`` needs next (PROPFIND: info, then ls), so with a listing
        cache it is fetched once instead of a HEAD of the marker and a probe."""
        listing = self._list(prefix, rel)
        if not listing.objects and not listing.prefixes:
            return None
        marker = next((obj for obj in listing.objects if obj.key == prefix), None)
        if marker is not None and marker.metadata is None:  # a listing without metadata
            marker = self._head(prefix, rel) or marker  # the marker's set time is in it
        return "directory", marker

    def _missing(self, parts: Parts) -> OSError:
        """FileNotFoundError, or NotADirectoryError if an ancestor is a file."""
        for depth in range(len(parts) - 1, 0, -1):
            found = self._probe(parts[:depth], folder_first=True)
            if found is not None:
                code = errno.ENOENT if found[0] == "directory" else errno.ENOTDIR
                return oserror(code, "/".join(parts))
        return oserror(errno.ENOENT, "/".join(parts))

    def _found(self, parts: Parts, fresh: bool = False) -> tuple[str, StoredObject | None]:
        found = self._probe(parts, fresh=fresh)
        if found is None:
            raise self._missing(parts)
        return found

    def _require_dir(self, parts: Parts, rel: str) -> None:
        """The folder ``parts`` exists (errors name ``rel``, the path acted on)."""
        found = self._probe(parts, folder_first=True)
        if found is None:
            raise oserror(errno.ENOENT, rel)
        if found[0] != "directory":
            raise oserror(errno.ENOTDIR, rel)

    # -- reading --------------------------------------------------------------------

    def info(self, path: str, fresh: bool = False, **kwargs: Any) -> dict[str, Any]:
        """``fresh``: a file as the store has it now, past the listing cache (a
        GET's length and ETag must be those of the content it then sends)."""
        parts = self._split(path)
        rel = "/".join(parts)
        kind, obj = self._found(parts, fresh)
        if kind == "file":
            return _file_entry(rel, obj)  # type: ignore[arg-type]
        if obj is None:
            return _dir_entry(rel)
        return _dir_entry(rel, obj.effective_mtime)  # every marker's ETag is the same

    def ls(self, path: str = "", detail: bool = True, **kwargs: Any) -> list[Any]:
        """One paged delimiter listing; a file raises NotADirectoryError."""
        parts = self._split(path)
        rel = "/".join(parts)
        prefix = self._dir_prefix(parts)
        listing = self._list(prefix, rel)
        if parts and not listing.objects and not listing.prefixes:
            raise self._missing(parts) if self._probe(parts) is None \
                else oserror(errno.ENOTDIR, rel)
        entries = self._entries(parts, prefix, listing)
        return entries if detail else [e["name"] for e in entries]

    def _entries(self, parts: Parts, prefix: str, listing: Listing) -> list[dict[str, Any]]:
        by_name: dict[str, dict[str, Any]] = {}
        for sub in listing.prefixes:
            name = sub[len(prefix):].rstrip("/")
            if _valid_name(name) and "/" not in name:
                by_name[name] = _dir_entry("/".join((*parts, name)))
        for obj in listing.objects:
            name = obj.key[len(prefix):]
            if _valid_name(name) and "/" not in name:  # skips the folder's own marker
                by_name[name] = _file_entry("/".join((*parts, name)), obj)
        return list(by_name.values())

    def _open_read(self, parts: Parts, fresh_info: dict[str, Any] | None = None) -> BinaryIO:
        """A streamed read, ``read_ahead_mib`` ahead of the client, of the object
        as it is now: the version ``fresh_info`` describes (a GET's fresh
        ``info``: no second HEAD), else a fresh HEAD's (a cached size could cut
        a file another tool replaced)."""
        rel = "/".join(parts)
        obj = _known_object(self._key(parts), fresh_info) if parts else None
        if obj is None:
            with self._errors(rel):
                obj = self._store.head(self._key(parts)) if parts else None
        if obj is None:  # missing, a folder, or (a race) a file just written
            kind, obj = self._found(parts)
            if kind != "file" or obj is None:
                raise oserror(errno.EISDIR, rel)

        def stream(start: int) -> Iterator[bytes]:
            with self._errors(rel):
                yield from self._store.stream(obj, start)

        ahead = max(1, self._store.read_ahead // STREAM_CHUNK)
        return StreamedReader(stream, obj.size, ahead)  # type: ignore[return-value]

    # -- writing --------------------------------------------------------------------

    def _check_write_target(self, parts: Parts) -> str:
        """A file may be written at ``parts``: its folder exists, it is no folder."""
        rel = "/".join(parts)
        if not parts:
            raise oserror(errno.EISDIR, rel)
        self._require_dir(parts[:-1], rel)
        if self._has_dir_objects(parts):
            raise oserror(errno.EISDIR, rel)
        return rel

    def _has_dir_objects(self, parts: Parts) -> bool:
        rel = "/".join(parts)
        return bool(self._list(self._dir_prefix(parts), rel, recursive=True, limit=1).objects)

    def _open_write(self, parts: Parts, autocommit: bool, size: int | None = None) -> Upload:
        rel = self._check_write_target(parts)
        with self._errors(rel):
            upload = self._store.start_upload(self._key(parts))
            writer = self._writer(upload, size)
        return Upload(_Guarded(writer, self, rel), rel, self._publisher(writer, rel),
                      self._discarder(writer, rel), autocommit)

    def _writer(self, upload: PartedUpload, size: int | None) -> Writer:
        """One streamed request for an announced size that is more than a part
        (a part is one request anyway) and within the limits; else parts."""
        store = self._store
        if size is not None and store.part_size < size <= min(store.single_put_max,
                                                               upload.stream_limit):
            return StreamedWriter(upload, size, capacity=store.read_ahead)
        part_size, transfers = parts_for(size, store.part_size, store.transfers,
                                         upload.max_parts)
        return ParallelWriter(upload, part_size, transfers)

    def _publisher(self, writer: Writer, rel: str) -> Any:
        def publish() -> None:
            with self._changing(rel):
                writer.commit()
        return publish

    def _discarder(self, writer: Writer, rel: str) -> Any:
        def discard() -> None:
            with self._errors(rel):
                writer.discard()
        return discard

    def mkdir(self, path: str, create_parents: bool = False, **kwargs: Any) -> None:
        parts = self._split(path)
        rel = "/".join(parts)
        if not parts or self._probe(parts) is not None:
            raise oserror(errno.EEXIST, rel)
        if create_parents:
            self._ensure_dirs(parts[:-1], rel)
        else:
            self._require_dir(parts[:-1], rel)
        self._put_marker(parts)

    def _ensure_dirs(self, parts: Parts, rel: str) -> None:
        for depth in range(1, len(parts) + 1):
            found = self._probe(parts[:depth])
            if found is None:
                self._put_marker(parts[:depth])
            elif found[0] != "directory":
                raise oserror(errno.ENOTDIR, rel)

    def _put_marker(self, parts: Parts, metadata: Mapping[str, str] | None = None) -> None:
        with self._changing("/".join(parts)):
            self._store.put(self._dir_prefix(parts), b"", metadata)

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        parts = self._split(path)
        if not truncate and self.exists(path):
            self.set_mtime(path, time.time())
            return
        rel = self._check_write_target(parts)
        with self._changing(rel):
            self._store.put(self._key(parts), b"")

    def set_mtime(self, path: str, mtime: float) -> None:
        """Kept in metadata: the file or marker is copied onto itself (S3) with it."""
        parts = self._split(path)
        rel = "/".join(parts)
        kind, obj = self._found(parts)
        if not parts:
            return  # a bucket root has no object to hold it
        metadata = {MTIME_KEY: repr(float(mtime))}
        if kind == "directory" and obj is None:
            self._put_marker(parts, metadata)
            return
        with self._changing(rel):
            self._store.copy_object(obj, obj.key, metadata)  # type: ignore[arg-type]

    # -- removing -------------------------------------------------------------------

    def rmdir(self, path: str) -> None:
        parts = self._split(path)
        rel = "/".join(parts)
        if not parts:
            raise InvalidPathError("the root cannot be removed")
        kind, _ = self._found(parts)
        if kind != "directory":
            raise oserror(errno.ENOTDIR, rel)
        marker = self._dir_prefix(parts)
        below = self._list(marker, rel, recursive=True, limit=2).objects
        if any(obj.key != marker for obj in below):
            raise oserror(errno.ENOTEMPTY, rel)
        with self._changing(rel):
            self._store.delete([marker])

    def rm_file(self, path: str) -> None:
        parts = self._split(path)
        rel = "/".join(parts)
        kind, obj = self._found(parts)
        if kind != "file":
            raise oserror(errno.EISDIR, rel)
        with self._changing(rel):
            self._store.delete([obj.key])  # type: ignore[union-attr]

    def _rmtree(self, parts: Parts) -> None:
        rel = "/".join(parts)
        keys = [obj.key for obj in self._list(self._dir_prefix(parts), rel,
                                               recursive=True).objects]
        with self._changing(rel):
            self._store.delete(keys)

    # -- moving and copying -----------------------------------------------------------

    def mv(self, path1: str, path2: str, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        """POSIX rename rules; a folder moves as copy-everything-then-delete."""
        src, dst = self._check_transfer(path1, path2)
        if src == dst:
            self._found(src)
            return
        kind, obj = self._found(src)
        rel = "/".join(dst)
        self._require_dir(dst[:-1], rel)
        target = self._probe(dst)
        if kind == "file":
            if target is not None and target[0] == "directory":
                raise oserror(errno.EISDIR, rel)
            mtime = obj.effective_mtime  # type: ignore[union-attr]
            move = Move([(self._key(src), self._key(dst), mtime)])
            with self._changing(rel), self._journal.recording(move):
                self._store.copy_object(obj, self._key(dst),  # type: ignore[arg-type]
                                        {MTIME_KEY: repr(mtime)})
                self._store.delete([self._key(src)])
            return
        if target is not None:
            if target[0] == "file":
                raise oserror(errno.ENOTDIR, rel)
            if any(o.key != self._dir_prefix(dst) for o in self._list(
                    self._dir_prefix(dst), rel, recursive=True, limit=2).objects):
                raise oserror(errno.ENOTEMPTY, rel)
        self._move_tree(src, dst)

    def _move_tree(self, src: Parts, dst: Parts) -> None:
        old, new = self._dir_prefix(src), self._dir_prefix(dst)
        objects = self._list(old, "/".join(src), recursive=True).objects
        pairs = [(obj, new + obj.key[len(old):]) for obj in objects]
        with self._journal.recording(Move([(obj.key, key, None) for obj, key in pairs])):
            with self._changing("/".join(dst)):
                self._copy_all(pairs)
            with self._changing("/".join(src)):
                self._store.delete([obj.key for obj in objects])

    def _finish_interrupted_moves(self) -> None:
        """Finish the moves a killed process left (see the module docstring);
        until they are, the mount is unavailable (its build is retried)."""
        for path, move in self._journal.pending():
            log.warning("tenant %s mount %s: finishing a move of %d objects cut short",
                        self._tenant, self._mount, len(move.pairs))
            with self._changing(""):
                self._finish(move)
            self._journal.done(path)

    def _finish(self, move: Move) -> None:
        remaining = self._still_at_source([src for src, _, _ in move.pairs])
        jobs = [(remaining[src], dst, None if mtime is None else {MTIME_KEY: repr(mtime)})
                for src, dst, mtime in move.pairs if src in remaining]
        with ThreadPoolExecutor(max_workers=COPY_CONCURRENCY) as pool:
            list(pool.map(lambda job: self._store.copy_object(*job), jobs))
        self._store.delete(list(remaining))

    def _still_at_source(self, keys: list[str]) -> dict[str, StoredObject]:
        """Which of ``keys`` exist: one HEAD for one key, else one recursive
        listing of their common folder."""
        if len(keys) == 1:
            found = self._store.head(keys[0])
            return {found.key: found} if found else {}
        folder = posixpath.commonpath(keys)  # by path components: "a/b" of "a/b/x", "a/b/"
        listed = self._store.list(f"{folder}/" if folder else "", recursive=True).objects
        wanted = set(keys)
        return {obj.key: obj for obj in listed if obj.key in wanted}

    def _copy_all(self, pairs: list[tuple[StoredObject, str]]) -> None:
        """Server-side copies, ``COPY_CONCURRENCY`` at a time; if one fails, the
        others are cancelled and what was copied is deleted again."""
        copied: list[str] = []

        def copy(pair: tuple[StoredObject, str]) -> None:
            self._store.copy_object(*pair)
            copied.append(pair[1])

        pool = ThreadPoolExecutor(max_workers=COPY_CONCURRENCY)
        try:
            for future in [pool.submit(copy, pair) for pair in pairs]:
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            with suppress(Exception):  # roll back: the source is still whole
                self._store.delete(copied)
            raise
        finally:
            pool.shutdown(wait=True)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Server-side; the copy is a new file (its own time, no set mtime)."""
        src, dst = self._check_transfer(path1, path2)
        kind, obj = self._found(src)
        if kind != "file":
            raise oserror(errno.EISDIR, "/".join(src))
        rel = self._check_write_target(dst)
        with self._changing(rel):
            self._store.copy_object(obj, self._key(dst), {})  # type: ignore[arg-type]


class _Guarded:
    """A writer whose write errors are translated like the rest."""

    def __init__(self, writer: Writer, fs: ObjectStoreFileSystem, rel: str) -> None:
        self._writer, self._fs, self._rel = writer, fs, rel

    def write(self, data: bytes) -> int:
        with self._fs._errors(self._rel):
            return self._writer.write(data)

    def tell(self) -> int:
        return self._writer.tell()

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
