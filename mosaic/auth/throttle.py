"""Failed-login throttling per user and per client address.

After ``max_failures`` failures within ``failure_window_seconds`` a key is
locked for ``lockout_seconds``: attempts for it are refused before any
password check, so a guesser gets neither an answer nor our CPU. Failures
stay counted for the whole window, so once a lockout ends a single further
failure locks the key again. A successful login clears the user's key but
never the address key: otherwise one valid account would let an attacker
reset the throttle of the address it guesses from.

Behind a reverse proxy REMOTE_ADDR is the proxy, and all its clients share
one address key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from mosaic.config.schema import AuthSettings

_log = logging.getLogger(__name__)
Clock = Callable[[], float]


class Attempt(NamedTuple):
    """One login attempt as the throttle sees it."""

    tenant: str
    #: Case-folded user part, so ALICE and alice share a counter.
    user: str
    address: str | None


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = float("-inf")


class LoginThrottle:
    """Thread-safe failure counters with bounded memory (about ``max_keys`` keys)."""

    def __init__(self, clock: Clock = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._records: dict[tuple[str, ...], _Record] = {}
        self._lock = threading.Lock()
        self._next_prune = clock()

    def allowed(self, attempt: Attempt) -> bool:
        """False while the user or the address is locked out."""
        now = self._clock()
        with self._lock:
            return not any(self._is_locked(key, now) for key in _keys(attempt))

    def failed(self, attempt: Attempt, policy: AuthSettings) -> None:
        """Count a failed login; lock each key that reaches ``max_failures``."""
        now = self._clock()
        with self._lock:
            for key in _keys(attempt):
                if self._count(key, now, policy):
                    _log.warning("login throttled by %s for %gs after %d failures: "
                                 "user %r of tenant %r, address %s", key[0],
                                 policy.lockout_seconds, policy.max_failures,
                                 attempt.user, attempt.tenant, attempt.address)
            if len(self._records) > self._max_keys or now >= self._next_prune:
                self._prune(now, policy)
                self._next_prune = now + policy.failure_window_seconds

    def succeeded(self, attempt: Attempt) -> None:
        """A valid login clears the user's failures (not the address's)."""
        with self._lock:
            self._records.pop(_user_key(attempt), None)

    def __len__(self) -> int:
        return len(self._records)

    def _is_locked(self, key: tuple[str, ...], now: float) -> bool:
        record = self._records.get(key)
        return record is not None and record.locked_until > now

    def _count(self, key: tuple[str, ...], now: float, policy: AuthSettings) -> bool:
        """Record a failure; True if this one started a lockout."""
        record = self._records.setdefault(key, _Record())
        _forget_before(record.failures, now - policy.failure_window_seconds)
        record.failures.append(now)
        # Only the newest max_failures timestamps can decide a lockout.
        while len(record.failures) > policy.max_failures:
            record.failures.popleft()
        if len(record.failures) < policy.max_failures or record.locked_until > now:
            return False
        record.locked_until = now + policy.lockout_seconds
        return True

    def _prune(self, now: float, policy: AuthSettings) -> None:
        """Drop keys with nothing left to remember, then the oldest unlocked ones.

        Pruning to 90% of the limit keeps the O(n) scan rare under a flood of
        new keys; locked keys go last so a flood cannot evict a lockout early.
        """
        horizon = now - policy.failure_window_seconds
        for key, record in list(self._records.items()):
            _forget_before(record.failures, horizon)
            if not record.failures and record.locked_until <= now:
                del self._records[key]
        target = self._max_keys * 9 // 10
        by_age = sorted(self._records.items(), key=lambda item: (
            item[1].locked_until > now, item[1].failures[-1] if item[1].failures else now))
        for key, _ in by_age[: max(0, len(self._records) - target)]:
            del self._records[key]


def _keys(attempt: Attempt) -> list[tuple[str, ...]]:
    keys = [_user_key(attempt)]
    if attempt.address:
        keys.append(("address", attempt.address))
    return keys


def _user_key(attempt: Attempt) -> tuple[str, ...]:
    return ("user", attempt.tenant, attempt.user)


def _forget_before(failures: deque[float], horizon: float) -> None:
    while failures and failures[0] <= horizon:
        failures.popleft()
