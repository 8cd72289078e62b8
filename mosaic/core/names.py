"""Naming rules of the stores, shared by the VFS and the providers that enforce them.

Windows' rules (``reserved_names`` in a provider's Capabilities) and how a
case-insensitive file server compares names (``case_insensitive_names``). One rule
set: the VFS applies it before a provider is asked, and the ``smb`` provider
applies the same one to whatever reaches it directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# what an SMB server refuses, or a Windows client cannot open
_RESERVED_CHARS = re.compile(r'[<>:"|?*\x01-\x1f]')
_DEVICE_NAMES = re.compile(r"(?:CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(?:\..*)?", re.IGNORECASE)


def windows_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file name under Windows' rules, or None."""
    if _RESERVED_CHARS.search(name):
        return f"name {name!r} contains a character Windows reserves (<>:\"|?* or control)"
    if name.endswith((".", " ")):
        return f"name {name!r} ends with a dot or a space (Windows drops them)"
    if _DEVICE_NAMES.fullmatch(name):
        return f"name {name!r} is a Windows device name (CON, PRN, AUX, NUL, COMn, LPTn)"
    return None


def case_key(name: str) -> str:
    """How a case-insensitive file server (Windows, Samba) compares names: each
    character's simple upper case. Not ``casefold()``: ``straße`` and ``STRASSE`` are
    two files there, and so are the NFC and NFD spellings of ``café``."""
    if name.isascii():
        return name.upper()
    return "".join(upper if len(upper := ch.upper()) == 1 else ch for ch in name)


def case_collision(names: Iterable[str]) -> tuple[str, str] | None:
    """Two of ``names`` that are one name where case does not count, or None."""
    seen: dict[str, str] = {}
    for name in sorted(names):
        other = seen.setdefault(case_key(name), name)
        if other != name:
            return other, name
    return None
