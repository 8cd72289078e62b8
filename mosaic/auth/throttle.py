"""Smart lockout: failed logins lock a (user, address) pair or an address, never a user.

Three counters, each over ``failure_window_seconds``:

- a user at one client address: ``max_failures`` failures lock that pair for
  ``lockout_seconds``, so a guesser at that address is refused before any
  password check (neither an answer nor our CPU);
- a client address, whatever the user: ``address_max_failures`` lock the
  address, so spraying many names from one address stops too;
- a user across all addresses: past ``user_slowdown_after`` failures the
  attempts for that user are delayed by ``slowdown_seconds`` - but only those
  from addresses that failed within the window. This counter never refuses:
  were it to lock, anyone anywhere could lock any user out by guessing with
  the name. The right password from an address without failures always gets
  in at once.

Failures stay counted for the whole window, so once a lockout ends a single
further failure locks the key again. A successful login clears its pair but
never the address (one valid account must not reset the address it guesses
from) nor the user's count (the spray against that user goes on).

Behind a reverse proxy REMOTE_ADDR is the proxy, and all its clients share
one address.
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
Key = tuple[str, ...]


class Attempt(NamedTuple):
    """One login attempt as the throttle sees it."""

    tenant: str
    #: Case-folded user part, so ALICE and alice share a counter.
    user: str
    address: str | None


class Verdict(NamedTuple):
    """What to do with an attempt before its password is checked."""

    refused: bool = False
    #: Seconds to wait before checking the password.
    delay: float = 0.0


GO = Verdict()
REFUSED = Verdict(refused=True)


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = float("-inf")
    #: Until when a slowed-down user is not reported again.
    warned_until: float = float("-inf")


class LoginThrottle:
    """Thread-safe failure counters with bounded memory (about ``max_keys`` keys)."""

    def __init__(self, clock: Clock = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._records: dict[Key, _Record] = {}
        self._lock = threading.Lock()
        self._next_prune = clock()

    def check(self, attempt: Attempt, policy: AuthSettings) -> Verdict:
        """Refused while its pair or its address is locked; delayed while its user is
        under attack and its address has failed; otherwise go."""
        now = self._clock()
        with self._lock:
            if not self._unlocked(attempt, now):
                return REFUSED
            horizon = now - policy.failure_window_seconds
            if (self._recent(_user_key(attempt), horizon) >= policy.user_slowdown_after
                    and self._recent(_address_key(attempt), horizon)):
                return Verdict(delay=policy.slowdown_seconds)
        return GO

    def allowed(self, attempt: Attempt) -> bool:
        """False while the attempt's pair or address is locked out."""
        now = self._clock()
        with self._lock:
            return self._unlocked(attempt, now)

    def failed(self, attempt: Attempt, policy: AuthSettings) -> None:
        """Count a failed login; lock the pair or the address that reaches its limit."""
        now = self._clock()
        with self._lock:
            for key, limit in _locking_keys(attempt, policy):
                if self._count(key, now, policy, limit) >= limit:
                    self._lock_out(key, now, policy, attempt, limit)
            self._count_for_user(attempt, now, policy)
            if len(self._records) > self._max_keys or now >= self._next_prune:
                self._prune(now, policy)
                self._next_prune = now + policy.failure_window_seconds

    def succeeded(self, attempt: Attempt) -> None:
        """A valid login clears its pair's failures (not the address's, not the user's)."""
        with self._lock:
            self._records.pop(_pair_key(attempt), None)

    def __len__(self) -> int:
        return len(self._records)

    def _unlocked(self, attempt: Attempt, now: float) -> bool:
        return not any(self._is_locked(key, now) for key in _lockable_keys(attempt))

    def _is_locked(self, key: Key, now: float) -> bool:
        record = self._records.get(key)
        return record is not None and record.locked_until > now

    def _recent(self, key: Key, horizon: float) -> int:
        record = self._records.get(key)
        if record is None:
            return 0
        _forget_before(record.failures, horizon)
        return len(record.failures)

    def _count(self, key: Key, now: float, policy: AuthSettings, limit: int) -> int:
        """Record a failure; the failures of ``key`` in the window (at most ``limit``)."""
        record = self._records.setdefault(key, _Record())
        _forget_before(record.failures, now - policy.failure_window_seconds)
        record.failures.append(now)
        # Only the newest ``limit`` timestamps can decide anything.
        while len(record.failures) > limit:
            record.failures.popleft()
        return len(record.failures)

    def _count_for_user(self, attempt: Attempt, now: float, policy: AuthSettings) -> None:
        key, limit = _user_key(attempt), policy.user_slowdown_after
        if self._count(key, now, policy, limit) < limit:
            return
        record = self._records[key]
        if record.warned_until > now:
            return
        record.warned_until = now + policy.failure_window_seconds
        _log.warning("logins of user %r of tenant %r slowed down after %d failures from "
                     "any address (the last from %s)", attempt.user, attempt.tenant, limit,
                     attempt.address)

    def _lock_out(self, key: Key, now: float, policy: AuthSettings, attempt: Attempt,
                  limit: int) -> None:
        record = self._records[key]
        if record.locked_until > now:
            return
        record.locked_until = now + policy.lockout_seconds
        _log.warning("login throttled by %s for %gs after %d failures: "
                     "user %r of tenant %r, address %s", key[0], policy.lockout_seconds,
                     limit, attempt.user, attempt.tenant, attempt.address)

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


class SlowDown:
    """The delays of slowed-down logins, with a bound on how many wait at once.

    A waiting login holds a request thread: without the bound a spray from
    many addresses would hold them all.
    """

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._sleep = sleep
        self._waiting = 0
        self._lock = threading.Lock()

    def wait(self, seconds: float, max_waiting: int) -> bool:
        """Wait ``seconds``; False at once when ``max_waiting`` already wait."""
        with self._lock:
            if self._waiting >= max_waiting:
                return False
            self._waiting += 1
        try:
            self._sleep(seconds)
        finally:
            with self._lock:
                self._waiting -= 1
        return True


def _locking_keys(attempt: Attempt, policy: AuthSettings) -> list[tuple[Key, int]]:
    keys = [(_pair_key(attempt), policy.max_failures)]
    if attempt.address:
        keys.append((_address_key(attempt), policy.address_max_failures))
    return keys


def _lockable_keys(attempt: Attempt) -> list[Key]:
    keys = [_pair_key(attempt)]
    if attempt.address:
        keys.append(_address_key(attempt))
    return keys


def _pair_key(attempt: Attempt) -> Key:
    return ("user at address", attempt.tenant, attempt.user, attempt.address or "")


def _address_key(attempt: Attempt) -> Key:
    return ("address", attempt.address or "")


def _user_key(attempt: Attempt) -> Key:
    return ("user", attempt.tenant, attempt.user)


def _forget_before(failures: deque[float], horizon: float) -> None:
    while failures and failures[0] <= horizon:
        failures.popleft()
