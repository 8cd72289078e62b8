"""``smb``: a share of an SMB/CIFS file server (Samba, Windows Server, a NAS).

Built on smbprotocol's ``smbclient`` API, with the pooling traps it has closed
off (see docs/smb.md):

* Sessions never leak: every filesystem (one per tenant, mount and, for a
  ``{user}`` mount, user) has a ``connection_cache`` of its own and passes its
  credentials on every call. smbclient's global pool picks a session by user
  name only, so one tenant's calls could run under another's session, and a
  wrong password would be accepted once a session of that name existed.
* ``credentials: pass_through``: the filesystem is built for one signed-in user
  (``BuildContext.account``) and signs in as that user, so the server's ACLs
  apply to them; the file server refusing their account is a 403 for them, not
  the mount down. Its owner (the user's session) ends it with
  :meth:`SMBFileSystem.close_if_idle`.
* A listing is one directory enumeration: ``scandir`` and each entry's own
  ``smb_info`` (``SMBDirEntry.stat()`` would reconnect to port 445 without
  credentials, and a stat per entry is a round trip per entry).
* Files open with the sharing a file server expects: a reader lets other
  readers in, and lets a finished upload replace the file it reads.
* An upload goes to a hidden temp name beside its target and is published by
  a rename over it (two compound requests); a discarded one is deleted.
  A copy within the share is server-side (SMB copy-chunk), into a temp name too.
* A download reads one block ahead and an upload keeps two writes out
  (:mod:`mosaic.providers.smb_streams`), in ``io_block_size`` requests.
* Errors are the VFS vocabulary: ACCESS_DENIED (share or file ACL) is a
  PermissionError; the server unreachable or refusing the account is
  :class:`MountUnavailableError` for this mount only, and the next call tries
  again. No message carries the server's address or a secret.

Names follow Windows' rules on every SMB server: ``<>:"|?*``, control
characters, a trailing dot or space and device names (``CON``, ``aux.txt``)
are refused with InvalidPathError before anything is sent; names compare
case-insensitively (declared in :data:`CAPABILITIES`).
"""

from __future__ import annotations

import errno
import functools
import logging
import secrets
import stat
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import smbclient
from smbclient._io import SMBFileTransaction, SMBRawIO, set_info
from smbprotocol.connection import Connection
from smbprotocol.exceptions import (
    SMBAuthenticationError,
    SMBConnectionClosed,
    SMBException,
    SMBOSError,
)
from smbprotocol.file_info import FileRenameInformation
from smbprotocol.header import NtStatus
from smbprotocol.open import CreateOptions, FilePipePrinterAccessMask

from mosaic.core.capabilities import BuildContext, Capabilities
from mosaic.core.credentials import SignedInAccount
from mosaic.core.errors import InvalidPathError, MountUnavailableError, OwnAccountError
from mosaic.core.names import windows_name_problem
from mosaic.providers import smb_dfs
from mosaic.providers.common import Parts, ProviderFileSystem, Upload, oserror
from mosaic.providers.listcache import ListingCache
from mosaic.providers.smb_notify import ChangeWatcher
from mosaic.providers.smb_options import Options, PassThrough
from mosaic.providers.smb_session import ShareSession, disconnect_all
from mosaic.providers.smb_status import (
    ACCOUNT_REFUSED,
    ERRNO_BY_STATUS,
    INVALID_NAME,
    MOUNT_DOWN,
    status_of,
)
from mosaic.providers.smb_streams import Reader, TempWriter

log = logging.getLogger(__name__)
# smbprotocol logs every request at INFO: at the server's usual level that would be
# several lines per WebDAV request. An administrator may still set its level.
for _chatty in ("smbprotocol", "smbclient", "spnego"):
    if logging.getLogger(_chatty).level == logging.NOTSET:
        logging.getLogger(_chatty).setLevel(logging.WARNING)


def _without_worker_tracebacks(record: logging.LogRecord) -> bool:
    """smbprotocol logs its receiver thread's end (a server gone silent or away) with
    a traceback; the mount logs that outage itself, once, in one line."""
    return record.exc_info is None


logging.getLogger("smbprotocol.connection").addFilter(_without_worker_tracebacks)

CAPABILITIES = Capabilities(
    empty_directories=True,
    atomic_rename=True,
    server_side_copy=True,
    mtime_precision=1e-6,  # SMB keeps 100 ns; smbprotocol's listings give microseconds
    settable_mtime=True,
    case_insensitive_names=True,
    reserved_names=True,
)

#: Prefix of in-flight upload and copy files: never listed, never accepted in a path.
TEMP_PREFIX = ".~mosaic-upload-"
#: an upload temp file untouched this long belongs to a killed process; listings remove it
STALE_UPLOAD_S = 24 * 3600
FILE_ATTRIBUTE_DIRECTORY = 0x10
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)


def build(options: Options, context: BuildContext, kind: str = "smb") -> SMBFileSystem:
    """Builds without connecting: an unreachable server fails the mount's calls (503),
    and the mount works as soon as the server answers. ``kind``: the provider named in
    the mount's log lines (``azure_files`` builds through here)."""
    # keyed by the backend folder: every worker and mount serving it forgets together
    cache = ListingCache.for_mount(options.listing_cache_seconds, context.data_dir, "smb",
                                   options.host.lower(), str(options.port),
                                   options.share.lower(), options.path.lower())
    if options.signs_in_as_user and context.account is None:
        raise ValueError("credentials pass_through: no signed-in account to use")
    return SMBFileSystem(options, tenant=context.tenant, mount=context.mount, listings=cache,
                         kind=kind, account=context.account)


def _sign_in_as(options: Options, account: SignedInAccount | None) -> tuple[str, str]:
    """(user name, password) the file server is given: the service account's, or with
    pass_through the signed-in user's own, ``DOMAIN\\name``."""
    credentials = options.credentials
    if isinstance(credentials, PassThrough):
        if account is None:
            raise ValueError("credentials pass_through: no signed-in account to use")
        return (f"{credentials.domain or account.domain}\\{account.name}",
                account.password.reveal())
    name = credentials.username
    return (f"{options.domain}\\{name}" if options.domain else name,
            credentials.password.get_secret_value())


class SMBFileSystem(ShareSession, ProviderFileSystem):
    """One share (below an optional folder) as a provider filesystem."""

    protocol = "mosaic-smb"

    def __init__(self, options: Options, tenant: str = "", mount: str = "",
                 listings: ListingCache | None = None, kind: str = "smb",
                 account: SignedInAccount | None = None) -> None:
        super().__init__()
        self._options = options
        self._provider_name = kind
        self._listings = listings or ListingCache(0, None)
        self._tenant, self._mount = tenant, mount
        # the namespace (or plain) path the mount names, "\\host\\share\\folders"; its calls
        # go to self._root on self._key, a DFS target once a referral says so
        self._named = "\\\\" + "\\".join(filter(None, (options.host, options.share,
                                                       *options.path.split("/"))))
        self._root = self._named
        self._block = options.io_block_size
        self._key = f"{options.host.lower()}:{options.port}"
        self._referral: smb_dfs.Referral | None = None
        self._trying = threading.local()  # .target: see _quietly
        self._lock = threading.Lock()  # connecting and signing in: one thread at a time
        self._retry_at = 0.0  # monotonic time before which a failed server is not retried
        self._failure = ""
        self._state_lock = threading.Lock()
        self._down = False  # logged once when the server goes away, once when it is back
        # In use (close_if_idle must wait): calls running, files handed out and not closed.
        self._calls = 0
        self._handles: weakref.WeakSet[Reader | TempWriter] = weakref.WeakSet()
        # This filesystem's own pool: never smbclient's global one (see the module doc).
        self._cache: dict[str, Connection] = {}
        # A config reload drops the filesystem without a word; its connection's receiver
        # thread would keep the session (and a socket) open for ever: end them with it.
        self._finalizer = weakref.finalize(self, disconnect_all, self._cache)
        self._own_account = options.signs_in_as_user
        user, password = _sign_in_as(options, account)
        self._user = user  # for messages; never the password
        self._call = {  # passed on every smbclient call
            "username": user, "password": password,
            "port": options.port, "encrypt": options.encrypt or None,
            "connection_timeout": options.connect_timeout_s, "connection_cache": self._cache,
            "require_signing": options.require_signing, "auth_protocol": "ntlm",
        }
        self._changes = ChangeWatcher(self._call, self._listings, options.change_notify_folders,
                                      options.change_notify_idle_s,
                                      f"tenant {tenant}: mount {mount} (smb)")
        # its thread must not outlive a config reload either
        self._stop_watching = weakref.finalize(self, self._changes.stop)

    def close(self) -> None:
        """Log off and disconnect now (also done when the filesystem is collected)."""
        self._stop_watching()
        self._finalizer()

    def close_if_idle(self) -> bool:
        """Log off and disconnect now unless a call is running or a file it handed out
        is still open (a download, an upload): True when it did. What ends a
        pass-through user's session on the file server. A call made later signs in
        again, without watching folders; the connection then ends with the filesystem."""
        with self._state_lock:
            if self._calls or any(not handle.closed for handle in self._handles):
                return False
            self._changes.stop()
            disconnect_all(self._cache)
        return True

    @contextmanager
    def _in_use(self) -> Iterator[None]:
        with self._state_lock:
            self._calls += 1
        try:
            yield
        finally:
            with self._state_lock:
                self._calls -= 1

    # -- paths and errors -----------------------------------------------------------

    def _split(self, path: str) -> Parts:
        parts = super()._split(path)
        for part in parts:
            if part.startswith(TEMP_PREFIX):
                raise InvalidPathError("path uses a name reserved for uploads")
            problem = windows_name_problem(part)
            if problem:
                raise InvalidPathError(problem)
        return parts

    def _unc(self, parts: Parts) -> str:
        return "\\".join((self._root, *parts)) if parts else self._root

    def _unavailable(self, reason: str) -> OSError:
        if self._own_account and reason == ACCOUNT_REFUSED:
            return self._refused_account()
        error = MountUnavailableError(self._tenant, self._mount, reason)
        if getattr(self._trying, "target", False):
            return error  # one DFS target of several: the mount may still fail over
        with self._state_lock:
            first, self._down = not self._down, True
            self._failure = reason
        if first:  # one line per outage, not one per request
            log.warning("tenant %s: mount %s (%s) unavailable: %s", self._tenant, self._mount,
                        self._provider_name, reason)
        return error

    def _refused_account(self) -> OwnAccountError:
        """With pass_through the account is the user's own: refused, it is that user's
        403 (logged once for this session), not the mount down for everybody."""
        with self._state_lock:
            first, self._failure = self._failure != ACCOUNT_REFUSED, ACCOUNT_REFUSED
        if first:
            log.info("tenant %s: mount %s (%s): the file server refused %s's own account",
                     self._tenant, self._mount, self._provider_name, self._user)
        return OwnAccountError(self._mount, f"the file server refused your account "
                                            f"({self._user})")

    def _mark_up(self) -> None:
        with self._state_lock:
            was_down, self._down = self._down, False
        if was_down:
            log.warning("tenant %s: mount %s (%s) available again", self._tenant, self._mount,
                        self._provider_name)

    @contextmanager
    def _errors(self, parts: Parts) -> Iterator[None]:
        """Connect if needed; re-raise smbprotocol's errors as the VFS vocabulary."""
        with self._in_use():
            self._ensure_session()
            with self._translating(parts):
                yield

    @contextmanager
    def _changing(self, parts: Parts) -> Iterator[None]:
        """Like :meth:`_errors`, for a change: cached listings are forgotten, even when
        it failed (part of it may have happened)."""
        try:
            with self._errors(parts):
                yield
        finally:
            self._listings.invalidate()

    @contextmanager
    def _translating(self, parts: Parts) -> Iterator[None]:
        try:
            yield
        except SMBException as exc:
            raise self._translated(exc, parts) from None
        except (ConnectionError, TimeoutError) as exc:
            self._drop_connection()
            raise self._unavailable("the file server cannot be reached") from exc

    def _translated(self, exc: SMBException, parts: Parts) -> OSError:
        rel = "/".join(parts)
        if isinstance(exc, SMBConnectionClosed):
            self._drop_connection()
            return self._unavailable("the connection to the file server was lost")
        if isinstance(exc, SMBAuthenticationError):
            return self._unavailable("the file server refused the account")
        status = status_of(exc)
        if status is None:  # smbprotocol's own: no credits left, a dead receiver thread
            self._drop_connection()
            return self._unavailable("the connection to the file server was lost")
        if status in MOUNT_DOWN:
            self._drop_connection()
            return self._unavailable(MOUNT_DOWN[status])
        if status in INVALID_NAME:
            return InvalidPathError(f"the file server refuses the name {rel!r}")
        code = ERRNO_BY_STATUS.get(status, errno.EIO)  # type: ignore[arg-type]
        # "f/x" below a file: the server says "path not found", as for a missing folder
        # on the way; a name missing from a folder that exists is "name not found" and
        # needs no look at the parent (a PUT of a new file would pay a round trip)
        if status == NtStatus.STATUS_OBJECT_PATH_NOT_FOUND and len(parts) > 1 \
                and self._is_file(parts[:-1]):
            code = errno.ENOTDIR
        return oserror(code, rel)

    def _is_file(self, parts: Parts) -> bool:
        try:
            return not stat.S_ISDIR(smbclient.lstat(self._unc(parts), **self._call).st_mode)
        except (SMBException, OSError):
            return False

    # -- reading ------------------------------------------------------------------------

    def info(self, path: str, fresh: bool = False, **kwargs: Any) -> dict[str, Any]:
        """``fresh``: as the server has it now, past the listing cache (a GET's length
        and ETag must be those of the content it then sends)."""
        parts = self._split(path)
        if fresh:
            return self._stat(parts)
        return dict(self._listings.get(("info", parts), lambda: self._stat(parts)))

    def _stat(self, parts: Parts) -> dict[str, Any]:
        with self._errors(parts):
            st = smbclient.lstat(self._unc(parts), **self._call)
        is_dir = stat.S_ISDIR(st.st_mode)
        return _entry("/".join(parts), is_dir, 0 if is_dir else st.st_size,
                      st.st_mtime_ns // 1000, st.st_ino)

    def ls(self, path: str = "", detail: bool = True, **kwargs: Any) -> list[Any]:
        """One directory enumeration (reused for ``listing_cache_seconds``); each entry
        from its own directory information."""
        parts = self._split(path)
        self._changes.listed(parts)
        entries = [dict(e) for e in self._listings.get(("ls", parts), lambda: self._scan(parts))]
        return entries if detail else [e["name"] for e in entries]

    def _scan(self, parts: Parts) -> list[dict[str, Any]]:
        entries = []
        with self._errors(parts), self._changes.watching(parts, self._unc(parts)), \
                smbclient.scandir(self._unc(parts), **self._call) as scan:
            for item in scan:
                if not item.name.startswith(TEMP_PREFIX):
                    entries.append(_scan_entry(parts, item.name, item.smb_info))
                elif _is_stale(item.smb_info):
                    self._remove_quietly((*parts, item.name))
        return entries

    def _open_read(self, parts: Parts, fresh_info: dict[str, Any] | None = None) -> BinaryIO:
        if not parts:
            raise oserror(errno.EISDIR, "")
        with self._errors(parts):
            # "rd": other readers come in, and a finished upload may replace the file;
            # a writer in place (which would change what is being sent) is kept out.
            raw = smbclient.open_file(self._unc(parts), mode="rb", buffering=0,
                                      share_access="rd", **self._call)
        reader = Reader(raw, self._block, functools.partial(self._translating, parts))
        self._handles.add(reader)
        return reader  # type: ignore[return-value]

    # -- writing ------------------------------------------------------------------------

    def _open_write(self, parts: Parts, autocommit: bool, size: int | None = None) -> Upload:
        rel = "/".join(parts)
        if not parts or self._kind_of(parts) == "directory":
            raise oserror(errno.EISDIR, rel)
        temp = (*parts[:-1], TEMP_PREFIX + secrets.token_hex(8))
        with self._errors(parts):
            raw = smbclient.open_file(self._unc(temp), mode="xb", buffering=0,
                                      share_access="r", **self._call)
        writer = TempWriter(raw, self._block, functools.partial(self._translating, parts))
        self._handles.add(writer)
        published = False

        def publish() -> None:
            nonlocal published
            writer.close()  # SMB renames a file only once its writer has closed it
            self._replace(temp, parts)
            published = True

        def cleanup() -> None:  # also called after publish(): nothing left to remove then
            writer.close()
            if not published:
                # the server gone: the hidden temp file stays until a listing a day later
                self._remove_quietly(temp)

        return Upload(writer, rel, publish, cleanup, autocommit)  # type: ignore[arg-type]

    def _kind_of(self, parts: Parts) -> str | None:
        try:
            return self.info("/".join(parts))["type"]
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _replace(self, src: Parts, dst: Parts) -> None:
        """Rename ``src`` over ``dst`` in two compound requests where smbclient.replace
        sends four. The first opens and closes ``dst`` as smbclient does: a file held
        open elsewhere refuses it (423; the rename itself would replace it, as Samba
        allows) and on a DFS share it names the target. The second opens ``src``,
        renames and closes it."""
        options = {"mode": "r", "share_access": "rwd",
                   "create_options": CreateOptions.FILE_OPEN_REPARSE_POINT, **self._call}
        with self._changing(dst):
            target = SMBRawIO(self._unc(dst), desired_access=FilePipePrinterAccessMask.FILE_EXECUTE,
                              **options)
            try:
                SMBFileTransaction(target).commit()
            except SMBOSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            tree, name = target.fd.tree_connect, target.fd.file_name
            if tree.is_dfs_share and name.startswith(tree.share_name[2:]):
                name = name[len(tree.share_name) - 1:]  # as smbclient names it on a DFS share
            rename = FileRenameInformation()
            rename["replace_if_exists"] = True
            rename["file_name"] = name
            source = SMBRawIO(self._unc(src), desired_access=FilePipePrinterAccessMask.DELETE,
                              **options)
            with SMBFileTransaction(source) as transaction:
                set_info(transaction, rename)

    def _remove_quietly(self, parts: Parts) -> None:
        with suppress(OSError), self._errors(parts):
            smbclient.remove(self._unc(parts), **self._call)

    def mkdir(self, path: str, create_parents: bool = False, **kwargs: Any) -> None:
        parts = self._split(path)
        if not parts:
            raise oserror(errno.EEXIST, "")
        if create_parents and len(parts) > 1:
            with suppress(FileExistsError):
                self.mkdir("/".join(parts[:-1]), create_parents=True)
        with self._changing(parts):
            smbclient.mkdir(self._unc(parts), **self._call)

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        parts = self._split(path)
        if not truncate and self._kind_of(parts) == "file":
            self.set_mtime("/".join(parts), time.time())
            return
        self._open_write(parts, autocommit=True).close()

    def set_mtime(self, path: str, mtime: float) -> None:
        parts = self._split(path)
        ns = _float_to_ns(mtime)
        with self._changing(parts):
            smbclient.utime(self._unc(parts), ns=(time.time_ns(), ns), follow_symlinks=False,
                            **self._call)

    # -- removing -----------------------------------------------------------------------

    def rmdir(self, path: str) -> None:
        parts = self._split(path)
        if not parts:
            raise InvalidPathError("the root cannot be removed")
        with self._changing(parts):
            self._changes.unwatch(parts)  # a watched folder would go only once unwatched
            smbclient.rmdir(self._unc(parts), **self._call)

    def rm_file(self, path: str) -> None:
        parts = self._split(path)
        if not parts:
            raise oserror(errno.EISDIR, "")
        with self._changing(parts):
            smbclient.remove(self._unc(parts), **self._call)

    def _rmtree(self, parts: Parts) -> None:
        with self._errors(parts), smbclient.scandir(self._unc(parts), **self._call) as scan:
            children = [(item.name, item.smb_info.file_attributes) for item in scan]
        for name, attributes in children:
            child = (*parts, name)
            if attributes & FILE_ATTRIBUTE_DIRECTORY:
                self._rmtree(child)
            else:
                with self._changing(child):
                    smbclient.remove(self._unc(child), **self._call)
        with self._changing(parts):
            self._changes.unwatch(parts)  # a watched folder would go only once unwatched
            smbclient.rmdir(self._unc(parts), **self._call)

    # -- moving and copying ---------------------------------------------------------------

    def mv(self, path1: str, path2: str, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        """A rename on the server; an existing file at ``path2`` is replaced."""
        src, dst = self._check_transfer(path1, path2)
        self.info(path1)  # a missing source names the source, not the target
        self._changes.unwatch(src)  # the server refuses to rename a folder open below
        self._replace(src, dst)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Server-side (SMB copy-chunk) into a temp name, then published by a rename."""
        src, dst = self._check_transfer(path1, path2)
        if self.info(path1)["type"] == "directory":
            raise oserror(errno.EISDIR, "/".join(src))
        if self._kind_of(dst) == "directory":
            raise oserror(errno.EISDIR, "/".join(dst))
        temp = (*dst[:-1], TEMP_PREFIX + secrets.token_hex(8))
        try:
            with self._errors(src):
                smbclient.copyfile(self._unc(src), self._unc(temp), **self._call)
            self._replace(temp, dst)
        except BaseException:
            self._remove_quietly(temp)
            raise


def _entry(rel: str, is_dir: bool, size: int, micros: int, file_id: int) -> dict[str, Any]:
    return {
        "name": rel,
        "type": "directory" if is_dir else "file",
        "size": size,
        # whole microseconds in both listing and info: they must agree exactly
        "mtime": micros / 1_000_000,
        "etag": f"{file_id:x}-{micros:x}-{size:x}",
    }


def _scan_entry(parts: Parts, name: str, info: Any) -> dict[str, Any]:
    is_dir = bool(info.file_attributes & FILE_ATTRIBUTE_DIRECTORY)
    micros = (info.last_write_time - _EPOCH) // _ONE_MICROSECOND
    return _entry("/".join((*parts, name)), is_dir, 0 if is_dir else info.end_of_file,
                  micros, info.file_id)


def _is_stale(info: Any) -> bool:
    """An upload temp file untouched for :data:`STALE_UPLOAD_S`: a killed process left it
    (a live upload writes to it all the time, and an aborted one deletes it)."""
    return (datetime.now(UTC) - info.last_write_time).total_seconds() > STALE_UPLOAD_S


def _float_to_ns(mtime: float) -> int:
    # Whole seconds first: mtime * 1e9 as one float would lose ~100 ns at today's dates.
    seconds, fraction = divmod(mtime, 1)
    return int(seconds) * 1_000_000_000 + round(fraction * 1_000_000_000)
