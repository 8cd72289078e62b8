"""Outside changes at once: SMB2 CHANGE_NOTIFY on the folders a mount listed lately.

A listing is reused for ``listing_cache_seconds``; a change made on the file server by
someone else (Samba's smbclient, a Windows user on the LAN) would show only once it
expires. Each folder listed recently gets a watch instead: a directory handle of the
mount's own session (its connection cache and credentials, never smbclient's pool)
with a CHANGE_NOTIFY request outstanding. When the server answers one, the cached
listing of that folder (and what is cached below the names it reports) is forgotten,
not rescanned, and the request is sent again on the same handle.

* Bounded: at most ``change_notify_folders`` watches per filesystem, the ones listed
  last; a watch not listed for ``change_notify_idle_s`` is closed.
* One thread per filesystem, and only while it watches something. It waits for any
  answer at once: each request's response event, which smbprotocol's receiver thread
  sets, also wakes it (see :class:`_Relay`).
* A watch that fails (the connection lost, the folder deleted, a server that refuses
  notifications) ends, and its folder's cached listing is forgotten with it: the next
  listing rescans, reconnecting if need be, and watches again. Where notifications
  never work, the listing cache's lifetime still applies.
* Handles are opened with every sharing mode: they keep nobody from reading,
  writing, renaming or deleting the folder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from smbclient._io import SMBDirectoryIO
from smbprotocol.change_notify import (
    CompletionFilter,
    FileNotifyInformation,
    SMB2ChangeNotifyRequest,
    SMB2ChangeNotifyResponse,
)
from smbprotocol.connection import Connection, Request
from smbprotocol.exceptions import NotifyEnumDir, SMBException, SMBResponseException
from smbprotocol.header import NtStatus

from mosaic.providers.listcache import ListingCache

log = logging.getLogger(__name__)

Parts = tuple[str, ...]
#: what makes a listing differ: names, sizes, times and attributes of the entries
CHANGES = (CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME
           | CompletionFilter.FILE_NOTIFY_CHANGE_DIR_NAME
           | CompletionFilter.FILE_NOTIFY_CHANGE_ATTRIBUTES
           | CompletionFilter.FILE_NOTIFY_CHANGE_SIZE
           | CompletionFilter.FILE_NOTIFY_CHANGE_LAST_WRITE
           | CompletionFilter.FILE_NOTIFY_CHANGE_CREATION)
#: bytes of names the server may report per answer; more is STATUS_NOTIFY_ENUM_DIR
NOTIFY_BUFFER = 16 * 1024
#: how often the thread looks for idle watches and a dead connection without an answer
TICK_S = 1.0
#: how long a closed watch's request may take to be answered
CLEANUP_WAIT_S = 2.0


#: answers of a server that does not do change notifications (Samba's
#: ``change notify = no`` answers NOT_IMPLEMENTED)
REFUSALS = frozenset({0xC0000002, 0xC00000BB, 0xC0000010})  # NOT_IMPLEMENTED,
# NOT_SUPPORTED, INVALID_DEVICE_REQUEST


class WatchEnded(Exception):
    """The watch cannot go on (its handle or connection is gone)."""


class NotificationsRefused(WatchEnded):
    """The server does not do change notifications at all."""


class _Relay(threading.Event):
    """A request's response event that also wakes the watcher's thread."""

    def __init__(self, wakeup: threading.Event) -> None:
        super().__init__()
        self._wakeup = wakeup

    def set(self) -> None:
        super().set()
        self._wakeup.set()


def _receiver_alive(connection: Connection) -> bool:
    # smbprotocol's receiver thread ends when the server closes the connection, but
    # leaves transport.connected True and requests sent later unanswered: its thread
    # is the only sure sign (a private attribute: recheck on upgrades).
    worker = getattr(connection, "_t_worker", None)
    return worker is not None and worker.is_alive() and connection.transport.connected


class _Watch:
    """One folder's directory handle and its outstanding CHANGE_NOTIFY request."""

    def __init__(self, parts: Parts, handle: SMBDirectoryIO, wakeup: threading.Event) -> None:
        self.parts = parts
        self.listed_at = time.monotonic()
        self._handle = handle
        self._wakeup = wakeup
        self._request: Request | None = None

    @property
    def _connection(self) -> Connection:
        return self._handle.fd.connection

    def arm(self) -> None:
        """Send a CHANGE_NOTIFY request; its answer wakes the watcher's thread."""
        fd = self._handle.fd
        message = SMB2ChangeNotifyRequest()
        message["output_buffer_length"] = NOTIFY_BUFFER
        message["file_id"] = fd.file_id
        message["completion_filter"] = CHANGES
        request = self._connection.send(message, fd.tree_connect.session.session_id,
                                        fd.tree_connect.tree_connect_id)
        # under the lock the receiver sets the event with: no answer is lost in between
        with request.response_event_lock:
            answered = request.response_event.is_set()
            request.response_event = _Relay(self._wakeup)
            if answered:
                request.response_event.set()
        self._request = request

    def changes(self) -> list[str] | None:
        """Names changed since the last call ([] if none yet); None: too many to name,
        all of the folder may have changed. Raises WatchEnded."""
        request = self._request
        if request is None or not _receiver_alive(self._connection):
            raise WatchEnded
        with request.response_event_lock:
            if not request.response_event.is_set():
                return []
            response = request.response
            if response is None:  # set by a receiver that ended
                raise WatchEnded
            if response["status"].get_value() == NtStatus.STATUS_PENDING:
                request.response_event.clear()  # the interim answer: the final one follows
                return []
        self._request = None
        try:
            answer = self._connection.receive(request)  # also forgets the request
        except NotifyEnumDir:
            return None
        except SMBResponseException as exc:  # the handle closed, the folder deleted
            if exc.status in REFUSALS:
                raise NotificationsRefused from exc
            raise WatchEnded from exc
        except SMBException as exc:
            raise WatchEnded from exc
        return _names(answer["data"].get_value())

    def close(self) -> None:
        request, self._request = self._request, None
        with suppress(Exception):  # a lost connection: nothing left to close
            self._handle.close()
        if request is not None:
            self._collect(request)

    def _collect(self, request: Request) -> None:
        """Take the final answer the server sends a closed handle's request
        (STATUS_NOTIFY_CLEANUP): smbprotocol keeps every request until it is taken,
        and forgetting it before that answer came would kill its receiver thread."""
        deadline = time.monotonic() + CLEANUP_WAIT_S
        while _receiver_alive(self._connection) and time.monotonic() < deadline:
            with request.response_event_lock:
                response = request.response
                final = (response is not None
                         and response["status"].get_value() != NtStatus.STATUS_PENDING)
            if final:
                with suppress(SMBException):
                    self._connection.receive(request)
                return
            time.sleep(0.01)


def _names(data: bytes) -> list[str] | None:
    reply = SMB2ChangeNotifyResponse()
    reply.unpack(data)
    buffer = reply["buffer"].get_value()
    if not buffer:
        return None  # a server may answer without naming anything
    names, offset = [], 0
    while True:
        entry = FileNotifyInformation()
        entry.unpack(buffer[offset:])
        names.append(entry["file_name"].get_value())
        step = entry["next_entry_offset"].get_value()
        if step == 0:
            return names
        offset += step


class ChangeWatcher:
    """The watches of one SMB filesystem and the thread that serves them."""

    def __init__(self, call: dict[str, Any], listings: ListingCache, limit: int,
                 idle_s: float, label: str) -> None:
        """``call``: the filesystem's smbclient keyword arguments (its own connection
        cache and credentials); ``label``: names the thread (tenant and mount)."""
        self._call = call
        self._listings = listings
        self._limit = limit if listings.enabled else 0  # nothing cached: nothing to forget
        self._idle_s = idle_s
        self._label = label
        self._watches: OrderedDict[Parts, _Watch] = OrderedDict()  # least recently listed first
        self._retired: list[_Watch] = []  # to be closed by the thread
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def watched(self) -> list[Parts]:
        """The folders watched now (folded case), least recently listed first."""
        with self._lock:
            return list(self._watches)

    def listed(self, parts: Parts) -> None:
        """The folder was listed (from the cache or not): its watch lives on."""
        key = _folded(parts)
        with self._lock:
            watch = self._watches.get(key)
            if watch is not None:
                watch.listed_at = time.monotonic()
                self._watches.move_to_end(key)

    @contextmanager
    def watching(self, parts: Parts, unc: str) -> Iterator[None]:
        """Around a folder's enumeration: its watch starts before, so that no change
        made between the enumeration and the watch goes unseen. Best effort: a folder
        that cannot be watched is listed all the same."""
        if self._limit > 0:
            self._start(parts, unc)
        yield

    def unwatch(self, parts: Parts) -> None:
        """Close the watches of a folder and of those below it, before it is removed:
        a folder open anywhere is only marked for deletion until the last handle
        closes (and would stay listed until then)."""
        folder = _folded(parts)
        with self._lock:
            ending = [key for key in self._watches if key[:len(folder)] == folder]
            watches = [self._watches.pop(key) for key in ending]
        for watch in watches:
            watch.close()

    def stop(self) -> None:
        """Have the thread close every handle and end (the filesystem is dropped)."""
        with self._lock:
            self._stopped = True
        # no join: a finalizer may run this on smbprotocol's receiver thread, which the
        # closing watches wait for; the thread ends as soon as they are closed
        self._wakeup.set()

    # -- watches ----------------------------------------------------------------------

    def _start(self, parts: Parts, unc: str) -> None:
        key = _folded(parts)
        with self._lock:
            if key in self._watches or self._stopped:
                return
        handle = SMBDirectoryIO(unc, mode="r", share_access="rwd", **self._call)
        try:
            handle.open()
            watch = _Watch(key, handle, self._wakeup)
            watch.arm()
        except (SMBException, OSError, ValueError) as exc:  # the enumeration will say why
            with suppress(Exception):
                handle.close()
            log.debug("%s: folder %r not watched: %s", self._label, "/".join(parts), exc)
            return
        with self._lock:
            if key in self._watches or self._stopped:  # another thread was quicker
                self._retired.append(watch)
            else:
                self._watches[key] = watch
                while len(self._watches) > self._limit:
                    self._retired.append(self._watches.popitem(last=False)[1])
            self._ensure_thread()
        self._wakeup.set()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"mosaic-smb-notify {self._label}")
            self._thread.start()

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wakeup.wait(TICK_S)
            self._wakeup.clear()
            with self._lock:
                retired, self._retired = self._retired, []
                if self._stopped:
                    retired += self._watches.values()
                    self._watches.clear()
                current = list(self._watches.values())
            for watch in retired:
                watch.close()
            for watch in current:
                self._serve(watch)
            with self._lock:
                if not self._watches and not self._retired:
                    self._thread = None  # a later watch starts another
                    return

    def _serve(self, watch: _Watch) -> None:
        try:
            names = watch.changes()
            if names is None or names:
                self._forget(watch.parts, names)
                watch.arm()
            elif time.monotonic() - watch.listed_at > self._idle_s:
                self._end(watch, forget=False)
        except NotificationsRefused:
            self._give_up(watch)
        except (WatchEnded, SMBException, OSError) as exc:
            log.debug("%s: watch of %r ended: %s", self._label, "/".join(watch.parts), exc)
            self._end(watch, forget=True)

    def _give_up(self, watch: _Watch) -> None:
        """No more watches on this filesystem: asking again on every listing would
        cost messages and, each watch ending, the cache itself."""
        with self._lock:
            first, self._limit = self._limit > 0, 0
        if first:
            log.info("%s: the file server does not send change notifications: changes "
                     "made there by others show after listing_cache_seconds", self._label)
        self._end(watch, forget=False)

    def _end(self, watch: _Watch, forget: bool) -> None:
        with self._lock:
            if self._watches.get(watch.parts) is watch:
                del self._watches[watch.parts]
        if forget:  # unwatched from now on: what was cached may already be stale
            self._forget(watch.parts, None)
        watch.close()

    def _forget(self, folder: Parts, names: list[str] | None) -> None:
        """Drop the folder's own listing and lookup, and what is cached below the
        changed names (below every name when the server did not name them)."""
        below = None if names is None else {folder + tuple(_folded((n,))) for n in names}
        depth = len(folder)

        def stale(key: Hashable) -> bool:
            parts = _folded(key[1]) if isinstance(key, tuple) and len(key) == 2 else None
            if parts is None or parts[:depth] != folder:
                return False
            if len(parts) == depth or below is None:
                return True
            return parts[:depth + 1] in below

        self._listings.forget(stale)


def _folded(parts: Any) -> Parts:
    """SMB names compare without case: one watch for "Docs" and "docs"."""
    return tuple(str(p).casefold() for p in parts)
