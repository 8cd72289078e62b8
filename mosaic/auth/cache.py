"""A short-lived memory of verified logins.

WebDAV clients send Basic credentials with every request, and one argon2
verification costs tens of milliseconds of CPU: without this cache a folder
listing in Explorer would spend most of its time hashing. Entries are keyed by
an HMAC of tenant, user and password under a secret that lives only in this
process, so the table holds no password and nothing an attacker could test
guesses against offline.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

Clock = Callable[[], float]
V = TypeVar("V")


class _Entry(NamedTuple, Generic[V]):
    value: V
    expires: float


class CredentialCache(Generic[V]):
    """LRU map HMAC(tenant, user, password) -> value (a Principal, or a refusal) with a
    per-entry expiry.

    Thread-safe. ``generation`` changes on every :meth:`clear`; a caller that
    read it before verifying passes it to :meth:`put`, so a login checked
    against a config that was replaced meanwhile is not remembered.
    """

    def __init__(self, max_entries: int = 10_000, clock: Clock = time.monotonic) -> None:
        self._max = max_entries
        self._clock = clock
        self._secret = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, _Entry[V]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def get(self, tenant: str, user: str, password: str) -> V | None:
        """The cached value for these exact credentials, if not expired."""
        key = self._key(tenant, user, password)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry.value

    def put(self, tenant: str, user: str, password: str, value: V, ttl: float,
            generation: int | None = None) -> None:
        """Remember checked credentials for ``ttl`` seconds (0 disables caching)."""
        if ttl <= 0:
            return
        key = self._key(tenant, user, password)
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            self._entries[key] = _Entry(value, self._clock() + ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything: call when users, groups or passwords may have changed."""
        with self._lock:
            self._entries.clear()
            self._generation += 1

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, tenant: str, user: str, password: str) -> bytes:
        message = "\0".join((tenant, user, password)).encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).digest()
