"""The write stream handed to wsgidav for a PUT: committed only when complete."""

from __future__ import annotations

import logging
from typing import Any

from wsgidav.dav_error import HTTP_INTERNAL_ERROR, DAVError

from mosaic.dav.errors import to_dav_error

log = logging.getLogger(__name__)


class RefusedBodyFilter(logging.Filter):
    """wsgidav logs every failure of a PUT body with its traceback ("PUT: byte
    copy failed"); a body we refused on purpose (507 over quota, 413 beyond a
    store's part limit, 503 store down) is one warning line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, DAVError) and error.value != HTTP_INTERNAL_ERROR:
            record.msg, record.args = "PUT refused: %s", (error.get_user_info(),)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("wsgidav.request_server").addFilter(RefusedBodyFilter())


class AtomicUpload:
    """Wraps a provider's ``autocommit=False`` file.

    wsgidav writes the body, calls ``close()``, then ``end_write``: only then do
    we publish, and only if the body was as long as announced (a client that
    disconnects mid-body must not replace the previous version with a stub).
    """

    def __init__(self, target: Any, expected_length: int | None) -> None:
        self._target = target
        self._expected = expected_length
        self.written = 0

    def write(self, data: bytes) -> int:
        try:
            self._target.write(data)
        except Exception as exc:
            # wsgidav answers 500 for any error while writing the body; a store
            # that went away mid-upload is a 503 for its mount (errors table).
            raise to_dav_error(exc) from exc
        self.written += len(data)
        return len(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        # Publishing happens in finish(); closing alone must not commit.
        pass

    def finish(self) -> bool:
        if self._expected is not None and self.written != self._expected:
            self.abort()
            return False
        self._target.close()
        self._target.commit()
        return True

    def abort(self) -> None:
        try:
            self._target.discard()
        except Exception as exc:  # the upload failed already; report, don't mask
            log.warning("discarding an aborted upload failed: %s", exc)
