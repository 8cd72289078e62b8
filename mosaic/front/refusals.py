"""Why the front end refuses a request, and the one log line it writes about it.

A refusal found while reading the head is answered by the front end itself
(``Refusal``); one found while the application reads the body is raised into
the application as a ``BodyRefusal`` (a DAVError, so wsgidav answers it with
its status, and an upload aborts instead of being published).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from wsgidav.dav_error import DAVError

log = logging.getLogger(__name__)

#: How much of a hostile value a log line quotes.
_EXCERPT = 40


class Refusal(Exception):
    """A request the front end answers itself with ``status``, closing the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        #: the request's head (mosaic.front.head.Head) when its request line was valid
        self.head: Any = None


class BodyRefusal(DAVError):
    """A body that cannot be read to its end: malformed, too large or too slow."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, context_info=reason)
        self.reason = reason


def excerpt(value: bytes) -> str:
    """A hostile value as a log or error text may quote it: short, escaped."""
    text = repr(value[:_EXCERPT])
    return text + "..." if len(value) > _EXCERPT else text


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def log_refusal(status: int, reason: str, client: str, request: str) -> None:
    # INFO, like nginx's client errors: the client is at fault, not the server,
    # and one line per refused request is what an admin tracing a client needs.
    log.info("refused %s from %s%s: %s", status, client,
             f" ({request})" if request else "", reason)
