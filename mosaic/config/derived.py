"""Data derived from one immutable config object, built once and dropped with it.

A :class:`Config` never changes: a reload makes a new one. So an index over it
(which tenant owns a login domain, a tenant's users by folded name) can be
built on first use and kept as long as that object lives. Keyed by identity,
not by value: hashing a frozen model of 1,000 tenants would walk all of it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

Source = TypeVar("Source")
Derived = TypeVar("Derived")


class PerObject(Generic[Source, Derived]):
    """``build(source)``, computed once per live ``source`` object (thread-safe)."""

    def __init__(self, build: Callable[[Source], Derived]) -> None:
        self._build = build
        self._built: dict[int, Derived] = {}
        self._lock = threading.Lock()
        #: how many times ``build`` ran; tests use it to prove there is no rebuild per call
        self.builds = 0

    def __call__(self, source: Source) -> Derived:
        try:
            return self._built[id(source)]
        except KeyError:
            pass
        with self._lock:  # one build per object, even when requests race for it
            if id(source) not in self._built:
                value = self._build(source)
                self.builds += 1
                # Dropped when the source is collected, before its id can be reused.
                weakref.finalize(source, self._built.pop, id(source), None)
                self._built[id(source)] = value
            return self._built[id(source)]
