"""Request bodies as ``wsgi.input``: exactly as long as framed, or refused.

A body that ends early, breaks the chunked coding (RFC 9112 section 7.1:
``chunk-size = 1*HEXDIG``, CRLF after each chunk's data), grows past its limit
or arrives too slowly raises ``BodyRefusal`` from the read: the reader never
returns a short body as if it were complete, so no method can store or act on
a truncated one (an upload is aborted by the exception).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from mosaic.front.head import TOKEN, read_fields
from mosaic.front.refusals import BodyRefusal, Refusal, excerpt
from mosaic.front.wire import MAX_CHUNK_LINE, Wire

_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_EXTENSION = rb"[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?" % (TOKEN, TOKEN, _QUOTED)
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})((?:%s)*)\r\n" % _EXTENSION)
_MAX_CHUNK = 2**63 - 1
_PIECE = 256 * 1024


class Body:
    """The reading half every body shares; subclasses supply ``_piece``."""

    def __init__(self, open_wire: Callable[[], Wire]) -> None:
        self._open_wire = open_wire
        self._wire: Wire | None = None
        self._pending = b""
        self.refusal: BodyRefusal | None = None

    @property
    def finished(self) -> bool:
        raise NotImplementedError

    def _piece(self, wire: Wire, size: int) -> bytes:
        """At most ``size`` more bytes (one receive at most); b"" at the end."""
        raise NotImplementedError

    def _next(self, size: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        if self._wire is None:  # the clock starts when the application reads
            self._wire = self._open_wire()
        try:
            return self._piece(self._wire, size)
        except Refusal as refusal:  # a malformed trailer field, read like a header
            self.refusal = BodyRefusal(400, f"chunked trailer: {refusal.reason}")
        except BodyRefusal as refusal:
            self.refusal = refusal
        raise self.refusal

    def read(self, size: int | None = -1) -> bytes:
        parts, total = [], 0
        while size is None or size < 0 or total < size:
            data = self._next(_PIECE if size is None or size < 0 else size - total)
            if not data:
                break
            parts.append(data)
            total += len(data)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        parts, total = [], 0
        while size is None or size < 0 or total < size:
            data = self._next(_PIECE if size is None or size < 0 else size - total)
            end = data.find(b"\n")
            if end >= 0:
                data, self._pending = data[:end + 1], data[end + 1:] + self._pending
            parts.append(data)
            total += len(data)
            if not data or end >= 0:
                break
        return b"".join(parts)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def close(self) -> None:
        pass  # the connection owns the socket


class LengthBody(Body):
    """A body framed by Content-Length (possibly 0)."""

    def __init__(self, open_wire: Callable[[], Wire], length: int) -> None:
        super().__init__(open_wire)
        self._remaining = length

    @property
    def finished(self) -> bool:
        return self._remaining == 0 and not self._pending

    def _next(self, size: int) -> bytes:
        if self._remaining == 0 and not self._pending:
            return b""  # no clock, no 100 Continue for an empty body
        return super()._next(size)

    def _piece(self, wire: Wire, size: int) -> bytes:
        data = wire.read_some(min(size, self._remaining))
        if not data:
            raise BodyRefusal(400, f"connection closed {self._remaining} bytes before "
                                   "the end of the body")
        self._remaining -= len(data)
        return data


class ReadBody(Body):
    """A body the front end has read already, served from memory."""

    def __init__(self, data: bytes) -> None:
        super().__init__(_no_wire)
        self._pending = data

    @property
    def finished(self) -> bool:
        return not self._pending

    def _piece(self, wire: Wire, size: int) -> bytes:
        return b""

    def _next(self, size: int) -> bytes:
        data, self._pending = self._pending[:size], self._pending[size:]
        return data


def _no_wire() -> Wire:
    raise AssertionError("a body read already needs no wire")


class ChunkedBody(Body):
    """A body in the chunked transfer coding, decoded strictly."""

    def __init__(self, open_wire: Callable[[], Wire], limit: int | None,
                 trailer_budget: int, max_trailer_fields: int) -> None:
        super().__init__(open_wire)
        self._limit = limit
        self._trailer = (trailer_budget, max_trailer_fields)
        self._left = 0  # of the current chunk
        self._total = 0
        self._done = False

    @property
    def finished(self) -> bool:
        return self._done and not self._pending

    def _piece(self, wire: Wire, size: int) -> bytes:
        if self._left == 0 and not self._done:
            self._left = self._chunk_size(wire)
            if self._left == 0:
                read_fields(wire, *self._trailer)
                self._done = True
        if self._done:
            return b""
        data = wire.read_some(min(size, self._left))
        if not data:
            raise BodyRefusal(400, "connection closed inside a chunk")
        self._left -= len(data)
        self._total += len(data)
        if self._limit is not None and self._total > self._limit:
            raise BodyRefusal(413, f"body larger than {self._limit} bytes")
        if self._left == 0:
            self._end_of_chunk(wire)
        return data

    @staticmethod
    def _chunk_size(wire: Wire) -> int:
        line = wire.read_line(MAX_CHUNK_LINE)
        match = _CHUNK_LINE.fullmatch(line)
        if not match or int(match.group(1), 16) > _MAX_CHUNK:
            raise BodyRefusal(400, f"malformed chunk size line {excerpt(line)}")
        return int(match.group(1), 16)

    @staticmethod
    def _end_of_chunk(wire: Wire) -> None:
        end = wire.read_some(2)
        if end == b"\r":  # the LF may come in the next packet
            end += wire.read_some(1)
        if end != b"\r\n":
            raise BodyRefusal(400, "chunk data longer than its size, or not ended by CRLF")
