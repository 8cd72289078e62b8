"""Local users: the accounts listed in the config, with argon2 password hashes.

A source checks a user name and password inside ONE tenant (the tenant is
resolved before, see :mod:`mosaic.auth.login`, and the source chosen by
:func:`mosaic.auth.authenticator.route_login`). The other source is a
tenant's Active Directory (:mod:`mosaic.auth.directory.source`).
"""

from __future__ import annotations

import logging

from mosaic.auth.login import fold_case
from mosaic.auth.principal import Principal
from mosaic.config.derived import PerObject
from mosaic.config.schema import Tenant, User
from mosaic.core import passwords

_log = logging.getLogger(__name__)


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

