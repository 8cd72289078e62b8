"""How an ``smb`` mount reaches its share: its own connections, signed in, through
DFS referrals with failover to the next target.

A mixin of :class:`mosaic.providers.smb.SMBFileSystem`, split out along the seam
between reaching the share and using it; the attributes it reads are set by that
class's ``__init__`` and declared below.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import smbclient
import smbclient._pool as smbclient_pool
from smbprotocol.connection import Connection
from smbprotocol.exceptions import SMBException, SMBOSError
from smbprotocol.header import NtStatus

from mosaic.core.errors import MountUnavailableError, OwnAccountError
from mosaic.providers import smb_dfs
from mosaic.providers.smb_options import DIALECTS, Options
from mosaic.providers.smb_status import session_failure, status_of

log = logging.getLogger("mosaic.providers.smb")


def _alive(connection: Connection | None) -> bool:
    """Connected, and not closed by the server. smbprotocol's receiver thread marks the
    transport closed when it reads the end of the stream, but it may not have run yet
    when the next request comes: a peek at the socket (nothing consumed) tells at once,
    so a DFS mount fails over instead of answering 503."""
    if connection is None or not connection.transport.connected:
        return False
    sock = getattr(connection.transport, "_sock", None)  # recheck when smbprotocol changes
    if sock is None:
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:  # nothing to read: open
        return True
    except OSError:  # reset
        return False


def disconnect_all(cache: dict[str, Connection]) -> None:
    for connection in list(cache.values()):
        with suppress(Exception):  # a dead server: nothing left to log off from
            connection.disconnect()
    cache.clear()


class ShareSession:
    """Connecting, signing in and following DFS referrals for one mount."""

    # set by SMBFileSystem.__init__
    _options: Options
    _tenant: str
    _mount: str
    _provider_name: str
    _named: str  # the path the mount names, "\\\\host\\share\\folders"
    _root: str  # where its calls go: the named path, or a DFS target's
    _key: str  # "host:port" of self._root's server in self._cache
    _cache: dict[str, Connection]
    _call: dict[str, Any]
    _lock: threading.Lock
    _trying: threading.local
    _referral: smb_dfs.Referral | None
    _retry_at: float
    _failure: str

    def _unavailable(self, reason: str) -> OSError:
        raise NotImplementedError

    def _mark_up(self) -> None:
        raise NotImplementedError

    def _ensure_session(self) -> None:
        """A connection of this filesystem's own, of an acceptable dialect, signed in;
        smbclient's calls then find both in ``self._cache`` (keyed "host:port").

        After a failure the server is left alone for ``retry_after_failure_s``:
        a wrong password tried on every request would lock the account out."""
        with self._lock:
            if _alive(self._cache.get(self._key)):
                return
            if time.monotonic() < self._retry_at:
                raise self._unavailable(self._failure)
            try:
                self._connect_mount()
            except (MountUnavailableError, OwnAccountError):
                self._retry_at = time.monotonic() + self._options.retry_after_failure_s
                raise
        self._mark_up()

    def _connect_mount(self) -> None:
        """Sign in where the mount's path lives: the named share, or for a path inside a
        DFS namespace each target of its referral in turn until one answers."""
        referral = self._referral
        if referral is None:
            referral = self._referral = self._ask_referral()
        elif referral.expired:
            try:
                with self._quietly():
                    referral = self._ask_referral()
            except MountUnavailableError:
                pass  # the namespace server down: its last referral still names the targets
            self._referral = referral
        if referral is None:
            self._use(self._named, check_share=False)
            return
        reason = "the DFS link has no target"
        for number, target in enumerate(referral.candidates(self._named[1:]), 1):
            try:
                with self._quietly():
                    self._use("\\" + target, check_share=True)  # the referral's "\\server\\..."
            except MountUnavailableError as exc:
                reason = exc.reason
                continue  # this target is down: fail over to the next one
            if number > 1:
                log.warning("tenant %s: mount %s (%s): DFS target %d of %d answers, the ones "
                            "tried before it did not", self._tenant, self._mount,
                            self._provider_name, number, len(referral.targets))
            referral.prefer(target)
            return
        self._referral = None  # every target down: ask the namespace again next time
        raise self._unavailable(f"no target of the DFS link answers ({reason})")

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        """Failures are not the mount's outage (nothing logged): another DFS target, or
        the referral already known, may still serve it."""
        self._trying.target = True
        try:
            yield
        finally:
            self._trying.target = False

    def _ask_referral(self) -> smb_dfs.Referral | None:
        """The referral covering the mount's path when its share is a DFS namespace root;
        None for a plain share (or a namespace path no link covers)."""
        host, share = self._options.host, self._options.share
        self._sign_in(host)
        tree = self._tree(f"\\\\{host}\\{share}")
        if tree is None or not tree.is_dfs_share:
            return None  # a plain share: its own calls tell what is wrong with it
        try:
            return smb_dfs.ask(tree, self._named[1:])
        except SMBException as exc:
            raise self._unavailable(session_failure(exc)) from None
        except (ConnectionError, TimeoutError) as exc:
            raise self._unavailable("the file server cannot be reached") from exc

    def _use(self, root: str, check_share: bool) -> None:
        """Serve the mount from ``root`` (``\\\\server\\share\\folders``): signed in to its
        server, the mount's folder made if asked to. ``check_share``: a DFS target
        without the share (or whose connection fails) is down like an unreachable one."""
        server = smb_dfs.server_of(root)
        self._sign_in(server)
        if check_share:
            share = "\\".join(root.lstrip("\\").split("\\")[:2])
            self._tree(f"\\\\{share}")
        self._root, self._key = root, f"{server.lower()}:{self._options.port}"
        if self._options.create and self._options.path:
            try:
                self._create_root(root)
            except SMBException as exc:  # not a refusal of the folder: the connection's end
                raise self._unavailable(session_failure(exc)) from None
            except (ConnectionError, TimeoutError) as exc:
                raise self._unavailable("the file server cannot be reached") from exc

    def _tree(self, share: str) -> Any:
        """The share's tree connect; None when the share refuses this account (a 403 for
        the mount's calls, not a mount down)."""
        try:
            return smbclient_pool.get_smb_tree(share, **self._call)[0]
        except SMBException as exc:
            if status_of(exc) == NtStatus.STATUS_ACCESS_DENIED:
                return None
            raise self._unavailable(session_failure(exc)) from None
        except (ConnectionError, TimeoutError, ValueError) as exc:
            raise self._unavailable("the file server cannot be reached") from exc

    def _sign_in(self, server: str) -> None:
        """A live, signed-in connection to ``server`` in this filesystem's cache."""
        key = f"{server.lower()}:{self._options.port}"
        if _alive(self._cache.get(key)):
            return
        self._cache.pop(key, None)
        self._cache[key] = self._connect(server)

    def _connect(self, server: str) -> Connection:
        options = self._options
        connection = Connection(uuid.uuid4(), server, options.port,
                                require_signing=options.require_signing)
        # smbprotocol's receiver sends an echo after this much silence and drops the
        # connection when that is not answered in as long again: 10 minutes by default
        # (only an environment variable changes it, for every connection), so a hung
        # server would hold this mount's requests, and the server's threads, for 20.
        connection._receive_timeout = options.timeout_s
        try:
            connection.connect(timeout=options.connect_timeout_s)
        except (ValueError, OSError, SMBException) as exc:  # ValueError: "Failed to connect"
            raise self._unavailable("the file server cannot be reached") from exc
        try:
            if connection.dialect < DIALECTS[options.min_dialect]:
                raise self._unavailable(f"the file server offers no SMB {options.min_dialect} "
                                        "or later")
            # register_session finds the new connection in the cache it is given
            own = {f"{server.lower()}:{options.port}": connection}
            smbclient.register_session(server, **{**self._call, "connection_cache": own})
        except BaseException as exc:
            with suppress(Exception):
                connection.disconnect()
            if isinstance(exc, SMBException):
                raise self._unavailable(session_failure(exc)) from None
            raise
        return connection

    def _create_root(self, root: str) -> None:
        """Make the mount's folder (and its parents) on the share if it is missing.

        A folder that exists or cannot be made is left as it is: the mount's own calls
        then answer for it (a 404 or 403 of that path, not a mount down)."""
        names = root.lstrip("\\").split("\\")
        folder = "\\\\" + "\\".join(names[:2])
        for name in names[2:]:
            folder = f"{folder}\\{name}"
            with suppress(SMBOSError):
                smbclient.mkdir(folder, **self._call)

    def _drop_connection(self) -> None:
        """Forget a broken connection: the next call connects and signs in again."""
        with self._lock:
            broken = self._cache.pop(self._key, None)
        if broken is not None:
            with suppress(Exception):
                broken.disconnect(close=False)

