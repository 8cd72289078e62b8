"""Status pages that name Mosaic, and no second log line for a refused body.

wsgidav renders every status page (errors through ErrorPrinter, the bodies of
201/204/... through ``util.send_status_response``) with
``DAVError.get_response_page``, which names ``WsgiDAV/<version>`` with its
project URL and the server's local time. Replacing that one method is the one
place that covers them all.
"""

from __future__ import annotations

import logging
from html import escape

from wsgidav.dav_error import (
    ERROR_DESCRIPTIONS,
    HTTP_INTERNAL_ERROR,
    DAVError,
    get_http_status_string,
)

from mosaic.front.refusals import BodyRefusal, status_line

#: What the server calls itself, in the Server header and in status pages.
SERVER_NAME = "Mosaic"


def _status_page(error: DAVError) -> tuple[str, bytes]:
    if error.err_condition:  # a precondition: RFC 4918 wants it as XML
        return "application/xml; charset=utf-8", error.err_condition.as_string().encode()
    status = escape(get_http_status_string(error))
    page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{status}</title>"
            f"</head><body>\n<h1>{status}</h1>\n<p>{escape(error.get_user_info())}</p>\n"
            f"<hr/>{SERVER_NAME}\n</body></html>\n")
    return "text/html; charset=utf-8", page.encode()


class _RefusedBodyLines(logging.Filter):
    """wsgidav's PUT logs any failure of the body copy with a traceback ("PUT:
    byte copy failed"). A body the front end refused (malformed, too large, too
    slow) is the client's fault and the front end logs it in one line: drop
    wsgidav's record. A body refused on purpose further down (507 over quota,
    413 beyond a store's part limit, 503 store down) becomes one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BodyRefusal):
            return False
        if isinstance(error, DAVError) and error.value != HTTP_INTERNAL_ERROR:
            record.msg, record.args = "PUT refused: %s", (error.get_user_info(),)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_FILTER = _RefusedBodyLines()


def install() -> None:
    """Brand wsgidav's status pages and quiet its log of refused bodies (idempotent)."""
    DAVError.get_response_page = _status_page  # type: ignore[method-assign]
    # wsgidav's status lines lack the codes the front end raises ("408 Status").
    for code in (408, 413, 414, 431):
        ERROR_DESCRIPTIONS.setdefault(code, status_line(code))
    logger = logging.getLogger("wsgidav.request_server")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
