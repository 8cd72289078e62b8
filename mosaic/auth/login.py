"""Which tenant a login belongs to.

Accepted forms of the Basic-auth user name:

* ``alice@acme.example`` - a domain listed in a tenant's ``domains``;
* ``ACME\\alice``        - a NetBIOS name listed in a tenant's ``netbios``
  (a doubled backslash, as some Windows clients send, counts as one);
* ``alice@acme`` / ``acme\\alice`` - the tenant id itself as an implicit
  domain, so every tenant has a working login without DNS or NetBIOS setup;
* ``alice`` - the tenant whose ``hosts`` lists the request's Host header, or
  the only tenant when the config has exactly one;
* ``alice@corp.example.com`` / ``CORP\\alice`` - the name or a UPN suffix, or
  the NetBIOS name, of one of a tenant's Active Directory domains.

Several tenants may share a directory domain (departments of one company):
such a qualifier then needs the Host header to pick one of them.

Names are compared ASCII-case-insensitively (Unicode case folding would let
e.g. the Kelvin sign stand for ``k``). A qualifier that matches several
tenants (one's id is another's domain) or none fails the login, and so does a
login naming tenant A sent to a host name of tenant B: a tenant's host name
must never become a door into another tenant.
"""

from __future__ import annotations

import string
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

from mosaic.config.derived import PerObject
from mosaic.config.schema import Config, Tenant

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


class ResolvedLogin(NamedTuple):
    tenant_id: str
    #: The user part as typed (case not normalised; identity sources do that).
    user: str
    #: "domains" (``user@qualifier``), "netbios" (``qualifier\\user``) or "" (bare)
    kind: str = ""
    qualifier: str | None = None


def fold_case(name: str) -> str:
    """Lower-case ASCII letters only."""
    return name.translate(_ASCII_LOWER)


def resolve_login(config: Config, login: str, host: str | None) -> ResolvedLogin | None:
    """The tenant and user part of ``login`` sent to ``host`` (the Host header),
    or None if it names no single tenant."""
    split = _split(login)
    if split is None:
        return None
    kind, qualifier, user = split
    host_tenant = host_tenant_id(config, host)
    if qualifier is None:
        tenant_id = host_tenant or only_tenant(config)
    else:
        owners = tenant_index(config).qualifiers[kind].get(fold_case(qualifier), frozenset())
        if host_tenant is not None:
            tenant_id = host_tenant if host_tenant in owners else None
        else:
            tenant_id = next(iter(owners)) if len(owners) == 1 else None
    return ResolvedLogin(tenant_id, user, kind, qualifier) if tenant_id is not None else None


def host_tenant_id(config: Config, host: str | None) -> str | None:
    """The tenant whose ``hosts`` lists ``host`` (port ignored)."""
    name = _host_name(host or "")
    return tenant_index(config).by_host.get(name) if name else None


@dataclass(frozen=True)
class TenantIndex:
    """Login qualifiers and host names -> tenant ids, built once per Config."""

    #: "domains" / "netbios" -> folded qualifier -> every tenant it could name
    qualifiers: dict[str, dict[str, frozenset[str]]]
    by_host: dict[str, str]
    only_tenant: str | None


def _build_index(config: Config) -> TenantIndex:
    qualifiers: dict[str, dict[str, frozenset[str]]] = {}
    for kind in ("domains", "netbios"):
        owners: defaultdict[str, set[str]] = defaultdict(set)
        for tenant_id, tenant in config.tenants.items():
            owners[tenant_id].add(tenant_id)  # the id is an implicit domain and NetBIOS name
            for name in _qualifiers(tenant, kind):
                owners[fold_case(name)].add(tenant_id)
        qualifiers[kind] = {name: frozenset(ids) for name, ids in owners.items()}
    by_host: dict[str, str] = {}
    for tenant_id, tenant in config.tenants.items():
        for name in tenant.hosts:
            by_host.setdefault(_host_name(name), tenant_id)  # the first tenant wins, as listed
    only = next(iter(config.tenants)) if len(config.tenants) == 1 else None
    return TenantIndex(qualifiers, by_host, only)


#: A reload makes a new Config, and with it a new index.
tenant_index = PerObject(_build_index)


def _qualifiers(tenant: Tenant, kind: str) -> list[str]:
    """The tenant's own login domains or NetBIOS names, and its directories'."""
    if kind == "domains":
        return [*tenant.domains, *(s for d in tenant.active_directory for s in d.login_suffixes)]
    return [*tenant.netbios, *(d.netbios for d in tenant.active_directory)]


def _split(login: str) -> tuple[str, str | None, str] | None:
    """(tenant attribute the qualifier names, qualifier or None, user), None if malformed."""
    if not login or not login.isprintable():
        # Control characters (NUL above all) have no place in a name and
        # would blur the field separators of the credential cache key.
        return None
    login = login.replace("\\\\", "\\")
    if "\\" in login and "@" in login:
        return None
    if "\\" in login:
        qualifier, _, user = login.partition("\\")
        kind = "netbios"
    elif "@" in login:
        user, _, qualifier = login.rpartition("@")
        kind = "domains"
    else:
        return "", None, login
    if not qualifier or not user or "\\" in user:
        return None
    return kind, qualifier, user


def only_tenant(config: Config) -> str | None:
    """The tenant of a config that has exactly one, else None."""
    return tenant_index(config).only_tenant


def _host_name(host: str) -> str:
    """``Example.COM:8443`` -> ``example.com``; ``[::1]:80`` -> ``::1``."""
    host = host.strip()
    host = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
    return fold_case(host.rstrip("."))
