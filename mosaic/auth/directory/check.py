"""``mosaic ad-check TENANT [USER]``: what an admin runs when sign-in fails.

Each DC of each of the tenant's domains is tried step by step - TCP, TLS and
the certificate's names, the service account's bind, then the user's bind,
entry and groups - and every step is reported in plain words, so the first
failing one says where the trouble is. The password is never printed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException

from mosaic.auth.directory.connections import (
    DomainController,
    DomainControllerError,
    close_quietly,
    make_controller,
    open_connection,
)
from mosaic.auth.directory.source import ActiveDirectorySource, bind_service, bind_user
from mosaic.config.directory import ActiveDirectory

Print = Callable[[str], None]


@dataclass
class Report:
    """Lines printed so far and whether every domain had one DC that passed."""

    write: Print
    failed_domains: list[str] = field(default_factory=list)

    def step(self, ok: bool | None, text: str) -> None:
        mark = {True: "ok     ", False: "FAILED ", None: "skipped"}[ok]
        self.write(f"    {mark} {text}")


class StepFailed(Exception):
    pass


def check_tenant(tenant_id: str, domains: list[ActiveDirectory], user: str | None,
                 password: str | None, write: Print = print) -> bool:
    """Check every domain of the tenant; True if each has a DC that passes every step."""
    report = Report(write)
    if not domains:
        write(f"tenant {tenant_id} has no active_directory domain")
        return False
    for domain in domains:
        write(f"tenant {tenant_id}: domain {domain.name} ({domain.netbios}), "
              f"base {domain.search_base}")
        source = ActiveDirectorySource(tenant_id, domain)
        passed = [_check_dc(report, source, make_controller(domain, url), user, password)
                  for url in domain.urls]
        if not any(passed):
            report.failed_domains.append(domain.name)
            write(f"  no domain controller of {domain.name} passed every step")
    return not report.failed_domains


def _check_dc(report: Report, source: ActiveDirectorySource, dc: DomainController,
              user: str | None, password: str | None) -> bool:
    report.write(f"  {dc.url}")
    try:
        _tcp(report, dc)
        with _tls(report, source.domain, dc) as conn:
            _service_bind(report, source.domain, conn)
            if user is not None:
                _user_steps(report, source, conn, user, password or "")
    except StepFailed:
        return False
    return True


def _tcp(report: Report, dc: DomainController) -> None:
    host, port = dc.server.host, dc.server.port
    started = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=dc.server.connect_timeout).close()
    except OSError as exc:
        report.step(False, f"TCP connection to {host} port {port}: {exc.strerror or exc}")
        raise StepFailed from exc
    report.step(True, f"TCP connection to {host} port {port} ({_ms(started)})")


@contextmanager
def _tls(report: Report, domain: ActiveDirectory, dc: DomainController) -> Iterator[Any]:
    how = "StartTLS" if dc.start_tls else "TLS (LDAPS)"
    expected = domain.server_name or dc.server.host
    trust = f"the CA in {domain.ca_file}" if domain.ca_file else "the system's CAs"
    started = time.monotonic()
    try:
        conn = open_connection(dc, domain.timeout_seconds)
    except DomainControllerError as exc:
        report.step(False, f"{how}: {exc} - the certificate must be signed by {trust} and "
                    f"name {expected!r} (server_name)")
        raise StepFailed from exc
    report.step(True, f"{how} ({_ms(started)}): certificate {_describe(conn)}, trusted via "
                f"{trust}, names {expected!r}")
    try:
        yield conn
    finally:
        close_quietly(conn)


def _describe(conn: ldap3.Connection) -> str:
    try:
        cert = conn.socket.getpeercert() or {}
    except (AttributeError, ValueError):
        return "(not readable)"
    subject = dict(item for rdn in cert.get("subject", ()) for item in rdn)
    names = ", ".join(value for _, value in cert.get("subjectAltName", ())) or "none"
    return (f"CN={subject.get('commonName', '?')}, alternative names: {names}, "
            f"valid until {cert.get('notAfter', '?')}")


def _service_bind(report: Report, domain: ActiveDirectory, conn: ldap3.Connection) -> None:
    service = domain.service_account
    if service is None:
        report.step(None, "service account bind: none configured (users' own binds read "
                    "their entries; Kerberos sign-in needs one)")
        return
    started = time.monotonic()
    try:
        bind_service(conn, service.user, service.password.get_secret_value())
    except (DomainControllerError, LDAPException) as exc:
        report.step(False, f"service account {service.user}: {exc}")
        raise StepFailed from exc
    report.step(True, f"service account {service.user} bound ({_ms(started)})")


def _user_steps(report: Report, source: ActiveDirectorySource, conn: ldap3.Connection,
                user: str, password: str) -> None:
    login = _login(source, user)
    started = time.monotonic()
    try:
        refusal = bind_user(conn, login, password)
    except (DomainControllerError, LDAPException) as exc:
        report.step(False, f"bind as {login.bind_name}: {exc}")
        raise StepFailed from exc
    if refusal is not None:
        report.step(False, f"bind as {login.bind_name}: refused: {refusal}")
        raise StepFailed
    report.step(True, f"bind as {login.bind_name} ({_ms(started)})")
    try:
        account = source.read_account(conn, login.account_filter)
    except (DomainControllerError, LDAPException) as exc:
        report.step(False, f"reading {login.bind_name}'s entry: {exc}")
        raise StepFailed from exc
    if account is None:
        report.step(False, f"{login.bind_name}: no single entry under {source.domain.search_base}"
                    " that may sign in (see restrict_to_ou / restrict_to_group)")
        raise StepFailed
    groups = ", ".join(sorted(account.groups, key=str.lower)) or "none"
    report.step(True, f"account {source.domain.netbios}\\{account.sam} ({account.dn}), "
                f"objectGUID {account.guid}, groups (nested and primary): {groups}")


def _login(source: ActiveDirectorySource, user: str) -> Any:
    if "\\" in user:
        return source.login_for(user.partition("\\")[2], "netbios", None)
    if "@" in user:
        name, _, suffix = user.rpartition("@")
        return source.login_for(name, "domains", suffix)
    return source.login_for(user, "", None)


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.0f} ms"
