"""A mount's short-lived cache of listings and lookups, shared by its workers.

A warm PROPFIND (a client re-reading a folder it just showed) should cost no
request to the store. Entries live ``ttl`` seconds: changes made by other
tools show up after that. Changes made through Mosaic show up at once, in
every worker process: each write bumps a generation stamp kept as the
modification time of a small file under the data directory; a lookup compares
it (one ``stat``) and drops the whole cache when another process wrote.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
MAX_ENTRIES = 4096  # listings and lookups per mount and process


class ListingCache:
    """``get(key, fetch)`` answers from the cache or calls ``fetch``;
    :meth:`invalidate` after every change this mount makes."""

    def __init__(self, ttl: float, stamp_file: Path | None) -> None:
        self._ttl = ttl
        self._stamp_file = stamp_file
        self._entries: OrderedDict[Hashable, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by invalidate(): a fetch that straddles it is not kept
        self._seen_stamp = self._read_stamp()

    @classmethod
    def for_mount(cls, ttl: float, data_dir: Path, *identity: str) -> ListingCache:
        if ttl <= 0:
            return cls(0, None)
        digest = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:32]
        folder = data_dir / "listing-stamps"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = folder / digest
        stamp.touch(exist_ok=True)
        return cls(ttl, stamp)

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    def get(self, key: Hashable, fetch: Callable[[], T]) -> T:
        if self._ttl <= 0:
            return fetch()
        now = time.monotonic()
        with self._lock:
            self._follow_other_writers()
            found = self._entries.get(key)
            if found is not None and found[0] > now:
                self._entries.move_to_end(key)
                return found[1]  # type: ignore[return-value]
            generation = self._generation
        value = fetch()
        with self._lock:
            if generation == self._generation:
                # the lifetime counts from the answer: a listing slower than the
                # lifetime would otherwise be stored already expired
                self._entries[key] = (time.monotonic() + self._ttl, value)
                self._entries.move_to_end(key)
                while len(self._entries) > MAX_ENTRIES:
                    self._entries.popitem(last=False)
        return value

    def invalidate(self) -> None:
        """This mount changed something: forget everything, tell the other workers."""
        if self._ttl <= 0:
            return
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._seen_stamp = self._write_stamp()

    def forget(self, stale: Callable[[Hashable], bool]) -> None:
        """Drop the entries ``stale`` picks, in this process only: an outside change
        this process learnt of (each worker watches what it listed itself)."""
        with self._lock:
            self._generation += 1  # a fetch under way may have read the old state
            for key in [key for key in self._entries if stale(key)]:
                del self._entries[key]

    def _follow_other_writers(self) -> None:
        stamp = self._read_stamp()
        if stamp != self._seen_stamp:
            self._seen_stamp = stamp
            self._generation += 1
            self._entries.clear()

    def _read_stamp(self) -> int:
        if self._stamp_file is None:
            return 0
        try:
            return os.stat(self._stamp_file).st_mtime_ns
        except FileNotFoundError:
            return 0

    def _write_stamp(self) -> int:
        if self._stamp_file is None:
            return 0
        stamp = max(time.time_ns(), self._seen_stamp + 1)  # never the value we already hold
        try:
            os.utime(self._stamp_file, ns=(stamp, stamp))
        except FileNotFoundError:
            self._stamp_file.touch()
            os.utime(self._stamp_file, ns=(stamp, stamp))
        return stamp
