"""Counting who holds the worker's threads, and saying no to the one over its share.

Shared by the address gate (cheroot connections) and the tenant gate (WSGI):
a dict and a lock per request, no scanning.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

_log = logging.getLogger("mosaic.front")
Clock = Callable[[], float]


class Shares:
    """In-flight requests per key (a tenant, a client address), each under its own limit."""

    def __init__(self, kind: str) -> None:
        self._in_flight: dict[str, int] = {}
        #: Requests in flight, all keys together.
        self.total = 0
        self._lock = threading.Lock()
        self._refusals = RefusalLog(kind)

    def enter(self, key: str, limit: int, room_to_spare: bool = False) -> bool:
        """Count one more request of ``key``; False (and nothing counted) over ``limit``.

        A limit of 0 means no limit. ``room_to_spare``: the worker has threads
        enough that ``key`` may go beyond its share this time.
        """
        with self._lock:
            held = self._in_flight.get(key, 0)
            refused = bool(limit) and held >= limit and not room_to_spare
            if not refused:
                self._in_flight[key] = held + 1
                self.total += 1
        if refused:
            self._refusals.note(key, limit)
        return not refused

    def leave(self, key: str) -> None:
        with self._lock:
            self.total -= 1
            held = self._in_flight[key] - 1
            if held:
                self._in_flight[key] = held
            else:  # forgotten at once: memory follows the live requests, not the history
                del self._in_flight[key]

    def in_flight(self, key: str) -> int:
        with self._lock:
            return self._in_flight.get(key, 0)


class RefusalLog:
    """One WARNING per key and interval, however many requests it had refused.

    A flood of 200 slow connections is one event, not 200 log lines.
    """

    MAX_KEYS = 4096

    def __init__(self, kind: str, interval: float = 60.0,
                 clock: Clock = time.monotonic) -> None:
        self._kind = kind
        self._interval = interval
        self._clock = clock
        self._quiet_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def note(self, key: str, limit: int) -> None:
        now = self._clock()
        with self._lock:
            if self._quiet_until.get(key, float("-inf")) > now:
                return
            if len(self._quiet_until) >= self.MAX_KEYS:
                self._quiet_until.clear()  # a flood of keys: worst case more lines, never memory
            self._quiet_until[key] = now + self._interval
        _log.warning("%s %s over its share of %d concurrent requests: refused with 503 "
                     "(further refusals not logged for %gs)", self._kind, key, limit,
                     self._interval)


def refusal_head(retry_after: int) -> tuple[str, list[tuple[str, str]], bytes]:
    """Status, headers and body of the 503 answered to the one over its share.

    The connection is closed after it: whatever the client still sends is
    never read, and a refused connection holds nothing on the server.
    """
    body = (f"503 Service Unavailable: too many concurrent requests; "
            f"retry after {retry_after} s\n").encode()
    headers = [("Retry-After", str(retry_after)),
               ("Content-Type", "text/plain; charset=utf-8"),
               ("Content-Length", str(len(body))), ("Connection", "close")]
    return "503 Service Unavailable", headers, body
