"""Configured quotas: what a mount holds, and writes that must stay within a limit.

A store such as a bucket has no limit of its own and no cheap total: summing
it means listing every object. So a mount's usage is counted by one walk when
first needed, reused for ``recount_seconds``, and moved in between by the
writes and deletes made through this process (exactly, in-flight uploads
included). Writes by other worker processes or other tools show up at the next
count: that is the trade-off the config key describes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from fsspec import AbstractFileSystem

from mosaic.core.errors import QuotaExceededError


class Usage:
    """Bytes stored in one mount (as counted) plus bytes being uploaded to it."""

    def __init__(self, fs: AbstractFileSystem, recount_seconds: float) -> None:
        self._fs = fs
        self._recount_seconds = recount_seconds
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._stored: int | None = None
        self._counted_at = 0.0
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def uploading(self, delta: int) -> None:
        with self._lock:
            self._in_flight += delta

    def stored(self) -> int:
        # One thread counts while the others needing the figure wait for it;
        # uploads only take the short lock, so a long count never stalls them.
        with self._count_lock:
            with self._lock:
                if self._stored is not None and \
                        time.monotonic() - self._counted_at <= self._recount_seconds:
                    return self._stored
            total = _count(self._fs)
            with self._lock:
                self._stored, self._counted_at = total, time.monotonic()
            return total

    def committed(self, delta: int) -> None:
        """A write or delete of this process changed what is stored by ``delta``."""
        with self._lock:
            if self._stored is not None:
                self._stored = max(self._stored + delta, 0)

    def forget(self) -> None:
        """Count again when next asked (after a change of unknown size)."""
        with self._lock:
            self._stored = None


def _count(fs: AbstractFileSystem) -> int:
    return sum(int(info.get("size") or 0)
               for info in fs.find("", detail=True, withdirs=False).values())


@dataclass(frozen=True)
class Limit:
    """One configured quota and the mounts whose usage counts against it."""

    scope: str  # "mount" or "tenant", for the error message
    limit: int
    usages: tuple[Usage, ...]

    def used(self) -> int:
        return sum(usage.stored() + usage.in_flight for usage in self.usages)

    def available(self) -> int:
        return max(self.limit - self.used(), 0)


class QuotaWriter:
    """An upload that counts its bytes against ``limits`` as they arrive.

    A body that passes a limit fails at that write (a 507); the caller discards
    the upload, so nothing of it is stored.
    """

    def __init__(self, target: Any, path: str, usage: Usage, limits: list[Limit],
                 replaced: int) -> None:
        self._target = target
        self._path = path
        self._usage = usage
        self._limits = limits
        self._replaced = replaced  # the size of the file this upload replaces
        self._written = 0
        self._settled = False

    def write(self, data: bytes) -> int:
        self._reserve(len(data))
        return self._target.write(data)

    def _reserve(self, size: int) -> None:
        for limit in self._limits:
            if limit.used() + size - self._replaced > limit.limit:
                raise QuotaExceededError(self._path, limit.scope)
        self._written += size
        self._usage.uploading(size)

    def commit(self) -> None:
        self._target.commit()
        self._settle(self._written - self._replaced)

    def discard(self) -> None:
        try:
            self._target.discard()
        finally:
            self._settle(0)

    def _settle(self, delta: int) -> None:
        if not self._settled:
            self._settled = True
            self._usage.uploading(-self._written)
            self._usage.committed(delta)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def check_size(path: str, size: int, replaced: int, limits: list[Limit]) -> None:
    """Refuse a write of announced ``size`` before any byte of it is read."""
    for limit in limits:
        if limit.used() + size - replaced > limit.limit:
            raise QuotaExceededError(path, limit.scope)
