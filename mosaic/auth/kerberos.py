"""Kerberos single sign-on: a SPNEGO token (HTTP ``Negotiate``) -> the account's name.

A tenant names its service principal (``HTTP/files.corp.example.com``) and a
keytab holding its keys; the acceptor checks each token against those keys
with the system's GSSAPI (MIT krb5, through python-gssapi) and answers with
the client's principal name, ``alice@CORP.EXAMPLE.COM``. Turning that name
into a Principal with groups is the directory's job (a service-account
lookup, see :meth:`ActiveDirectorySource.lookup`), so a Kerberos login and a
password login of one account are the same Principal.

Only Kerberos is accepted inside SPNEGO: a token needing a second round trip
(NTLM) is refused, and the client falls back to Basic.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from mosaic.config.directory import Kerberos

_log = logging.getLogger(__name__)


class KerberosUnavailable(RuntimeError):
    """python-gssapi is not installed, or the keytab cannot be read."""


@dataclass(frozen=True)
class TicketHolder:
    """Who a valid token names, and the token to send back (mutual authentication)."""

    account: str
    realm: str
    reply: bytes | None


def _gssapi() -> Any:
    try:
        import gssapi
    except ImportError as exc:  # an optional dependency: pip install 'mosaic[kerberos]'
        raise KerberosUnavailable("Kerberos sign-in needs python-gssapi "
                                  "(pip install 'mosaic[kerberos]')") from exc
    return gssapi


class KerberosAcceptor:
    """Accepts tokens for one tenant's service principal."""

    def __init__(self, tenant: str, settings: Kerberos, default_realm: str) -> None:
        self.tenant = tenant
        self.settings = settings
        self.principal = settings.spn if "@" in settings.spn else f"{settings.spn}@{default_realm}"
        self._credentials: Any = None
        self._lock = threading.Lock()

    def accept(self, token: bytes) -> TicketHolder | None:
        """The token's client, or None (logged) if the token is not valid for this SPN."""
        gssapi = _gssapi()
        try:
            context = gssapi.SecurityContext(creds=self._acceptor_credentials(), usage="accept")
            reply = context.step(token)
            if not context.complete:
                _log.info("tenant %s: Negotiate token refused: it needs another round trip "
                          "(NTLM?); only Kerberos is accepted", self.tenant)
                return None
            client = str(context.initiator_name)
        except gssapi.exceptions.GSSError as exc:
            _log.info("tenant %s: Kerberos ticket refused: %s", self.tenant, _words(exc))
            return None
        account, at, realm = client.rpartition("@")
        if not at or not account or "/" in account:
            _log.info("tenant %s: Kerberos client %s is not a user account", self.tenant, client)
            return None
        return TicketHolder(account, realm, reply)

    def _acceptor_credentials(self) -> Any:
        with self._lock:
            if self._credentials is None:
                gssapi = _gssapi()
                name = gssapi.Name(self.principal, gssapi.NameType.kerberos_principal)
                try:
                    self._credentials = gssapi.Credentials(
                        name=name, usage="accept", store={"keytab": str(self.settings.keytab)})
                except gssapi.exceptions.GSSError as exc:
                    raise KerberosUnavailable(f"tenant {self.tenant}: keytab "
                                              f"{self.settings.keytab} for {self.principal}: "
                                              f"{_words(exc)}") from exc
            return self._credentials


def _words(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:300]
