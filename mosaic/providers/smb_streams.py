"""The file objects an ``smb`` mount hands out: reads ahead, writes behind, and
raises the VFS vocabulary.

A download keeps :data:`READS_AHEAD` READ requests in flight beyond the block
being served and an upload :data:`WRITES_IN_FLIGHT` WRITE requests, so the file
server reads or writes the next block while Mosaic talks to its client; one
request at a time (smbclient's file objects) left each side idle by turns.
Requests go out through the open file's own ``Open`` (smbprotocol's send and
receive halves), as smbclient's raw file object would send them; none goes out
that the credits the server granted do not cover, and each asks for enough more
to keep its stream's requests out.

smbprotocol raises its own errors; a connection lost mid-transfer must reach
the DAV layer as the mount being unavailable (503), not as an unknown error
(500). ``translating`` is the filesystem's context manager doing that for one
path.
"""

from __future__ import annotations

import errno
import io
import threading
import weakref
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from smbprotocol import MAX_PAYLOAD_SIZE
from smbprotocol.connection import Connection
from smbprotocol.exceptions import SMBException

#: READ requests sent ahead of the block being served (memory: this many blocks more)
READS_AHEAD = 1
#: WRITE requests out at once (memory: this many blocks, held until answered)
WRITES_IN_FLIGHT = 2
#: credits kept for the mount's other calls (a lookup costs one)
SPARE_CREDITS = 8

_send_locks: weakref.WeakKeyDictionary[Connection, threading.Lock] = weakref.WeakKeyDictionary()
_send_locks_lock = threading.Lock()


def _send_lock(connection: Connection) -> threading.Lock:
    """One per connection: the credit check and the send are one step for every
    stream on it (transfers of one mount share its connection)."""
    with _send_locks_lock:
        lock = _send_locks.get(connection)
        if lock is None:
            lock = _send_locks[connection] = threading.Lock()
        return lock


def _charge(connection: Connection, length: int) -> int:
    """Credits a READ or WRITE of ``length`` bytes costs (MS-SMB2 3.2.4.1.5)."""
    if not connection.supports_multi_credit:
        return 1
    return (max(length, 1) - 1) // MAX_PAYLOAD_SIZE + 1


def _available(connection: Connection) -> int:
    window = connection.sequence_window
    return int(window["high"] - window["low"])


class _Requests:
    """READ or WRITE requests of one open file, oldest first in ``pending``: (offset,
    length, request, receive). Each asks the server for the credits to have ``depth``
    more blocks of ``block`` bytes out, and a few spare."""

    def __init__(self, fd: Any, block: int, depth: int) -> None:
        self._fd = fd
        self._connection: Connection = fd.connection
        self._want = (depth + 1) * _charge(self._connection, block) + SPARE_CREDITS
        self.pending: deque[tuple[int, int, Any, Callable[[Any], Any]]] = deque()

    def affordable(self, length: int) -> int:
        """How much of ``length`` the credits granted now allow (0: nothing)."""
        spare = _available(self._connection) - SPARE_CREDITS
        if spare >= _charge(self._connection, length):
            return length
        return max(spare, 0) * MAX_PAYLOAD_SIZE if self._connection.supports_multi_credit else 0

    def send(self, make: Callable[[int], tuple[Any, Callable[[Any], Any]]], offset: int,
             length: int) -> int:
        """Send ``make(length)``'s message: the length sent. With too few credits,
        nothing (0) while requests are out, else a shorter one (at least one credit's
        worth, as smbclient would)."""
        connection = self._connection
        with _send_lock(connection):
            affordable = self.affordable(length)
            if affordable < length and self.pending:
                return 0  # the answers to come grant more: a whole block then
            if not affordable:
                affordable = min(length, MAX_PAYLOAD_SIZE)  # as smbclient would, at least
            charge = _charge(connection, affordable)
            asked = charge + max(0, self._want - (_available(connection) - charge))
            message, receive = make(affordable)
            tree = self._fd.tree_connect
            request = connection.send(message, sid=tree.session.session_id,
                                      tid=tree.tree_connect_id, credit_request=asked)
        self.pending.append((offset, affordable, request, receive))
        return affordable

    def oldest(self) -> tuple[int, int, Any]:
        """(offset, length, answer) of the oldest request, waited for."""
        offset, length, request, receive = self.pending.popleft()
        return offset, length, receive(request)

    def drop(self) -> None:
        """Wait for every request out and forget the answers (smbprotocol keeps a
        request until it is received)."""
        while self.pending:
            _, _, request, receive = self.pending.popleft()
            with suppress(SMBException, OSError):
                receive(request)


class Reader:
    """A file opened for reading, read in blocks of ``block`` bytes with
    :data:`READS_AHEAD` more requested while one is served."""

    def __init__(self, raw: Any, block: int, translating: Callable[[], Any]) -> None:
        self._raw = raw  # smbclient's raw file: it opened the file and closes it
        self._translating = translating
        fd = raw.fd
        self._block = min(block, fd.connection.max_read_size)
        self._requests = _Requests(fd, self._block, READS_AHEAD)
        self._end = fd.end_of_file  # others may read or delete it, never write it
        self._position = 0  # of the caller
        self._next = 0  # offset of the next READ
        self._data = memoryview(b"")  # received, from _position on
        self._closed = False

    def read(self, size: int | None = -1) -> bytes:
        with self._translating():
            if size is None or size < 0:
                return b"".join(iter(lambda: bytes(self._take(self._block)), b""))
            return bytes(self._take(size))

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with self._translating():
            data = self._take(len(view))
        view[:len(data)] = data
        return len(data)

    def _take(self, size: int) -> memoryview:
        if self._closed:
            raise ValueError("read from a closed file")
        if not self._data and size and not self._receive():
            return memoryview(b"")
        taken, self._data = self._data[:size], self._data[size:]
        self._position += len(taken)
        return taken

    def _receive(self) -> bool:
        """The next block into ``_data``; False at the end of the file."""
        self._ask_ahead(READS_AHEAD + 1)  # this block's request and those ahead of it
        if not self._requests.pending:
            return False
        offset, length, data = self._requests.oldest()
        if len(data) < length:  # the file ended early: what was asked beyond starts wrong
            self._requests.drop()
            self._next = offset + len(data)
            if not data:
                self._end = offset
        self._data = memoryview(data)
        return bool(data)

    def _ask_ahead(self, requests: int) -> None:
        fd = self._raw.fd
        while len(self._requests.pending) < requests and self._next < self._end:
            sent = self._requests.send(
                lambda length, offset=self._next: fd.read(offset, length, send=False),
                self._next, min(self._block, self._end - self._next))
            if not sent:
                return
            self._next += sent

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: 0, io.SEEK_CUR: self._position,
                  io.SEEK_END: self._end}[whence] + offset
        if target < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        if self._position <= target <= self._position + len(self._data):
            self._data = self._data[target - self._position:]  # within the block served
        else:
            with self._translating():
                self._requests.drop()
            self._data = memoryview(b"")
            self._next = target
        self._position = target
        return target

    def tell(self) -> int:
        return self._position

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._data = memoryview(b"")
        with suppress(OSError), self._translating():  # a lost connection closed it anyway
            self._requests.drop()
            self._raw.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TempWriter:
    """An upload's temp file, written in blocks of ``block`` bytes with up to
    :data:`WRITES_IN_FLIGHT` requests out. Closing it twice is harmless; closing a
    broken one (a write failed) raises nothing more: it is never published."""

    def __init__(self, raw: Any, block: int, translating: Callable[[], Any]) -> None:
        self._raw = raw
        self._translating = translating
        self._block = min(block, raw.fd.connection.max_write_size)
        self._requests = _Requests(raw.fd, self._block, WRITES_IN_FLIGHT)
        self._chunks: deque[bytes] = deque()  # written, not sent yet
        self._buffered = 0
        self._offset = 0  # of the next WRITE
        self._written = 0
        self._broken = False
        self._closed = False

    def write(self, data: Any) -> int:
        if self._closed:
            raise ValueError("write to a closed file")
        chunk = data if type(data) is bytes else bytes(data)
        try:
            with self._translating():
                self._chunks.append(chunk)
                self._buffered += len(chunk)
                while self._buffered >= self._block:
                    self._send(self._block)
        except BaseException:
            self._broken = True
            raise
        self._written += len(chunk)
        return len(chunk)

    def _send(self, size: int) -> None:
        """The first ``size`` bytes buffered, in one WRITE or more (as credits allow)."""
        while size:
            while self._requests.pending and (
                    len(self._requests.pending) >= WRITES_IN_FLIGHT
                    or self._requests.affordable(size) < size):
                self._complete_oldest()
            sent = self._requests.send(self._message, self._offset, size)
            self._offset += sent
            size -= sent

    def _message(self, size: int) -> tuple[Any, Callable[[Any], Any]]:
        return self._raw.fd.write(self._take(size), offset=self._offset, send=False)

    def _take(self, size: int) -> bytes:
        parts: list[bytes] = []
        while size:
            chunk = self._chunks.popleft()
            if len(chunk) > size:  # the rest stays for the next block
                self._chunks.appendleft(chunk[size:])
                chunk = chunk[:size]
            parts.append(chunk)
            size -= len(chunk)
            self._buffered -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _complete_oldest(self) -> None:
        _, length, count = self._requests.oldest()
        if count != length:  # the next write went out already: a hole, never published
            raise OSError(errno.EIO, f"the file server wrote {count} of {length} bytes")

    def tell(self) -> int:
        return self._written

    @property
    def closed(self) -> bool:
        return self._closed

    def flush(self) -> None:
        """Everything written so far sent and acknowledged."""
        try:
            with self._translating():
                if self._buffered:
                    self._send(self._buffered)
                while self._requests.pending:
                    self._complete_oldest()
        except BaseException:
            self._broken = True
            raise

    def close(self) -> None:
        if self._closed:
            return
        broken = self._broken
        try:
            if not broken:
                self.flush()
        except BaseException:
            broken = True
            raise
        finally:
            self._closed = True
            self._chunks.clear()
            try:
                with self._translating():
                    self._requests.drop()
                    self._raw.close()
            except OSError:
                if not broken:  # the file may not be complete on the server
                    raise
