"""HTTP sign-in for the WebDAV app: an ``Authorization`` header -> a Principal in environ.

A thin WSGI adapter over :class:`mosaic.auth.authenticator.Authenticator`,
in place of wsgidav's HTTPAuthenticator and domain controller:

* ``Basic`` credentials go to the authenticator; a header that is not base64
  of ``user:password`` in UTF-8 is a 401 (wsgidav crashed on it with a 500);
* a refused login is 401 with the challenge; a directory that cannot answer is
  503 with Retry-After, so clients retry instead of prompting the user again;
* OPTIONS is anonymous (Windows Explorer gives up on a 401 to OPTIONS);
* on success the principal goes to ``environ["mosaic.principal"]``, and
  ``user@tenant`` (or ``CORP\\\\alice@tenant``) to wsgidav's user name keys,
  so every spelling of one login is one lock owner;
* after a Basic login the password goes to ``environ["mosaic.secret"]`` as a
  :class:`~mosaic.core.credentials.Secret` (masked in any repr): mounts reached
  as the signed-in user (``credentials: pass_through``) sign in with it. A
  Kerberos login has none.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

from wsgidav.mw.base_mw import BaseMiddleware

from mosaic.auth.authenticator import Authenticator, Client
from mosaic.auth.errors import DirectoryUnavailable
from mosaic.auth.principal import Principal
from mosaic.core.credentials import Secret

_log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]

REALM = "Mosaic"
#: environ key holding the authenticated :class:`Principal`
PRINCIPAL_KEY = "mosaic.principal"
#: environ key holding the password of a Basic login, a :class:`Secret`
SECRET_KEY = "mosaic.secret"
#: Permissions are enforced by the VFS; wsgidav only displays roles.
ROLES = ["editor"]


class HttpAuthentication(BaseMiddleware):
    """Wiring: ``config["mosaic"]["authenticator"]``, an :class:`Authenticator`."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        authenticator = (config.get("mosaic") or {}).get("authenticator")
        if not isinstance(authenticator, Authenticator):
            raise RuntimeError('HttpAuthentication needs config["mosaic"]["authenticator"]')
        self.authenticator = authenticator

    def __call__(self, environ: dict[str, Any],
                 start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "OPTIONS":
            environ["wsgidav.auth.user_name"] = ""
            return self.next_app(environ, start_response)
        client = Client(environ.get("REMOTE_ADDR"), environ.get("HTTP_HOST"))
        try:
            principal, reply, secret = self._sign_in(environ, client)
        except DirectoryUnavailable as exc:
            return _unavailable(start_response, exc.retry_after)
        if principal is None:
            return _challenge(start_response, self.authenticator.offers_kerberos(client.host))
        if reply:
            start_response = _with_header(start_response, "WWW-Authenticate",
                                          "Negotiate " + base64.b64encode(reply).decode())
        environ[PRINCIPAL_KEY] = principal
        if secret is not None:
            environ[SECRET_KEY] = secret
        environ["wsgidav.auth.realm"] = REALM
        environ["wsgidav.auth.user_name"] = principal.canonical
        environ["wsgidav.user_name"] = principal.canonical
        environ["wsgidav.auth.roles"] = list(ROLES)
        return self.next_app(environ, start_response)

    def _sign_in(self, environ: dict[str, Any],
                 client: Client) -> tuple[Principal | None, bytes | None, Secret | None]:
        """(principal, Kerberos reply token, password) of the request's credentials."""
        scheme, _, value = (environ.get("HTTP_AUTHORIZATION") or "").strip().partition(" ")
        if scheme.lower() == "negotiate":
            token = _base64(value)
            if not token:
                return None, None, None
            return (*self.authenticator.authenticate_ticket(token, client), None)
        if scheme.lower() != "basic":
            return None, None, None
        credentials = basic_credentials(value)
        if credentials is None:
            return None, None, None
        principal = self.authenticator.authenticate(*credentials, client)
        return principal, None, Secret(credentials[1]) if principal else None


def basic_credentials(value: str) -> tuple[str, str] | None:
    """(user, password) from a Basic header's value, None if it is not base64 of
    ``user:password`` in UTF-8."""
    try:
        decoded = (_base64(value) or b"").decode("utf-8")
    except UnicodeDecodeError:
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def _base64(value: str) -> bytes | None:
    try:
        return base64.b64decode(value.strip(), validate=True) or None
    except (binascii.Error, ValueError):
        return None


def _challenge(start_response: StartResponse, negotiate: bool) -> list[bytes]:
    body = b"401 Unauthorized: sign in with your user name and password\n"
    offers = [("WWW-Authenticate", "Negotiate")] if negotiate else []
    start_response("401 Unauthorized", [
        *offers,
        ("WWW-Authenticate", f'Basic realm="{REALM}"'),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
    ])
    return [body]


def _with_header(start_response: StartResponse, name: str, value: str) -> StartResponse:
    def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, (name, value)], exc_info)
    return respond


def _unavailable(start_response: StartResponse, retry_after: float) -> list[bytes]:
    body = b"503 Service Unavailable: the sign-in directory cannot be reached; retry later\n"
    start_response("503 Service Unavailable", [
        ("Retry-After", str(max(1, math.ceil(retry_after)))),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
    ])
    return [body]
