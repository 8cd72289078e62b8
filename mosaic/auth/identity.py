"""Who a user is: identity sources and the principal they produce.

An identity source checks a user name and password inside ONE tenant (the
tenant is resolved before, see :mod:`mosaic.auth.login`). Local users from the
config are the only source today; a directory (Active Directory) becomes a
second class implementing :class:`IdentitySource` plus one line in
:func:`identity_sources`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from mosaic.auth.login import fold_case
from mosaic.config.derived import PerObject
from mosaic.config.schema import Tenant, User
from mosaic.core import passwords

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """An authenticated user of one tenant."""

    tenant: str
    #: The configured spelling, whatever case the client typed.
    user: str
    groups: frozenset[str]
    display_name: str | None = None

    @property
    def canonical(self) -> str:
        """``user@tenant``: the one name used as lock owner and in logs."""
        return f"{self.user}@{self.tenant}"


class IdentitySource(Protocol):
    """Checks credentials for the tenant it was built for."""

    def authenticate(self, user: str, password: str) -> Principal | None:
        """The principal for valid credentials, else None. Must not raise for bad input."""
        ...


class LocalIdentitySource:
    """The users listed under ``tenants.<id>.users`` with argon2 hashes."""

    def __init__(self, tenant_id: str, tenant: Tenant) -> None:
        self._tenant_id = tenant_id
        self._tenant = tenant

    def authenticate(self, user: str, password: str) -> Principal | None:
        found = self._lookup(user)
        if found is None or not found[1].enabled:
            passwords.verify_dummy(password)
            return None
        name, record = found
        if not passwords.verify_password(record.password_hash.get_secret_value(), password):
            return None
        return Principal(
            tenant=self._tenant_id,
            user=name,
            groups=frozenset(record.groups),
            display_name=record.display_name,
        )

    def _lookup(self, user: str) -> tuple[str, User] | None:
        """Case-insensitive lookup returning the configured name."""
        matches = users_by_folded_name(self._tenant).get(fold_case(user), ())
        if len(matches) > 1:
            # Two configured users differ only in case: refuse both rather
            # than guess which one the client meant.
            _log.error("tenant %s: users %s differ only in case; login refused",
                       self._tenant_id, sorted(name for name, _ in matches))
            return None
        return matches[0] if matches else None


def _users_by_folded_name(tenant: Tenant) -> dict[str, tuple[tuple[str, User], ...]]:
    users: dict[str, tuple[tuple[str, User], ...]] = {}
    for name, record in tenant.users.items():
        folded = fold_case(name)
        users[folded] = (*users.get(folded, ()), (name, record))
    return users


#: A tenant's users by ASCII-folded name, built once per (immutable) Tenant.
users_by_folded_name = PerObject(_users_by_folded_name)


def identity_sources(tenant_id: str, tenant: Tenant) -> list[IdentitySource]:
    """The sources to try, in order, for a login to ``tenant``; the first success wins."""
    return [LocalIdentitySource(tenant_id, tenant)]
