"""A signed-in user's own password, for mounts that reach their backend as that user.

A pass-through mount (an ``smb`` mount with ``credentials: pass_through``) signs in
to its file server with the account and password the user signed in to Mosaic
with. The password travels from the HTTP sign-in to the provider inside
:class:`Secret`, whose ``repr`` and ``str`` are masked, which refuses to be
pickled, and which compares by identity only: a log line, an exception message, a
``repr`` of a context or a cache key never shows it. Caches key by :meth:`Secret.tag`,
an HMAC under a key of the caller's own.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import NoReturn

MASK = "***"


class Secret:
    """A password in memory: :meth:`reveal` gives it to the one call that needs it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def tag(self, key: bytes) -> bytes:
        """HMAC-SHA256 of the password under ``key``: tells two passwords apart
        without holding either."""
        return hmac.new(key, self._value.encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret is never pickled (it would leave the process in clear)")


@dataclass(frozen=True)
class SignedInAccount:
    """The directory account a user signed in with, as a pass-through mount uses it."""

    #: the account's NetBIOS domain (``CORP``)
    domain: str
    #: its sAMAccountName (``alice``)
    name: str
    password: Secret

    def __repr__(self) -> str:
        return f"SignedInAccount({self.domain}\\{self.name}, password={MASK})"
