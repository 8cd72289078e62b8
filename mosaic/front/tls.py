"""TLS handshakes in the request's thread, under the head deadline.

cheroot's TLS adapters handshake inside ``wrap()``, which its single acceptor
thread calls for every new connection with the connection timeout (60 s):
one client that opens a TCP connection and sends nothing stops the whole
server from accepting anyone for a minute (measured: three such connections
kept an HTTPS request waiting over 90 s). Here ``wrap()`` only wraps; the
handshake happens when the connection's first request is read, in a worker
thread, as part of the head and within its deadline.
"""

from __future__ import annotations

import ssl
from typing import Any

from mosaic.front.refusals import log_refusal


class HandshakeInWorker:
    """Wraps a cheroot TLS adapter (``BuiltinSSLAdapter``) so that ``wrap``
    returns a socket whose handshake is still to be done."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter

    def wrap(self, sock: Any) -> tuple[ssl.SSLSocket, dict[str, str]]:
        wrapped = self.adapter.context.wrap_socket(sock, server_side=True,
                                                   do_handshake_on_connect=False)
        return wrapped, {}

    def __getattr__(self, name: str) -> Any:  # bind, makefile, context, ...
        return getattr(self.adapter, name)


def handshake(conn: Any, adapter: HandshakeInWorker, seconds: float, restore: float) -> bool:
    """Complete ``conn``'s handshake within ``seconds``; False (logged) if it fails."""
    sock: ssl.SSLSocket = conn.socket
    sock.settimeout(seconds)
    try:
        sock.do_handshake()  # one deadline for the whole handshake (CPython's _ssl)
    except (OSError, ValueError) as error:  # ssl.SSLError and timeouts are OSErrors
        client = conn.remote_addr or "?"
        log_refusal(408 if isinstance(error, TimeoutError) else 400,
                    f"TLS handshake failed: {error}", client, "")
        return False
    finally:
        sock.settimeout(restore)
    conn.ssl_env = adapter.adapter.get_environ(sock)
    return True
