"""The domain controllers of one Active Directory domain, and open connections to them.

Windows and WebDAV clients sign in often, and a new LDAPS connection costs a
TCP and TLS handshake (about 100 ms against Samba here), so connections are
kept open and reused; each use starts with a bind, so a connection never
carries one user's identity into another's check. DCs are tried in the
configured order; one that fails is skipped for ``dc_retry_seconds`` so that a
dead DC costs its timeout once, not on every login. At most
``max_concurrent_logins`` run at once per domain: when DCs hang, the other
logins wait a bounded time and then get 503, instead of piling up threads.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException

from mosaic.config.directory import ActiveDirectory

_log = logging.getLogger(__name__)
T = TypeVar("T")
Clock = Callable[[], float]

#: an idle connection older than this is closed rather than reused (AD drops
#: idle connections after 15 minutes by default)
MAX_IDLE_SECONDS = 300.0


class DomainControllerError(Exception):
    """This DC cannot be used now (unreachable, TLS refused, timed out, busy)."""


class NoDomainController(Exception):
    """No DC of the domain answered; ``reasons`` tells each DC's failure in words."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons) or "no domain controller")
        self.reasons = reasons


@dataclass
class DomainController:
    url: str
    server: ldap3.Server
    start_tls: bool
    skipped_until: float = 0.0
    idle: list[tuple[float, ldap3.Connection]] = field(default_factory=list)


class VerifiedTls(ldap3.Tls):
    """TLS whose certificate must name exactly ``expected``.

    ldap3's own check accepts a certificate that names the URL's host OR any
    of its ``valid_names``; here Python's hostname check runs against the one
    name the config expects (``server_name``, else the URL's host), during the
    handshake, for LDAPS and StartTLS alike. The handshake is part of setting
    the connection up: ``connect_timeout_seconds`` bounds it (ldap3 would wait
    ``timeout_seconds``, meant for each bind and search, on a hung DC).
    """

    def __init__(self, ca_file: str | None, expected: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
        self.expected = expected

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        context = ssl.create_default_context(cafile=self.ca_certs_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        connection.socket.settimeout(connection.server.connect_timeout)
        try:
            connection.socket = context.wrap_socket(connection.socket,
                                                    server_hostname=self.expected,
                                                    do_handshake_on_connect=do_handshake)
        except (ssl.SSLError, OSError) as exc:
            # ldap3 may replace this error by a later one ("socket sending error")
            connection.tls_failure = f"TLS handshake: {_ssl_words(exc)}"
            raise
        connection.socket.settimeout(connection.receive_timeout)


def tls_settings(domain: ActiveDirectory, host: str) -> ldap3.Tls:
    """Certificate verification that cannot be turned off: CA from the config or the system."""
    return VerifiedTls(str(domain.ca_file) if domain.ca_file else None,
                       domain.server_name or host)


def make_controller(domain: ActiveDirectory, url: str) -> DomainController:
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "ldaps"
    server = ldap3.Server(host, port=parts.port or (636 if secure else 389), use_ssl=secure,
                          tls=tls_settings(domain, host), get_info=ldap3.NONE,
                          connect_timeout=domain.connect_timeout_seconds)
    return DomainController(url, server, start_tls=not secure)


def open_connection(dc: DomainController, timeout: int) -> ldap3.Connection:
    """A connection to ``dc`` with TLS in place, not yet bound."""
    conn = ldap3.Connection(dc.server, authentication=ldap3.SIMPLE, read_only=True,
                            auto_referrals=False, receive_timeout=timeout,
                            raise_exceptions=False)
    try:
        conn.open()
        if dc.start_tls:
            # the StartTLS answer is part of the set-up too (wrap_socket then resets it)
            conn.socket.settimeout(dc.server.connect_timeout)
            started = conn.start_tls(read_server_info=False)
            # ldap3 may swallow a failed handshake: only an SSL socket counts
            if not started or not isinstance(conn.socket, ssl.SSLSocket):
                raise DomainControllerError(f"StartTLS failed: {conn.last_error or conn.result}")
    except (LDAPException, OSError) as exc:
        close_quietly(conn)
        raise DomainControllerError(getattr(conn, "tls_failure", None) or _in_words(exc)) from exc
    return conn


def close_quietly(conn: ldap3.Connection) -> None:
    """Unbind and close; a connection that broke may fail to (ldap3 then raises)."""
    with suppress(Exception):
        conn.unbind()


def _ssl_words(exc: Exception) -> str:
    """``certificate verify failed: Hostname mismatch, ...`` without the C file name."""
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
    return str(reason).split(" (_ssl.c")[0]


def _in_words(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class DomainConnections:
    """The DCs of one domain, for one worker process."""

    def __init__(self, domain: ActiveDirectory, clock: Clock = time.monotonic) -> None:
        self.domain = domain
        self.controllers = [make_controller(domain, url) for url in domain.urls]
        self._clock = clock
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(domain.max_concurrent_logins)

    def run(self, operation: Callable[[ldap3.Connection], T]) -> T:
        """``operation`` on a connection to the first DC that works.

        ``operation`` must begin with a bind and raise :class:`DomainControllerError`
        (or let an LDAPException through) when the DC, not the user, failed.
        """
        if not self._slots.acquire(timeout=self.domain.timeout_seconds):
            raise NoDomainController([f"{self.domain.max_concurrent_logins} logins already "
                                      "waiting for this domain's DCs"])
        try:
            return self._run_on_first(operation)
        finally:
            self._slots.release()

    def _run_on_first(self, operation: Callable[[ldap3.Connection], T]) -> T:
        reasons = []
        candidates = self._candidates()
        if not candidates:
            raise NoDomainController([f"every DC failed in the last "
                                      f"{self.domain.dc_retry_seconds:g} s"])
        for dc in candidates:
            try:
                return self._run_on(dc, operation)
            except Exception as exc:  # ldap3 raises more than LDAPException (struct.error...)
                reasons.append(f"{dc.url}: {_in_words(exc)}")
                self._skip(dc, reasons[-1])
        raise NoDomainController(reasons)

    def _run_on(self, dc: DomainController, operation: Callable[[ldap3.Connection], T]) -> T:
        reused = self._take_idle(dc)
        if reused is not None:
            try:
                return self._use(dc, reused, operation)
            except Exception:
                pass  # the DC may have closed an idle connection: one fresh try
        return self._use(dc, open_connection(dc, self.domain.timeout_seconds), operation)

    def _use(self, dc: DomainController, conn: ldap3.Connection,
             operation: Callable[[ldap3.Connection], T]) -> T:
        try:
            result = operation(conn)
        except BaseException:
            close_quietly(conn)
            raise
        self._give_back(dc, conn)
        return result

    def _candidates(self) -> list[DomainController]:
        now = self._clock()
        return [dc for dc in self.controllers if dc.skipped_until <= now]

    def _skip(self, dc: DomainController, reason: str) -> None:
        with self._lock:
            was_up = dc.skipped_until == 0.0
            dc.skipped_until = self._clock() + self.domain.dc_retry_seconds
            idle, dc.idle = dc.idle, []
        for _, conn in idle:
            close_quietly(conn)
        if was_up:
            _log.warning("directory %s: domain controller %s", self.domain.name, reason)

    def _take_idle(self, dc: DomainController) -> ldap3.Connection | None:
        now = self._clock()
        with self._lock:
            while dc.idle:
                since, conn = dc.idle.pop()
                if now - since < MAX_IDLE_SECONDS:
                    return conn
                close_quietly(conn)
        return None

    def _give_back(self, dc: DomainController, conn: ldap3.Connection) -> None:
        with self._lock:
            if dc.skipped_until:
                _log.info("directory %s: domain controller %s answers again",
                          self.domain.name, dc.url)
                dc.skipped_until = 0.0
            if len(dc.idle) < self.domain.max_concurrent_logins:
                dc.idle.append((self._clock(), conn))
                return
        close_quietly(conn)

    def close(self) -> None:
        with self._lock:
            idle = [conn for dc in self.controllers for _, conn in dc.idle]
            for dc in self.controllers:
                dc.idle = []
        for conn in idle:
            close_quietly(conn)

