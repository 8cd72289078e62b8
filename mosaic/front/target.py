"""The request target: from the bytes on the wire to the path the application sees.

RFC 9112 section 3.2: origin-form (``/path?query``), absolute-form (a server
must accept it; its authority replaces Host) and ``*`` for OPTIONS. The path
is percent-decoded as cheroot does (``%2F`` stays encoded, so it never splits
a name), and must then be UTF-8 without control characters or ``.``/``..``
segments: clients normalise those away, so they only come from an attack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from mosaic.front.refusals import Refusal

_ABSOLUTE = re.compile(rb"(?i)https?://([^/?#]*)(.*)", re.S)
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ENCODED_SLASH = re.compile(rb"(?i)%2F")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Target:
    path: bytes  # percent-decoded but for %2F
    query: bytes
    authority: bytes | None  # from an absolute-form target


def parse_target(method: bytes, raw: bytes) -> Target:
    if raw == b"*" and method == b"OPTIONS":
        return Target(b"*", b"", None)
    authority = None
    absolute = _ABSOLUTE.fullmatch(raw)
    if absolute:
        authority, raw = absolute.group(1), absolute.group(2) or b"/"
    if not raw.startswith(b"/"):
        raise Refusal(400, "request target is not an absolute path")
    if b"#" in raw:
        raise Refusal(400, "request target has a fragment")
    path, _, query = raw.partition(b"?")
    return Target(_decoded(path), query, authority)


def _decoded(path: bytes) -> bytes:
    if _BAD_ESCAPE.search(path):
        raise Refusal(400, "request target has an invalid percent-escape")
    decoded = b"%2F".join(unquote_to_bytes(part) for part in _ENCODED_SLASH.split(path))
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "request target is not UTF-8") from None
    if _CONTROL.search(decoded):
        raise Refusal(400, "request target has a control character")
    if any(segment in (b".", b"..") for segment in decoded.split(b"/")):
        raise Refusal(400, "request target has a '.' or '..' segment")
    return decoded
