"""Reading from a client's socket under a clock, one receive at a time.

cheroot gives every receive the same socket timeout, so a client sending a
byte every few seconds keeps a thread forever. Here each receive is armed with
what its clock still allows: a head must be complete by a deadline, a body may
pause only so long and must keep a minimum average rate. Reads never take
more than one receive without asking the clock again.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from mosaic.front.refusals import BodyRefusal, Refusal

#: The longest line a chunked body may use for a chunk size (with extensions).
MAX_CHUNK_LINE = 4096


class Buffered(Protocol):
    """cheroot's socket reader, an ``io.BufferedReader``."""

    def peek(self, size: int) -> bytes: ...

    def read1(self, size: int) -> bytes: ...

    def read(self, size: int) -> bytes: ...

    def has_data(self) -> bool: ...

    @property
    def raw(self) -> Any: ...


class Clock(Protocol):
    def arm(self) -> float:
        """Seconds the next receive may wait; raises when time is up."""

    def expired(self) -> Exception:
        """What to raise when a receive waited its full time."""

    def received(self, count: int) -> None: ...


class HeadClock:
    """A whole request head within ``seconds`` of its first byte."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds
        self._seconds = seconds

    def arm(self) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise self.expired()
        return remaining

    def expired(self) -> Exception:
        return Refusal(408, f"request head not complete within {self._seconds:g} s")

    def received(self, count: int) -> None:
        pass


class BodyClock:
    """No silence longer than ``idle``; after ``grace`` seconds, at least
    ``min_rate`` bytes per second on average since the body began."""

    def __init__(self, idle: float, min_rate: int, grace: float) -> None:
        self._start = time.monotonic()
        self._idle, self._min_rate, self._grace = idle, min_rate, grace
        self._count = 0
        self._rate_bound = False

    def arm(self) -> float:
        if not self._min_rate:
            return self._idle
        # The moment the average drops below min_rate if nothing more arrives.
        late = self._start + self._grace + self._count / self._min_rate - time.monotonic()
        self._rate_bound = late < self._idle
        if late <= 0:
            raise self.expired()
        return min(self._idle, late)

    def expired(self) -> Exception:
        if self._rate_bound:
            return BodyRefusal(408, f"request body slower than {self._min_rate} bytes/s")
        return BodyRefusal(408, f"request body silent for {self._idle:g} s")

    def received(self, count: int) -> None:
        self._count += count


class Wire:
    """The connection's buffered reader, read under ``clock``.

    ``rfile`` is cheroot's socket reader (an ``io.BufferedReader``): ``peek``
    and ``read1`` receive at most once, and only when its buffer is empty.
    """

    def __init__(self, rfile: Buffered, sock: socket.socket, clock: Clock,
                 restore_timeout: float | None) -> None:
        self._rfile = rfile
        self._sock = sock
        self.clock = clock
        self._restore = restore_timeout

    def _receive(self, receive: Callable[[int], bytes], size: int) -> bytes:
        self._sock.settimeout(self.clock.arm())
        try:
            data = receive(size)
        except TimeoutError:
            raise self.clock.expired() from None
        finally:
            self._sock.settimeout(self._restore)
        return data

    def read_some(self, size: int) -> bytes:
        """Up to ``size`` bytes (at most one receive); b"" at the end of the stream."""
        # With nothing buffered, one receive of ``size`` straight from the
        # socket: through the buffer every receive would be 8 KiB at most
        # (a 256 MiB PUT: ~260 -> ~150 MiB/s measured here).
        source = self._rfile.read1 if self._rfile.has_data() else self._rfile.raw.read
        data = self._receive(source, size) or b""
        self.clock.received(len(data))
        return data

    def read_line(self, limit: int) -> bytes:
        """One line up to its LF, or ``limit + 1`` bytes when it is longer, or
        what came before the end of the stream."""
        parts: list[bytes] = []
        size = 0
        while size <= limit:
            buffered = self._receive(self._rfile.peek, 1)
            if not buffered:
                break
            end = buffered.find(b"\n", 0, limit + 1 - size)
            data = self._rfile.read(end + 1 if end >= 0 else min(len(buffered), limit + 1 - size))
            self.clock.received(len(data))
            parts.append(data)
            size += len(data)
            if end >= 0:
                break
        return b"".join(parts)
