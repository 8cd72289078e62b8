"""Canonical user names for wsgidav, after authentication.

After a successful Basic login wsgidav stores the raw header user name as
``wsgidav.auth.user_name``, and RequestServer copies it to
``wsgidav.user_name``, the lock owner. ``ACME\\alice``, ``alice@acme.example``
and ``alice`` would then be three owners of one person's locks (UNLOCK 403,
If-header 412). This middleware replaces both with ``user@tenant`` from the
principal the domain controller set.

Place it right after HTTPAuthenticator::

    "middleware_stack": [..., HTTPAuthenticator, CanonicalUserMiddleware,
                         ..., RequestResolver],
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from wsgidav.mw.base_mw import BaseMiddleware

from mosaic.auth.domain_controller import PRINCIPAL_KEY
from mosaic.auth.identity import Principal

_log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]


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
