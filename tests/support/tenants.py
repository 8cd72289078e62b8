"""A two-tenant configuration that the integration and isolation tests share."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher

from mosaic.config.schema import Config
from mosaic.core.passwords import hash_password

if TYPE_CHECKING:
    from tests.support.samba_ad import ADDomain

# Cheap parameters keep the suite fast; verification reads them from the hash.
_TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

PASSWORDS = {
    ("acme", "alice"): "alice-secret",
    ("acme", "bob"): "bob-secret",
    ("acme", "carol"): "carol-secret",
    # Same name and password in another tenant: must never reach acme's data.
    ("globex", "alice"): "alice-secret",
    ("globex", "dave"): "dave-secret",
}


@cache
def _hash(password: str) -> str:
    return hash_password(password, _TEST_HASHER)


def _users(tenant: str, groups: dict[str, list[str]]) -> dict[str, Any]:
    return {
        user: {"password_hash": _hash(password), "groups": groups.get(user, [])}
        for (owner, user), password in PASSWORDS.items() if owner == tenant
    }


def local(path: Path | str) -> dict[str, Any]:
    return {"type": "local", "root": str(path)}


def two_tenants(base: Path) -> dict[str, Any]:
    """acme: a local root, a mount, a nested mount, per-user homes, a read-only
    mount, a broken mount and permission rules; globex: a plain local root."""
    (base / "not-a-directory").write_bytes(b"a file where the broken mount expects a folder")
    return {
        "server": {"listen": "127.0.0.1:0", "data_dir": str(base / "data"), "workers": 1,
                   "threads": 16},
        "tenants": {
            "acme": {
                "domains": ["acme.example"],
                "netbios": ["ACME"],
                "hosts": ["acme.localhost"],
                "root": local(base / "acme-root"),
                "mounts": {
                    "/projects": {"provider": local(base / "acme-projects")},
                    "/projects/archive": {"provider": local(base / "acme-archive")},
                    "/home": {"provider": local(base / "acme-homes" / "{user}")},
                    "/library": {"provider": local(base / "acme-library"), "read_only": True},
                    "/broken": {"provider": local(base / "not-a-directory" / "sub")},
                },
                "groups": ["staff", "finance"],
                "users": _users("acme", {"alice": ["staff"], "bob": ["staff"],
                                         "carol": ["finance"]}),
                "permissions": {
                    "/finance": {"@finance": "write", "*": "none"},
                    "/public": {"*": "read", "alice": "write"},
                    "/\u00c9quipe": {"@finance": "write", "*": "none"},
                },
            },
            "globex": {
                "domains": ["globex.example"],
                "netbios": ["GLOBEX"],
                "hosts": ["globex.localhost"],
                "root": local(base / "globex-root"),
                "users": _users("globex", {}),
            },
        },
    }


def active_directory(domain: ADDomain) -> dict[str, Any]:
    """A tenant's ``active_directory`` entry for a test domain (tests/support/samba_ad.py)."""
    return {"name": domain.dns_name, "netbios": domain.netbios, "urls": [domain.ldaps_url],
            "ca_file": str(domain.ca_file), "server_name": domain.server_name}


#: the one local user of each tenant of :func:`two_tenants_on_two_domains`
BREAK_GLASS = ("root", "root-secret")


def two_tenants_on_two_domains(base: Path, corp: ADDomain, other: ADDomain) -> dict[str, Any]:
    """:func:`two_tenants` whose users are the accounts of ``corp`` (acme) and ``other``
    (globex), beside one local break-glass user each (:data:`BREAK_GLASS`, named as no
    account: a bare name on a tenant's host is its domain's account); the rule naming
    alice names CORP's, and globex's own /finance is for its group Finance."""
    data = two_tenants(base)
    acme, globex = data["tenants"]["acme"], data["tenants"]["globex"]
    for tenant, domain in ((acme, corp), (globex, other)):
        tenant["users"] = {BREAK_GLASS[0]: {"password_hash": _hash(BREAK_GLASS[1])}}
        tenant["active_directory"] = [active_directory(domain)]
    acme["permissions"]["/public"] = {"*": "read", f"{corp.netbios}\\alice": "write"}
    globex["permissions"] = {"/finance": {"@Finance": "write", "*": "none"}}
    return data


def build(data: dict[str, Any]) -> Config:
    return Config.model_validate(data)
