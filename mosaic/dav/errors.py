"""The one place where VFS errors become HTTP statuses."""

from __future__ import annotations

import errno
import functools
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_INTERNAL_ERROR,
    HTTP_LOCKED,
    HTTP_METHOD_NOT_ALLOWED,
    HTTP_NOT_FOUND,
    HTTP_REQUEST_ENTITY_TOO_LARGE,
    HTTP_SERVICE_UNAVAILABLE,
    DAVError,
)

from mosaic.core.errors import (
    DirectoryNotEmptyError,
    FileTooLargeError,
    InvalidPathError,
    MountUnavailableError,
    NameCollisionError,
)

log = logging.getLogger(__name__)

# Most specific first: ReadOnlyError/AccessDeniedError are PermissionErrors.
STATUS_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (MountUnavailableError, HTTP_SERVICE_UNAVAILABLE),
    (InvalidPathError, HTTP_BAD_REQUEST),
    (DirectoryNotEmptyError, HTTP_CONFLICT),
    (NameCollisionError, HTTP_CONFLICT),
    (FileTooLargeError, HTTP_REQUEST_ENTITY_TOO_LARGE),
    (PermissionError, HTTP_FORBIDDEN),
    (FileNotFoundError, HTTP_NOT_FOUND),
    (FileExistsError, HTTP_METHOD_NOT_ALLOWED),
    (IsADirectoryError, HTTP_CONFLICT),
    (NotADirectoryError, HTTP_CONFLICT),
)

# Errors a backend raises as a plain OSError (a local disk that is full).
STATUS_BY_ERRNO: dict[int, int] = {
    errno.ENOSPC: HTTP_INSUFFICIENT_STORAGE,
    errno.EDQUOT: HTTP_INSUFFICIENT_STORAGE,
    errno.EFBIG: HTTP_REQUEST_ENTITY_TOO_LARGE,
    # in use by another program on a file server (an SMB sharing violation)
    errno.EBUSY: HTTP_LOCKED,
}


def to_dav_error(exc: BaseException) -> DAVError:
    if isinstance(exc, DAVError):
        return exc
    if isinstance(exc, MountUnavailableError):  # clients wait, then retry: not an error page
        return DAVError(HTTP_SERVICE_UNAVAILABLE, context_info=_public_message(exc),
                        add_headers=[("Retry-After", str(math.ceil(exc.retry_after)))])
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return DAVError(status, context_info=_public_message(exc))
    if isinstance(exc, OSError) and exc.errno in STATUS_BY_ERRNO:
        # strerror only: a plain OSError's filename may be a backend path
        return DAVError(STATUS_BY_ERRNO[exc.errno], context_info=exc.strerror)
    # Unknown failures are logged in full here and answered without details.
    log.error("unexpected storage error: %s: %s", type(exc).__name__, exc)
    return DAVError(HTTP_INTERNAL_ERROR)


def _public_message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return str(exc)


F = TypeVar("F", bound=Callable[..., Any])


def translated(func: F) -> F:
    """Run a resource method, raising VFS errors as the matching DAVError."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DAVError:
            raise
        except Exception as exc:
            raise to_dav_error(exc) from exc

    return wrapper  # type: ignore[return-value]
