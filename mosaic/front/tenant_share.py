"""A tenant's share of the worker's threads, counted once its login is known.

Stack order (after the principal is set, before anything that does work)::

    "middleware_stack": [..., HTTPAuthenticator, TenantShare, ...]

A request counts from the moment it is authenticated until its thread leaves
the connection (the last byte of its answer written, or the client gone), so
a slow upload and a slow reader both count. Beyond its share a tenant is
served while the worker keeps ``spare_threads`` free for the others; otherwise
it is answered 503 with Retry-After and its connection is closed: an unread
body is never read
(cheroot would otherwise read it to the end first), and a connection that
was refused holds nothing on the server
(:func:`mosaic.front.admission.close_after_this_request`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from wsgidav.mw.base_mw import BaseMiddleware

from mosaic.config.schema import Config
from mosaic.dav.authentication import PRINCIPAL_KEY
from mosaic.front.admission import at_end_of_this_request, busy_threads, close_after_this_request
from mosaic.front.shares import Shares, refusal_head

StartResponse = Callable[..., Any]


class TenantShare(BaseMiddleware):
    """Refuses a tenant's request while the tenant holds its share of threads."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        self._get_config: Callable[[], Config] = config["mosaic"]["get_config"]
        self.tenants = Shares("tenant")

    def __call__(self, environ: dict[str, Any],
                 start_response: StartResponse) -> Iterable[bytes]:
        principal = environ.get(PRINCIPAL_KEY)
        if principal is None:  # anonymous OPTIONS: nothing to count it against
            return self.next_app(environ, start_response)
        settings = self._get_config().server
        fair_share, tenant, busy = settings.fair_share, principal.tenant, busy_threads()
        room = busy is not None and fair_share.room_to_spare(settings.threads, busy)
        if not self.tenants.enter(tenant, fair_share.tenant_limit(settings.threads), room):
            return _refuse(start_response, fair_share.retry_after_seconds)
        if not at_end_of_this_request(lambda: self.tenants.leave(tenant)):
            self.tenants.leave(tenant)  # not behind our cheroot gate: nothing to count with
        return self.next_app(environ, start_response)


def _refuse(start_response: StartResponse, retry_after: int) -> list[bytes]:
    close_after_this_request()
    status, headers, body = refusal_head(retry_after)
    start_response(status, headers)
    return [body]
