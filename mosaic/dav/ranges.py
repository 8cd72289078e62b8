"""Range and If-Range of a GET or HEAD (RFC 9110 sections 13.1.5 and 14), decided once.

wsgidav's own parser takes the last of several ranges, serves ``bytes=5-1`` as
one byte and ``bytes=-0`` as ``bytes 2-1/2``. Here the header is judged for
every backend before wsgidav's GET runs, and wsgidav is left with either no
Range at all (200, the whole file) or one canonical range it handles right:

* invalid (bad syntax, another unit, a last position before the first): ignored;
* If-Range that does not match the current ETag (strongly) or Last-Modified
  (exactly): ignored, the client gets the new version whole;
* several ranges: the whole file. RFC 9110 section 14.2 allows it and every
  client copes; multipart/byteranges would turn one streamed read of the store
  into one read per part, and a list of many small ranges into a cheap way of
  making the server work (the "Apache Killer" of 2011);
* none satisfiable: 416 with ``Content-Range: bytes */LEN``, after wsgidav's
  precondition checks (If-Match and If-None-Match come first, section 13.2.2).
"""

from __future__ import annotations

import re
from typing import Any

from wsgidav import util

#: a position beyond any file; longer digit strings are not parsed (int() refuses 4,300+)
BEYOND = 10**18
_SPEC = re.compile(r"(\d*)-(\d*)")


class Invalid(Exception):
    """The Range header must be ignored."""


def settle(environ: dict[str, Any], size: int, etag: str | None,
           last_modified: float | None) -> None:
    """Leave in ``environ`` only a Range wsgidav serves correctly (or none)."""
    header = environ.pop("HTTP_RANGE", None)
    if_range = environ.pop("HTTP_IF_RANGE", None)
    if header is None or size <= 0:  # an empty file is served whole
        return
    if if_range is not None and not if_range_matches(if_range, etag, last_modified):
        return
    try:
        specs = parse(header)
    except Invalid:
        return
    satisfiable = [span for span in (resolve(spec, size) for spec in specs) if span]
    if not satisfiable:
        # wsgidav answers a start at the end with 416 and Content-Range bytes */size.
        environ["HTTP_RANGE"] = f"bytes={size}-"
    elif len(specs) == 1:
        first, last = satisfiable[0]
        environ["HTTP_RANGE"] = f"bytes={first}-{last}"


def parse(header: str) -> list[tuple[int | None, int | None]]:
    """(first, last) of each range-spec; first None: a suffix of ``last`` bytes."""
    unit, equals, range_set = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        raise Invalid
    specs = []
    for element in range_set.split(","):
        element = element.strip(" \t")
        if not element:
            continue  # empty list elements are allowed (RFC 9110 section 5.6.1)
        match = _SPEC.fullmatch(element)
        if match is None or not any(match.groups()):
            raise Invalid
        first, last = (_position(text) for text in match.groups())
        if first is not None and last is not None and last < first:
            raise Invalid
        specs.append((first, last))
    if not specs:
        raise Invalid
    return specs


def resolve(spec: tuple[int | None, int | None], size: int) -> tuple[int, int] | None:
    """The absolute (first, last) of one spec in a file of ``size`` bytes, or None."""
    first, last = spec
    if first is None:  # a suffix: the last ``last`` bytes (none: unsatisfiable)
        return (max(size - last, 0), size - 1) if last else None
    if first >= size:
        return None
    return first, size - 1 if last is None else min(last, size - 1)


def if_range_matches(value: str, etag: str | None, last_modified: float | None) -> bool:
    value = value.strip()
    if value.startswith('"'):  # a strong entity tag; W/"..." never matches
        return etag is not None and value == f'"{etag}"'
    seconds = util.parse_time_string(value)
    return seconds is not None and last_modified is not None \
        and int(last_modified) == int(seconds)


def _position(text: str) -> int | None:
    if not text:
        return None
    return BEYOND if len(text) > 18 else int(text)
