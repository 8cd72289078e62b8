"""cheroot's request, connection and server classes with the strict front end plugged in.

``FrontRequest`` replaces cheroot's head parsing (``parse_request``) and body
framing (``respond``); everything after that (the WSGI gateway, writing the
answer) stays cheroot's. Limits are read from the live config per request.
"""

from __future__ import annotations

import email.utils
import socket
import ssl
from collections.abc import Callable
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.makefile import MakeFile

from mosaic.config.schema import Limits
from mosaic.front.body import Body, ChunkedBody, LengthBody, ReadBody
from mosaic.front.head import Head, read_head
from mosaic.front.pages import SERVER_NAME
from mosaic.front.refusals import BodyRefusal, Refusal, log_refusal, status_line
from mosaic.front.target import parse_target
from mosaic.front.tls import HandshakeInWorker, handshake
from mosaic.front.wire import BodyClock, HeadClock, Wire


class FrontRequest(cheroot_server.HTTPRequest):
    server: FrontServer
    rfile: Any

    def parse_request(self) -> None:
        self.limits = self.server.limits()
        conn = self.conn
        if conn.handshake_pending:
            conn.handshake_pending = False
            if not handshake(conn, self.server.ssl_adapter, self.limits.head_timeout_seconds,
                             self.server.timeout):
                self.close_connection = True
                return
        wire = Wire(self.conn.rfile, self.conn.socket, HeadClock(self.limits.head_timeout_seconds),
                    self.server.timeout)
        try:
            head = read_head(wire, self.limits)
            if head is not None:
                self._adopt(head)
        except Refusal as refusal:
            self.head = refusal.head or getattr(self, "head", None)
            self.refuse(refusal.status, refusal.reason)
        except OSError:  # the client reset the connection: nobody to answer
            self.close_connection = True

    def _adopt(self, head: Head) -> None:
        """Set what cheroot's own parser would have set, from the strict head."""
        self.started_request = True
        self.head = head
        target = parse_target(head.method, head.target)
        self.method, self.uri, self.inheaders = head.method, head.target, head.headers
        self.path, self.qs = target.path, target.query
        self.authority = target.authority or b""
        if target.authority is not None:  # RFC 9112 section 3.2.2: it replaces Host
            self.inheaders[b"Host"] = target.authority
        self.request_protocol = b"HTTP/%d.%d" % head.version
        self.response_protocol = self.request_protocol.decode()
        tokens = {t.strip().lower() for t in self.inheaders.get(b"Connection", b"").split(b",")}
        self.close_connection = (b"close" in tokens if head.version >= (1, 1)
                                 else b"keep-alive" not in tokens)
        self.chunked_read = head.chunked
        self.ready = True

    def respond(self) -> None:
        try:
            self.rfile = self._body()
        except BodyRefusal as refusal:
            self.refuse(refusal.value, refusal.reason)
            return
        # cheroot's respond() without its body framing, which would replace ours.
        self.server.gateway(self).respond()
        if self.ready:
            self.ensure_headers_sent()
        if self.chunked_write:
            self.conn.wfile.write(b"0\r\n\r\n")

    def _body(self) -> Body:
        head = self.head
        if not head.chunked:
            return LengthBody(self._open_wire, head.content_length or 0)
        if head.method == b"PUT":  # streams to storage: no size limit, only the clock
            return ChunkedBody(self._open_wire, None, self.limits.max_head_bytes,
                               self.limits.max_header_fields)
        # Every other body is parsed in memory and wsgidav reads only bodies of
        # known length: read it here, within the limit, and hand it on as one.
        body = ChunkedBody(self._open_wire, self.limits.max_xml_body_bytes,
                           self.limits.max_head_bytes, self.limits.max_header_fields)
        data = body.read()
        del self.inheaders[b"Transfer-Encoding"]
        self.inheaders[b"Content-Length"] = str(len(data)).encode()
        self.chunked_read = False
        return ReadBody(data)

    def _open_wire(self) -> Wire:
        """The body's wire: its clock starts now, after a 100 Continue if asked for."""
        if b"100-continue" in self.inheaders.get(b"Expect", b"").lower():
            # Sent only when the body is wanted: an upload refused (401, 403,
            # 413) before that is never sent at all.
            self.conn.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        limits = self.limits
        clock = BodyClock(limits.body_idle_timeout_seconds, limits.body_min_bytes_per_second,
                          limits.body_rate_grace_seconds)
        return Wire(self.conn.rfile, self.conn.socket, clock, self.server.timeout)

    def send_headers(self) -> None:
        body = self.rfile
        if isinstance(body, Body):
            if body.refusal is not None:
                self._log(body.refusal.value, body.refusal.reason)
            if not body.finished:
                # The rest of the body is still on the wire: it must never be
                # read as the next request. (cheroot would read a known-length
                # rest into memory to keep the connection.)
                self.close_connection = True
        super().send_headers()

    def refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` before the application, and close the connection."""
        self._log(status, reason)
        self.close_connection = True
        text = f"{status_line(status)}: {reason}\n".encode()
        head = (f"HTTP/1.1 {status_line(status)}\r\nServer: {SERVER_NAME}\r\n"
                f"Date: {email.utils.formatdate(usegmt=True)}\r\nConnection: close\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(text)}\r\n\r\n")
        try:
            self.conn.wfile.write(head.encode() + text)
            # Stop sending, so the client reads the answer before it is reset.
            self.conn.socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client is gone; the refusal is logged

    def _log(self, status: int, reason: str) -> None:
        head = getattr(self, "head", None)
        request = f"{head.method.decode()} {head.target[:200]!r}" if head else ""
        log_refusal(status, reason, self.conn.remote_addr or "?", request)


class FrontConnection(cheroot_server.HTTPConnection):
    RequestHandlerClass = FrontRequest

    def __init__(self, server: FrontServer, sock: Any, makefile: Any = MakeFile) -> None:
        super().__init__(server, sock, makefile)
        self.handshake_pending = isinstance(sock, ssl.SSLSocket)


class FrontServer(wsgi.Server):
    """cheroot's WSGI server with the strict front end; ``limits`` gives the live limits."""

    ConnectionClass = FrontConnection

    def __init__(self, *args: Any, limits: Callable[[], Limits], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    @property  # type: ignore[override]
    def ssl_adapter(self) -> HandshakeInWorker | None:
        return self.__dict__.get("_tls")

    @ssl_adapter.setter
    def ssl_adapter(self, adapter: Any) -> None:
        self.__dict__["_tls"] = None if adapter is None else HandshakeInWorker(adapter)
