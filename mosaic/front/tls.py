"""TLS handshakes in the worker thread that serves the connection, not in the accept loop.

cheroot's BuiltinSSLAdapter does the handshake inside ``accept``, in the one
thread that accepts every connection: a client that opens a TCP connection and
never says hello stops the whole server from accepting anything for the
connection timeout (60 s, measured: no HTTPS request got through). Here
``wrap`` only sets TLS up, and the worker thread that takes the connection
does the handshake, after the address gate has counted it
(:mod:`mosaic.front.admission`), so a silent client holds one thread of its
own address's share and nothing else.
"""

from __future__ import annotations

import ssl
from typing import Any


class DeferredHandshake:
    """Mixin over cheroot's BuiltinSSLAdapter: ``wrap`` without the handshake."""

    context: ssl.SSLContext

    def wrap(self, sock: Any) -> tuple[ssl.SSLSocket, dict[str, Any]]:
        wrapped = self.context.wrap_socket(sock, do_handshake_on_connect=False,
                                           server_side=True)
        return wrapped, {}  # the environ entries come with the handshake


def deferring_handshakes(adapter: Any) -> Any:
    """A copy of ``adapter`` (a cheroot BuiltinSSLAdapter) that leaves handshakes to the workers."""
    kind = type("DeferredHandshakeAdapter", (DeferredHandshake, type(adapter)), {})
    deferred = kind.__new__(kind)
    deferred.__dict__.update(adapter.__dict__)  # the same context, certificate and settings
    return deferred


def pending(conn: Any) -> bool:
    """True for a TLS connection whose handshake has not been done yet."""
    return isinstance(conn.socket, ssl.SSLSocket) and conn.socket.cipher() is None


def handshake(conn: Any) -> bool:
    """Finish a pending handshake (within the socket's timeout); False if it failed.

    A failed handshake (a client speaking plain HTTP, a scanner, a timeout)
    is the client's business: the connection is dropped without a log line.
    """
    if not pending(conn):
        return True
    try:
        conn.socket.do_handshake()
    except (ssl.SSLError, OSError):
        return False
    conn.ssl_env = conn.server.ssl_adapter.get_environ(conn.socket)
    return True
