"""Who is making a request: the result of any sign-in, whatever the protocol."""

from __future__ import annotations

from dataclasses import dataclass

#: Principal.method values
PASSWORD = "password"
KERBEROS = "kerberos"


@dataclass(frozen=True)
class Principal:
    """An authenticated user of one tenant.

    ``user`` is the permission subject and lock owner: the configured spelling
    of a local user (``alice``), ``DOMAIN\\\\account`` for a directory account
    (``CORP\\\\alice`` however it was typed: UPN, down-level name or bare).
    """

    tenant: str
    user: str
    groups: frozenset[str]
    display_name: str | None = None
    #: What ``{user}`` becomes in per-user mount paths (default: ``user``)
    home: str | None = None
    #: "local" or "ad:<NETBIOS>"
    source: str = "local"
    #: how the user proved it: PASSWORD or KERBEROS
    method: str = PASSWORD
    #: the directory's immutable id of the account (objectGUID), None for local users
    account_id: str | None = None

    @property
    def canonical(self) -> str:
        """``user@tenant``: the one name used as lock owner and in logs."""
        return f"{self.user}@{self.tenant}"

    @property
    def home_name(self) -> str:
        return self.home or self.user
