"""The request head, read strictly (RFC 9112 sections 2-3, 5 and 6).

Anything a lenient parser would have to guess about is refused: a line not
ended by CRLF, an obs-fold, whitespace before a colon, control characters,
conflicting or malformed framing. Two parsers that guess differently (a proxy
and this server) are how requests are smuggled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mosaic.config.schema import Limits
from mosaic.front.refusals import Refusal, excerpt
from mosaic.front.wire import Wire

#: RFC 9110 token (method, field name, chunk extension name)
TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_IS_TOKEN = re.compile(TOKEN)
_TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_FIELD_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HOST = re.compile(rb"[A-Za-z0-9.\-_~!$&'()*+,;=%:\[\]]*")
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,19}")
MAX_CONTENT_LENGTH = 2**63 - 1

#: Fields whose repetition makes a request ambiguous (framing, routing, identity).
SINGLETONS = frozenset({b"Host", b"Content-Length", b"Authorization", b"Destination",
                        b"Overwrite", b"Depth"})
#: List-valued fields (cheroot's list): repeated lines are joined with ", ".
LISTS = frozenset({b"Accept", b"Accept-Charset", b"Accept-Encoding", b"Accept-Language",
                   b"Cache-Control", b"Connection", b"Expect", b"If-Match",
                   b"If-None-Match", b"Pragma", b"Te", b"Trailer", b"Transfer-Encoding",
                   b"Upgrade", b"Via", b"Warning"})


@dataclass
class Head:
    method: bytes
    target: bytes
    version: tuple[int, int]
    headers: dict[bytes, bytes] = field(default_factory=dict)
    #: None: no Content-Length (no body, or chunked)
    content_length: int | None = None
    chunked: bool = False


def read_head(wire: Wire, limits: Limits) -> Head | None:
    """The next request's head; None if the client closed before sending one."""
    line = wire.read_line(limits.max_request_line_bytes)
    if line == b"\r\n":  # RFC 9112 section 2.2: one empty line before a request is ignored
        line = wire.read_line(limits.max_request_line_bytes)
    if not line:
        return None
    head = parse_request_line(_line(line, limits.max_request_line_bytes, 414))
    try:
        budget = limits.max_head_bytes - len(line)
        for name, value in read_fields(wire, budget, limits.max_header_fields):
            add_field(head.headers, name, value)
        check_framing(head, limits)
    except Refusal as refusal:
        refusal.head = head  # the log line names the request
        raise
    return head


def read_fields(wire: Wire, budget: int, max_fields: int) -> list[tuple[bytes, bytes]]:
    """Field lines up to the empty line: a head's header section or a chunked trailer."""
    fields = []
    while True:
        line = _line(wire.read_line(budget), budget, 431)
        budget -= len(line)
        if line == b"\r\n":
            return fields
        if len(fields) == max_fields:
            raise Refusal(431, f"more than {max_fields} header fields")
        fields.append(parse_field(line))


def _line(line: bytes, limit: int, status: int) -> bytes:
    if len(line) > limit:
        raise Refusal(status, f"request line longer than {limit} bytes" if status == 414
                      else "request head too large")
    if not line.endswith(b"\n"):
        raise Refusal(400, "connection closed inside the request head")
    if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
        raise Refusal(400, "line not ended by CRLF (a bare LF or CR)")
    return line


def parse_request_line(line: bytes) -> Head:
    parts = line[:-2].split(b" ")
    if len(parts) != 3:
        raise Refusal(400, f"malformed request line {excerpt(line)}")
    method, target, version = parts
    match = _VERSION.fullmatch(version)
    if not _IS_TOKEN.fullmatch(method) or not _TARGET.fullmatch(target) or not match:
        raise Refusal(400, f"malformed request line {excerpt(line)}")
    major, minor = int(match.group(1)), int(match.group(2))
    if major != 1:
        raise Refusal(505, f"HTTP/{major} is not supported")
    # A later 1.x is answered as 1.1 (RFC 9110 section 2.5).
    return Head(method, target, (1, min(minor, 1)))


def parse_field(line: bytes) -> tuple[bytes, bytes]:
    if line[:1] in (b" ", b"\t"):
        raise Refusal(400, "obsolete line folding in a header field")
    # No regex over the value: "(.*?)[ \t]*" backtracks quadratically on
    # inner whitespace (32 KB of it took 5 s of CPU).
    name, colon, value = line[:-2].partition(b":")
    if not colon or not _IS_TOKEN.fullmatch(name):
        raise Refusal(400, f"malformed header field {excerpt(line)}")
    value = value.strip(b" \t")
    if _FIELD_CONTROL.search(value):
        raise Refusal(400, f"control character in header field {excerpt(name)}")
    # cheroot's spelling (Content-Length), which its WSGI gateway expects.
    return name.title(), value


def add_field(headers: dict[bytes, bytes], name: bytes, value: bytes) -> None:
    if name in headers:
        if name in SINGLETONS:
            raise Refusal(400, f"repeated {name.decode()} header")
        if name in LISTS:
            value = headers[name] + b", " + value
    headers[name] = value


def check_framing(head: Head, limits: Limits) -> None:
    """How long the body is (RFC 9112 section 6), or why that is not clear."""
    headers = head.headers
    host = headers.get(b"Host")
    if (host is None and head.version >= (1, 1)) or (host and not _HOST.fullmatch(host)):
        raise Refusal(400, "missing or malformed Host header")
    if b"Transfer-Encoding" in headers:
        _check_transfer_coding(head)
    elif b"Content-Length" in headers:
        head.content_length = _content_length(headers[b"Content-Length"])
        if head.method != b"PUT" and head.content_length > limits.max_xml_body_bytes:
            raise Refusal(413, f"{head.method.decode()} body larger than "
                               f"{limits.max_xml_body_bytes} bytes")


def _check_transfer_coding(head: Head) -> None:
    if head.version < (1, 1):
        raise Refusal(400, "Transfer-Encoding in an HTTP/1.0 request")
    if b"Content-Length" in head.headers:
        raise Refusal(400, "both Content-Length and Transfer-Encoding")
    codings = [c.strip().lower() for c in head.headers[b"Transfer-Encoding"].split(b",")]
    codings = [c for c in codings if c]
    if not codings:
        raise Refusal(400, "empty Transfer-Encoding")
    if codings.count(b"chunked") > 1 or (b"chunked" in codings and codings[-1] != b"chunked"):
        raise Refusal(400, "chunked is not the final transfer coding, exactly once")
    if codings != [b"chunked"]:
        raise Refusal(501, "transfer coding not implemented")
    head.chunked = True


def _content_length(value: bytes) -> int:
    if not _CONTENT_LENGTH.fullmatch(value) or int(value) > MAX_CONTENT_LENGTH:
        raise Refusal(400, f"malformed Content-Length {excerpt(value)}")
    return int(value)
