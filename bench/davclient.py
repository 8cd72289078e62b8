"""A minimal keep-alive WebDAV client on http.client (the same for every server)."""

from __future__ import annotations

import http.client
from types import TracebackType

from .settings import MIB

TIMEOUT = 300.0


class Dav:
    """One persistent connection; every request sends Basic credentials up front."""

    def __init__(self, host: str, port: int, authorization: str) -> None:
        self.host = host
        self.port = port
        self.authorization = authorization
        self._conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)

    def __enter__(self) -> Dav:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def reconnect(self) -> None:
        """Start on a new connection: servers close idle ones (cheroot after 10 s)."""
        self._conn.close()
        self._conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        self._conn.connect()  # now, so that no timed request pays for it

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": self.authorization, **(extra or {})}

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Send one request and read the whole answer: (status, body)."""
        self._conn.request(method, path, body=body, headers=self._headers(headers))
        response = self._conn.getresponse()
        return response.status, response.read()

    def get_stream(self, path: str, chunk: int = MIB) -> tuple[int, int]:
        """GET ``path`` reading into one reused buffer: (status, bytes received)."""
        self._conn.request("GET", path, headers=self._headers(None))
        response = self._conn.getresponse()
        buffer = memoryview(bytearray(chunk))
        received = 0
        while count := response.readinto(buffer):
            received += count
        return response.status, received

    def put_stream(self, path: str, size: int, block: bytes) -> int:
        """PUT ``size`` bytes made of repeats of ``block``; the answer's status."""
        conn = self._conn
        conn.putrequest("PUT", path)
        for name, value in self._headers({"Content-Length": str(size),
                                          "Content-Type": "application/octet-stream"}).items():
            conn.putheader(name, value)
        conn.endheaders()
        view = memoryview(block)
        for offset in range(0, size, len(block)):
            conn.send(view[: min(len(block), size - offset)])
        response = conn.getresponse()
        response.read()
        return response.status
