"""The write stream handed to wsgidav for a PUT: committed only when complete."""

from __future__ import annotations

import logging
from typing import Any

from mosaic.dav.errors import to_dav_error

log = logging.getLogger(__name__)


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
