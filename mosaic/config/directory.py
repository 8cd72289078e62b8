"""The schema of a tenant's Active Directory domains (``tenants.<id>.active_directory``).

A domain lists its domain controllers as LDAP URLs tried in order. Only
encrypted connections exist: ``ldaps://`` is LDAP over TLS, ``ldap://`` is
upgraded with StartTLS before anything else is sent, and the certificate is
always verified (against ``ca_file``, else the system's CAs) and must name
``server_name`` or the URL's host. There is no switch to turn that off.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

NETBIOS_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
DNS_NAME = rf"^{_LABEL}(\.{_LABEL})+$"
_DN_PART = re.compile(r"^\s*[A-Za-z][A-Za-z0-9-]*\s*=\s*\S")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _ldap_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ldaps", "ldap"):
        raise ValueError("expected ldaps://host[:port] (TLS) or ldap://host[:port] (StartTLS)")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials do not belong in the URL: use service_account")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("expected only scheme, host and port (the base DN is `base_dn`)")
    parts.port  # noqa: B018 - raises ValueError for a port out of range
    return url


def _distinguished_name(dn: str) -> str:
    if not all(_DN_PART.match(part) for part in dn.split(",")):
        raise ValueError("expected a distinguished name such as OU=Staff,DC=corp,DC=example,DC=com")
    return dn


LdapUrl = Annotated[str, AfterValidator(_ldap_url)]
DistinguishedName = Annotated[str, AfterValidator(_distinguished_name)]
DnsName = Annotated[str, Field(pattern=DNS_NAME, max_length=253)]


class ServiceAccount(_Strict):
    user: str = Field(min_length=1, description="Account for directory searches: "
                      "`svc@corp.example.com`, `CORP\\svc` or its DN")
    password: SecretStr = Field(description="Its password (or `password_file`)")


class ActiveDirectory(_Strict):
    """One Active Directory domain whose accounts may sign in to the tenant."""

    name: DnsName = Field(description="DNS name of the domain, e.g. `corp.example.com`; also a "
                          "login suffix (`user@corp.example.com`)")
    netbios: Annotated[str, Field(pattern=NETBIOS_NAME)] = Field(
        description="NetBIOS name (`CORP`): logins `CORP\\user`, and how permission rules "
        "name the domain's users and groups (`CORP\\alice`, `@CORP\\Finance`)")
    upn_suffixes: list[DnsName] = Field(
        [], description="More UPN suffixes of the domain that route `user@suffix` to it")
    urls: list[LdapUrl] = Field(min_length=1, description="Domain controllers, tried in this "
                                "order: `ldaps://dc1.corp.example.com` or `ldap://...` (StartTLS)")
    ca_file: Path | None = Field(None, description="PEM file of the CA(s) that signed the DCs' "
                                 "certificates (default: the system's CAs)")
    server_name: str | None = Field(
        None, description="Name the DCs' certificates must carry when the URLs use addresses "
        "or other names (default: each URL's host)")
    base_dn: DistinguishedName | None = Field(
        None, description="Where accounts and groups are searched (default: from `name`, "
        "e.g. DC=corp,DC=example,DC=com)")
    service_account: ServiceAccount | None = Field(
        None, description="Optional account for searches; without it, each user's own bind "
        "reads their entry. Kerberos sign-in needs it")
    restrict_to_ou: DistinguishedName | None = Field(
        None, description="Only accounts below this OU may sign in")
    restrict_to_group: str | None = Field(
        None, description="Only members (also nested) of this group may sign in (its name)")
    connect_timeout_seconds: float = Field(3, gt=0, le=60,
                                           description="TCP and TLS set-up to one DC")
    timeout_seconds: int = Field(5, ge=1, le=120,
                                 description="One LDAP operation (bind or search)")
    max_concurrent_logins: int = Field(
        8, ge=1, le=256, description="Logins checked against this domain at once per worker; "
        "more wait up to `timeout_seconds`, then get 503 (no thread pile-up when DCs hang)")
    dc_retry_seconds: float = Field(
        15, ge=0, description="A DC that failed is skipped for this long (the next one is "
        "tried); when every DC is skipped, new logins get 503 at once")

    @model_validator(mode="after")
    def _one_name_each(self) -> ActiveDirectory:
        names = [self.name.lower(), *(s.lower() for s in self.upn_suffixes)]
        if len(set(names)) != len(names):
            raise ValueError("upn_suffixes repeat a suffix or the domain's name")
        return self

    @property
    def search_base(self) -> str:
        return self.base_dn or ",".join(f"DC={label}" for label in self.name.split("."))

    @property
    def login_suffixes(self) -> list[str]:
        return [self.name, *self.upn_suffixes]



class Kerberos(_Strict):
    """HTTP Negotiate (Kerberos) single sign-on for a tenant."""

    spn: str = Field(pattern=r"^HTTP/[A-Za-z0-9.-]+(@[A-Za-z0-9.-]+)?$",
                     description="This server's service principal, `HTTP/files.corp.example.com` "
                     "(the realm defaults to the first domain's name in capitals)")
    keytab: Path = Field(description="Keytab holding the SPN's keys (AES; exported with "
                         "`samba-tool domain exportkeytab` or `ktpass`)")
