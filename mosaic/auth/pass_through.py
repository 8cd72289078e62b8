"""Sessions that hold a user's own password: views with pass-through mounts.

An ``smb`` mount with ``credentials: pass_through`` reaches its file server as
the signed-in user. Such a user's view of the tenant (built by
:class:`mosaic.auth.sessions.SessionService`) owns filesystems signed in with
their account and password: that view is their *session*, kept here, keyed by
the principal and an HMAC tag of the password (a changed password is another
session, with connections of its own; nothing is ever looked up by a password).

A session ends, its connections logged off and closed and its password dropped
from memory, when:

* no request of its user has started for ``server.auth.pass_through_idle_seconds``
  (a reaper thread looks every quarter of that, while sessions exist);
* the config is reloaded;
* more than :data:`MAX_SESSIONS` are open in the worker: the least recently used.

A session still in use then (a download or upload running, a call under way)
leaves the table at once, so the next request opens a new one, and its
connections close as soon as it is idle (the reaper tries again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from mosaic.auth.principal import KERBEROS, Principal
from mosaic.config.schema import Config
from mosaic.core.credentials import Secret, SignedInAccount
from mosaic.vfs.tenantfs import TenantFileSystem

log = logging.getLogger(__name__)

#: sessions with own connections per worker process (each connection has a receiver
#: thread in smbprotocol); beyond, the least recently used one is ended
MAX_SESSIONS = 512
AD_SOURCE = "ad:"
KERBEROS_REFUSAL = ("signed in with Kerberos: no password to reach the file server as "
                    "you; sign in with your password")


def account_of(principal: Principal, secret: Secret | None) -> SignedInAccount | str:
    """The account a pass-through mount may sign in with, or why there is none."""
    if not principal.source.startswith(AD_SOURCE):
        return (f"the file server is reached with each user's own Active Directory "
                f"account (credentials: pass_through); {principal.user} is a local user")
    if principal.method == KERBEROS:
        return KERBEROS_REFUSAL
    if secret is None:
        return "no password to reach the file server as you; sign in with your password"
    return SignedInAccount(principal.source[len(AD_SOURCE):], principal.home_name, secret)


@dataclass
class Session:
    """One user's view whose own filesystems (``close_if_idle()``) hold their account."""

    config: Config
    view: TenantFileSystem
    filesystems: list[Any]
    last_used: float = field(default_factory=time.monotonic)

    def end(self) -> bool:
        """Log off each filesystem that is idle; True when all of them were."""
        return all([fs.close_if_idle() for fs in self.filesystems])  # a list: try each


class PassThroughSessions:
    """The open sessions of one worker and the thread that ends idle ones."""

    def __init__(self, idle_seconds: Callable[[], float],
                 max_sessions: int = MAX_SESSIONS) -> None:
        self._idle_seconds = idle_seconds  # read at each sweep: the live config's
        self._max = max_sessions
        self._sessions: OrderedDict[Hashable, Session] = OrderedDict()  # least recent first
        self._ending: list[Session] = []  # out of the table, still in use
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None

    def get(self, key: Hashable, config: Config) -> TenantFileSystem | None:
        """The session's view, now used again; None if there is none (for this config)."""
        with self._lock:
            session = self._sessions.get(key)
            if session is None or session.config is not config:
                return None
            session.last_used = time.monotonic()
            self._sessions.move_to_end(key)
            return session.view

    def put(self, key: Hashable, session: Session) -> None:
        with self._lock:
            replaced = self._sessions.pop(key, None)  # two first requests raced: keep one
            self._sessions[key] = session
            if replaced is not None:
                self._ending.append(replaced)
            while len(self._sessions) > self._max:
                self._ending.append(self._sessions.popitem(last=False)[1])
            self._start_reaper()

    def end_later(self, session: Session) -> None:
        """A session nobody will find again (a view with a broken mount is rebuilt at
        the next request): it ends like the others, once idle."""
        self.put(object(), session)

    def end_all(self) -> None:
        """End every session (a config reload): the idle ones now."""
        with self._lock:
            self._ending.extend(self._sessions.values())
            self._sessions.clear()
        self.sweep()

    def sweep(self) -> None:
        """End the sessions idle for ``idle_seconds`` and those waiting to end."""
        deadline = time.monotonic() - self._idle_seconds()
        with self._lock:
            while self._sessions:
                key, session = next(iter(self._sessions.items()))
                if session.last_used > deadline:
                    break
                del self._sessions[key]
                self._ending.append(session)
            ending, self._ending = self._ending, []
        # outside the lock: logging off is a round trip per connection
        busy = [session for session in ending if not session.end()]
        if busy:
            with self._lock:
                self._ending.extend(busy)

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, daemon=True,
                                            name="mosaic-pass-through-sessions")
            self._reaper.start()

    def _reap(self) -> None:
        """Sweep while sessions exist; a later session starts another thread."""
        while True:
            time.sleep(min(max(self._idle_seconds() / 4, 0.25), 30.0))
            try:
                self.sweep()
            except Exception:  # a sweep must never end the thread while sessions remain
                log.exception("ending idle pass-through sessions failed")
            with self._lock:
                if not self._sessions and not self._ending:
                    self._reaper = None
                    return
