"""Admission of cheroot connections: a client address's share of the worker's threads.

cheroot hands a new connection to a worker thread right after accepting it
(a kept-alive one when its next byte arrives), and the thread then reads the
head itself: a client that stays silent, or sends its head or body (or reads
its answer) a byte a second, holds that thread all along. So the address is
counted from the moment a thread takes its connection, before the TLS
handshake, before the head is read and before anyone is authenticated; a
connection over its address's share is answered 503 at once and closed, and
the thread moves on. The tenant's share is counted later, once the login is
known (:mod:`mosaic.front.tenant_share`).

Wiring, in ``make_server``::

    admission.install(server, holder)
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from cheroot import server as cheroot_server

from mosaic.config.holder import ConfigHolder
from mosaic.front.shares import Shares, refusal_head

#: Unread bytes we take from a refused connection before closing it: closing a
#: socket with unread input sends a reset that may destroy our 503 in flight.
_DRAIN_BYTES = 64 * 1024

#: What the request the current thread serves asked for at its end.
_this_request = threading.local()


def close_after_this_request() -> None:
    """Close the connection once the current answer is sent: nothing more is read from it."""
    _this_request.close = True


def at_end_of_this_request(release: Callable[[], None]) -> bool:
    """Call ``release`` once the current request is over, however it ends.

    wsgidav's ErrorPrinter does not close the answers below it when a client
    goes away mid-answer, so the end of a request is only certain here, where
    the thread leaves the connection. False outside a gated request (another
    WSGI server): then nothing would ever call ``release``.
    """
    endings = getattr(_this_request, "endings", None)
    if endings is None:
        return False
    endings.append(release)
    return True


def busy_threads() -> int | None:
    """Threads of this worker serving a request now (None outside a gated request)."""
    busy = getattr(_this_request, "busy", None)
    return None if busy is None else busy.total


class AddressGate:
    """Mixin over cheroot's HTTPConnection: counts each request against its address."""

    holder: ConfigHolder
    addresses: Shares
    remote_addr: str | None
    socket: Any

    def communicate(self) -> bool:
        address = self.remote_addr or ""
        settings = self.holder.current.server
        fair_share = settings.fair_share
        if not self.addresses.enter(
                address, fair_share.address_limit(settings.threads),
                fair_share.room_to_spare(settings.threads, self.addresses.total + 1)):
            _refuse(self, fair_share.retry_after_seconds)
            return False
        _this_request.close = False
        _this_request.endings = []
        _this_request.busy = self.addresses
        try:
            # A TLS handshake is done in there too (mosaic.front.tls), behind this count.
            keep_open: bool = super().communicate()  # type: ignore[misc]
        finally:
            self.addresses.leave(address)
            _end_request()
            _this_request.busy = None
        return keep_open and not _this_request.close


def _end_request() -> None:
    endings, _this_request.endings = _this_request.endings, None
    for release in endings:
        release()


class CloseOnRequest:
    """Mixin over cheroot's HTTPRequest: closes instead of reading a body nobody wants.

    cheroot reads whatever is left of the request body before it sends the
    head of a keep-alive answer: a refused upload trickling a byte a second
    would hold the thread all the same.
    """

    close_connection: bool

    def send_headers(self) -> None:
        if getattr(_this_request, "close", False):
            self.close_connection = True
        super().send_headers()  # type: ignore[misc]


def _refuse(conn: Any, retry_after: int) -> None:
    if getattr(conn, "handshake_pending", False):
        # No answer can be sent before a handshake, and doing it would hold
        # this thread for as long as the client cares to take: just close.
        return
    sock = conn.socket
    status, headers, body = refusal_head(retry_after)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    with contextlib.suppress(OSError):
        sock.sendall(f"HTTP/1.1 {status}\r\n{head}\r\n".encode("latin-1") + body)
        _drain(sock)


def _drain(sock: Any) -> None:
    """Read what already arrived, without waiting for more."""
    sock.setblocking(False)
    taken = 0
    with contextlib.suppress(BlockingIOError, ssl.SSLWantReadError, OSError):
        while taken < _DRAIN_BYTES:
            data = sock.recv(16384)
            if not data:
                break
            taken += len(data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def install(server: cheroot_server.HTTPServer, holder: ConfigHolder) -> None:
    """Count every connection of ``server`` against its client address's share.

    The connection classes are ``server``'s own (mosaic.front.request) with the
    count around them.
    """
    base = server.ConnectionClass
    requests = type("AdmittedRequest", (CloseOnRequest, base.RequestHandlerClass), {})
    server.ConnectionClass = type("AdmittedConnection", (AddressGate, base), {
        "holder": holder, "addresses": Shares("address"), "RequestHandlerClass": requests})
