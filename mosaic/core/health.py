"""Whether each mount's backend answers, as this process last saw it.

A store that goes down makes every request under its mount fail with a 503;
logging each would bury the log, logging none hides the outage. So the
transitions are logged, once each per process (each worker sees the outage
for itself): one WARNING when a mount becomes unavailable, naming the tenant,
the mount and the cause in words (never an address or a secret), and one INFO
when it answers again.

Providers report here: a failure when they raise
:class:`~mosaic.core.errors.MountUnavailableError` (or a mount cannot be built),
a success when a call to the backend returned. The success path is one
lock-free dict lookup.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

#: (tenant, mount point, owner of a per-user mount or None)
MountId = tuple[str, str, str | None]


class MountHealth:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down: dict[MountId, float] = {}  # -> since (monotonic)

    def failed(self, tenant: str, mount: str, reason: str, owner: str | None = None) -> None:
        key = (tenant, mount, owner)
        if key in self._down:
            return
        with self._lock:
            if key in self._down:
                return
            self._down[key] = time.monotonic()
        log.warning("tenant %s: mount %s unavailable: %s; requests under it answer 503 "
                    "until it is back", tenant, _named(mount, owner), reason)

    def served(self, tenant: str, mount: str, owner: str | None = None) -> None:
        key = (tenant, mount, owner)
        if key not in self._down:  # the path of every successful call: no lock
            return
        with self._lock:
            since = self._down.pop(key, None)
        if since is not None:
            log.info("tenant %s: mount %s is back after %.1f s", tenant, _named(mount, owner),
                     time.monotonic() - since)

    def is_down(self, tenant: str, mount: str, owner: str | None = None) -> bool:
        return (tenant, mount, owner) in self._down


def _named(mount: str, owner: str | None) -> str:
    return f"{mount} (of user {owner})" if owner else mount


#: this process's view; every provider and the registry report to it
HEALTH = MountHealth()
