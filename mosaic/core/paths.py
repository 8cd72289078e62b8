"""Virtual path handling shared by the mount table, permissions and the VFS.

Virtual paths are relative to the tenant root: "" is the root, "a/b" a member;
a leading or trailing "/" is tolerated. Matching keys (for mount points and
permission rules) are NFC-normalised and case-folded, so no spelling of a path
(``/FINANCE``, NFD ``/Finanza-e\u0301``) reaches around a rule or a mount.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from mosaic.core.errors import InvalidPathError

_FORBIDDEN_CHARS = ("\x00", "\\")
_PLAIN = re.compile(r"[A-Za-z0-9_.-]*")  # what quote() leaves as it is, whatever ``safe``


def normalize(path: str) -> str:
    """Return the canonical relative form of a virtual path, or refuse it."""
    if any(ch in path for ch in _FORBIDDEN_CHARS):
        raise InvalidPathError("path contains a NUL or a backslash")
    parts = [part for part in path.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise InvalidPathError("path contains a '.' or '..' segment")
    return "/".join(parts)


def match_key(path: str) -> str:
    """The form used to compare paths with mount points and rules."""
    return unicodedata.normalize("NFC", path).casefold()


def parent(path: str) -> str:
    return path.rpartition("/")[0]


def basename(path: str) -> str:
    return path.rpartition("/")[2]


def join(base: str, name: str) -> str:
    return f"{base}/{name}" if base else name


def is_within(path: str, ancestor: str) -> bool:
    """True if ``path`` equals ``ancestor`` or lies below it (match keys)."""
    return not ancestor or path == ancestor or path.startswith(ancestor + "/")


def relative_to(path: str, ancestor: str) -> str:
    if not ancestor:
        return path
    return path[len(ancestor) + 1:] if path != ancestor else ""


def quote_segment(segment: str, safe: str = "") -> str:
    """``urllib.parse.quote``; a plain name is returned as it is without the
    per-character work (a listing of 10,000 files quotes every name twice)."""
    return segment if _PLAIN.fullmatch(segment) else quote(segment, safe=safe)
