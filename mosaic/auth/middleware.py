"""Middlewares around wsgidav's HTTPAuthenticator.

``BasicHeaderGuard`` (before HTTPAuthenticator): wsgidav unpacks the Basic
credentials without error handling, so a header that is not base64 of
``user:password`` in UTF-8 raises and becomes a 500. The guard answers 401.

``CanonicalUserMiddleware`` (after HTTPAuthenticator): canonical user names.

After a successful Basic login wsgidav stores the raw header user name as
``wsgidav.auth.user_name``, and RequestServer copies it to
``wsgidav.user_name``, the lock owner. ``ACME\\alice``, ``alice@acme.example``
and ``alice`` would then be three owners of one person's locks (UNLOCK 403,
If-header 412). This middleware replaces both with ``user@tenant`` from the
principal the domain controller set.

Stack order::

    "middleware_stack": [..., BasicHeaderGuard, HTTPAuthenticator,
                         CanonicalUserMiddleware, ..., RequestResolver],
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from wsgidav.mw.base_mw import BaseMiddleware

from mosaic.auth.domain_controller import PRINCIPAL_KEY, REALM
from mosaic.auth.identity import Principal

_log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]
#: The scheme test HTTPAuthenticator applies (first word, any case).
_SCHEME = re.compile(r"^(\w+)")


class BasicHeaderGuard(BaseMiddleware):
    """Answers 401 to Basic credentials that wsgidav would crash on."""

    def __call__(self, environ: dict[str, Any],
                 start_response: StartResponse) -> Iterable[bytes]:
        header = environ.get("HTTP_AUTHORIZATION")
        if (header is None or environ.get("REQUEST_METHOD") == "OPTIONS"
                or _basic_credentials_ok(header)):
            return self.next_app(environ, start_response)
        body = b"401 Unauthorized: malformed Basic credentials\n"
        start_response("401 Unauthorized", [
            ("WWW-Authenticate", f'Basic realm="{REALM}"'),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ])
        return [body]


def _basic_credentials_ok(header: str) -> bool:
    """False only for a Basic header that HTTPAuthenticator cannot unpack."""
    scheme = _SCHEME.search(header)
    if scheme is None or scheme.group(1).lower() != "basic":
        return True  # not Basic: HTTPAuthenticator answers it without decoding
    try:
        # The same steps as HTTPAuthenticator.handle_basic_auth_request.
        decoded = base64.decodebytes(header[len("Basic "):].strip().encode("utf-8"))
        return ":" in decoded.decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError included
        return False


class CanonicalUserMiddleware(BaseMiddleware):
    """Sets ``wsgidav.auth.user_name`` and ``wsgidav.user_name`` to ``user@tenant``."""

    def __call__(self, environ: dict[str, Any],
                 start_response: StartResponse) -> Iterable[bytes]:
        principal = environ.get(PRINCIPAL_KEY)
        if isinstance(principal, Principal):
            environ["wsgidav.auth.user_name"] = principal.canonical
            environ["wsgidav.user_name"] = principal.canonical
            return self.next_app(environ, start_response)
        if environ.get("REQUEST_METHOD") == "OPTIONS":
            # The domain controller lets OPTIONS through unauthenticated.
            environ["wsgidav.auth.user_name"] = ""
            return self.next_app(environ, start_response)
        return _refuse(environ, start_response)


def _refuse(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Fail closed: something let a request past authentication without a principal.

    That happens with http_authenticator.trusted_auth_header or another domain
    controller - both bypass MosaicDomainController, and the VFS must never
    serve a request it cannot attribute to a tenant user.
    """
    _log.error("%s %s reached CanonicalUserMiddleware without a Mosaic principal "
               "(is MosaicDomainController the domain controller, trusted_auth_header off?)",
               environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
    body = b"403 Forbidden: no authenticated Mosaic user\n"
    start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"),
                                     ("Content-Length", str(len(body)))])
    return [body]
