"""Active Directory as an identity source: a password login is a bind as the user.

One login costs one bind plus two searches on a reused TLS connection: the
user's own entry (objectGUID, sAMAccountName, display name, primary group),
then every group the account belongs to, nested ones included (the in-chain
matching rule, LDAP_MATCHING_RULE_IN_CHAIN) together with its primary group
(which AD never lists as a ``member``). What the user typed - UPN, ``CORP\\\\name``
or a bare name - only selects the account; the principal is always
``CORP\\\\sAMAccountName`` with the account's objectGUID.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ldap3
from ldap3.utils.conv import escape_bytes, escape_filter_chars

from mosaic.auth.directory.codes import bind_refusal
from mosaic.auth.directory.connections import (
    DomainConnections,
    DomainControllerError,
    NoDomainController,
)
from mosaic.auth.errors import DirectoryUnavailable
from mosaic.auth.principal import KERBEROS, PASSWORD, Principal
from mosaic.config.directory import ActiveDirectory

_log = logging.getLogger(__name__)

IN_CHAIN = "1.2.840.113556.1.4.1941"
ACCOUNT_ATTRIBUTES = ["objectGUID", "objectSid", "sAMAccountName", "userPrincipalName",
                      "displayName", "primaryGroupID", "userAccountControl"]
ACCOUNTDISABLE = 0x2
#: LDAP result codes that are the DC's trouble, not the user's: busy, unavailable,
#: unwilling (e.g. a DC still starting), strongerAuthRequired, other
_DC_TROUBLE = {8, 51, 52, 53, 80}
_INVALID_CREDENTIALS = 49


@dataclass(frozen=True)
class DirectoryLogin:
    """How to bind as, and find, the account a login names."""

    bind_name: str  # a UPN or NETBIOS\\account: AD accepts both for a simple bind
    account_filter: str
    typed: str  # for log lines


@dataclass(frozen=True)
class Account:
    """What the directory says about one account."""

    dn: str
    sam: str
    guid: str
    display_name: str | None
    groups: frozenset[str]
    disabled: bool = False


class ActiveDirectorySource:
    """One AD domain of one tenant."""

    def __init__(self, tenant: str, domain: ActiveDirectory,
                 connections: DomainConnections | None = None) -> None:
        self.tenant = tenant
        self.domain = domain
        self.connections = connections or DomainConnections(domain)

    def login_for(self, user: str, kind: str, qualifier: str | None) -> DirectoryLogin:
        """The account a login names: ``user@qualifier`` (a UPN) or a down-level name."""
        sam = escape_filter_chars(user)
        if kind == "domains" and qualifier:
            upn = f"{user}@{qualifier}"
            implicit = qualifier.lower() == self.domain.name.lower()
            wanted = (f"(|(userPrincipalName={escape_filter_chars(upn)})(sAMAccountName={sam}))"
                      if implicit else f"(userPrincipalName={escape_filter_chars(upn)})")
            return DirectoryLogin(upn, _users(wanted), upn)
        name = f"{self.domain.netbios}\\{user}"
        return DirectoryLogin(name, _users(f"(sAMAccountName={sam})"), name)

    def authenticate(self, login: DirectoryLogin, password: str) -> Principal | None:
        """The principal, None when AD refuses; DirectoryUnavailable when no DC answers."""
        if not password:
            # An empty password makes a simple bind "unauthenticated": AD accepts it.
            return None
        account = self._ask(lambda conn: self._check_password(conn, login, password))
        return self._principal(account, PASSWORD, login.typed) if account else None

    def lookup(self, sam_account_name: str) -> Principal | None:
        """The principal of an account proven otherwise (Kerberos), read with the service
        account; None if the account does not exist or may not sign in."""
        service = self.domain.service_account
        if service is None:
            raise DirectoryUnavailable(self.tenant, self.domain.name,
                                       "no service_account to look accounts up with", 0)
        login = self.login_for(sam_account_name, "netbios", None)

        def read(conn: ldap3.Connection) -> Account | None:
            bind_service(conn, service.user, service.password.get_secret_value())
            return self.read_account(conn, login.account_filter)

        account = self._ask(read)
        if account is not None and account.disabled:
            # The KDC issues no new ticket to a disabled account, but one issued
            # before stays valid for hours.
            _log.info("tenant %s: directory %s: %s is disabled; its ticket is refused",
                      self.tenant, self.domain.netbios, login.typed)
            return None
        return self._principal(account, KERBEROS, login.typed) if account else None

    def close(self) -> None:
        self.connections.close()

    def _ask(self, operation: Callable[[ldap3.Connection], Account | None]) -> Account | None:
        try:
            return self.connections.run(operation)
        except NoDomainController as exc:
            raise DirectoryUnavailable(self.tenant, self.domain.name, str(exc),
                                       max(self.domain.dc_retry_seconds, 1)) from exc

    def _check_password(self, conn: ldap3.Connection, login: DirectoryLogin,
                        password: str) -> Account | None:
        refusal = bind_user(conn, login, password)
        if refusal is not None:
            _log.info("tenant %s: directory %s: login %s refused: %s", self.tenant,
                      self.domain.netbios, login.typed, refusal)
            return None
        return self.read_account(conn, login.account_filter)

    def read_account(self, conn: ldap3.Connection, account_filter: str) -> Account | None:
        entries = _search(conn, self.domain.search_base, account_filter, ACCOUNT_ATTRIBUTES)
        if len(entries) != 1:
            _log.info("tenant %s: directory %s: %s account for %s under %s", self.tenant,
                      self.domain.netbios, "no" if not entries else "more than one",
                      account_filter, self.domain.search_base)
            return None
        dn, attrs = entries[0]
        sid = _first(attrs, "objectSid")
        groups = self._groups(conn, dn, sid, _first(attrs, "primaryGroupID"))
        control = int(_first(attrs, "userAccountControl") or 0)
        account = Account(dn=dn, sam=_text(attrs, "sAMAccountName") or "",
                          guid=str(uuid.UUID(bytes_le=_first(attrs, "objectGUID"))),
                          display_name=_text(attrs, "displayName"), groups=groups,
                          disabled=bool(control & ACCOUNTDISABLE))
        return account if self._allowed(account) else None

    def _groups(self, conn: ldap3.Connection, dn: str, sid: bytes | None,
                primary_rid: bytes | None) -> frozenset[str]:
        wanted = f"(member:{IN_CHAIN}:={escape_filter_chars(dn)})"
        if sid and primary_rid:
            primary = sid[:-4] + int(primary_rid).to_bytes(4, "little")
            wanted = f"(|{wanted}(objectSid={escape_bytes(primary)}))"
        found = _search(conn, self.domain.search_base, f"(&(objectClass=group){wanted})",
                        ["sAMAccountName"])
        return frozenset(name for _, attrs in found if (name := _text(attrs, "sAMAccountName")))

    def _allowed(self, account: Account) -> bool:
        ou, group = self.domain.restrict_to_ou, self.domain.restrict_to_group
        if ou and not _below(account.dn, ou):
            _log.info("tenant %s: directory %s: %s is outside %s (restrict_to_ou)",
                      self.tenant, self.domain.netbios, account.sam, ou)
            return False
        if group and group.lower() not in {g.lower() for g in account.groups}:
            _log.info("tenant %s: directory %s: %s is not a member of %s (restrict_to_group)",
                      self.tenant, self.domain.netbios, account.sam, group)
            return False
        return True

    def _principal(self, account: Account, method: str, typed: str) -> Principal:
        netbios = self.domain.netbios
        groups = {*account.groups, *(f"{netbios}\\{g}" for g in account.groups)}
        _log.debug("tenant %s: %s signed in as %s\\%s", self.tenant, typed, netbios,
                   account.sam)
        return Principal(tenant=self.tenant, user=f"{netbios}\\{account.sam}",
                         groups=frozenset(groups), display_name=account.display_name,
                         home=account.sam, source=f"ad:{netbios}", method=method,
                         account_id=account.guid)


def bind_user(conn: ldap3.Connection, login: DirectoryLogin, password: str) -> str | None:
    """Bind as the user: None on success, else AD's reason in words. Raises
    DomainControllerError when the DC, not the credentials, is the problem."""
    if not password:
        return "empty password"  # would be an "unauthenticated" bind, which AD accepts
    conn.user, conn.password = login.bind_name, password
    if conn.bind():
        return None
    result = conn.result
    code = result.get("result")
    if code != _INVALID_CREDENTIALS and (code in _DC_TROUBLE or code is None):
        raise DomainControllerError(f"bind: {result.get('description')} "
                                    f"{result.get('message', '')}".strip())
    sub_code, reason = bind_refusal(result.get("message"))
    return f"{reason} (AD {sub_code})" if sub_code else reason


def _users(condition: str) -> str:
    return f"(&(objectCategory=person)(objectClass=user){condition})"


def bind_service(conn: ldap3.Connection, user: str, password: str) -> None:
    conn.user, conn.password = user, password
    if not conn.bind():
        _, reason = bind_refusal(conn.result.get("message"))
        raise DomainControllerError(f"service account bind refused: {reason}")


def _search(conn: ldap3.Connection, base: str, search_filter: str,
            attributes: list[str]) -> list[tuple[str, dict[str, list[bytes]]]]:
    """(dn, raw attributes) of the entries found; continuation references are left out."""
    if not conn.search(base, search_filter, search_scope=ldap3.SUBTREE, attributes=attributes):
        code = conn.result.get("result")
        if code not in (0, 32):  # success without entries, noSuchObject
            raise DomainControllerError(f"search: {conn.result.get('description')}")
    return [(item["dn"], item["raw_attributes"]) for item in conn.response or ()
            if item.get("type") == "searchResEntry"]


def _first(attrs: dict[str, list[bytes]], name: str) -> Any:
    values = attrs.get(name) or []
    return values[0] if values else None


def _text(attrs: dict[str, list[bytes]], name: str) -> str | None:
    value = _first(attrs, name)
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _below(dn: str, ancestor: str) -> bool:
    def parts(name: str) -> list[str]:
        return [p.strip().lower().replace(" =", "=").replace("= ", "=") for p in name.split(",")]
    mine, theirs = parts(dn), parts(ancestor)
    return len(mine) > len(theirs) and mine[-len(theirs):] == theirs
