"""The access log: one JSON line per request (``server.access_log``).

A line is written when the server is done with the answer, i.e. when it closes
the body, so ``status`` is the one sent and ``bytes`` counts the body bytes the
server actually took (a client that hangs up mid-download shows fewer than the
file has). The body is passed through chunk by chunk, never buffered.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from logging.handlers import WatchedFileHandler
from typing import Any

from wsgidav.mw.base_mw import BaseMiddleware

LOGGER_NAME = "mosaic.access"
STDERR = "-"
ANONYMOUS = "-"


def access_logger(target: str) -> logging.Logger:
    """The logger writing to ``target`` (a path, or "-" for stderr), on its own
    handler: the server's log level and format do not apply to it."""
    logger = logging.getLogger(LOGGER_NAME)
    # WatchedFileHandler reopens the file after logrotate moved it.
    handler = logging.StreamHandler(sys.stderr) if target == STDERR \
        else WatchedFileHandler(target, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    for old in logger.handlers[:]:
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class AccessLog(BaseMiddleware):
    """wsgidav middleware: first in the stack, so it sees every answer, 401s included."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        target = config["mosaic"]["get_config"]().server.access_log
        self._logger = access_logger(target)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        entry = _Entry(environ)

        def recording_start_response(status: str, headers: list[tuple[str, str]],
                                     exc_info: Any = None) -> Any:
            entry.status = int(status[:3])
            return start_response(status, headers, exc_info)

        try:
            body = self.next_app(environ, recording_start_response)
        except BaseException:
            entry.status = entry.status or 500
            self._logger.info(entry.line())
            raise
        return _CountedBody(body, entry, lambda: self._logger.info(entry.line()))


class _Entry:
    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.started = time.time()
        self.clock = time.perf_counter()
        self.method = environ.get("REQUEST_METHOD", "")
        self.path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        self.status = 0
        self.sent = 0

    def line(self) -> str:
        principal = self.environ.get("mosaic.principal")
        return json.dumps({
            "time": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="milliseconds"),
            "remote": self.environ.get("REMOTE_ADDR", ""),
            "tenant": principal.tenant if principal else ANONYMOUS,
            "user": principal.user if principal else ANONYMOUS,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "bytes": self.sent,
            "duration_ms": round((time.perf_counter() - self.clock) * 1000, 3),
        }, ensure_ascii=False)


class _CountedBody:
    """The app's body, counted as the server takes it; logs once when closed."""

    def __init__(self, body: Iterable[bytes], entry: _Entry, done: Callable[[], None]) -> None:
        self._body = body
        self._entry = entry
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            yield chunk
            # Counted once the server comes back for more: it has written this one.
            self._entry.sent += len(chunk)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if self._done is not None:
                done, self._done = self._done, None
                done()
