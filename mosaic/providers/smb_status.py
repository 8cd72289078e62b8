"""NTSTATUS codes of smbprotocol's errors, as the VFS error vocabulary sees them.

A status is a file's problem (an errno), a refused name, or the whole mount's
(the share or account cannot be used: MountUnavailableError). Used by
:mod:`mosaic.providers.smb`.
"""

from __future__ import annotations

import errno

from smbprotocol.exceptions import (
    SMBAuthenticationError,
    SMBException,
    SMBOSError,
    SMBResponseException,
)
from smbprotocol.header import NtStatus

# NTSTATUS values smbprotocol's NtStatus does not name ([MS-ERREF] 2.3.1)
STATUS_MEDIA_WRITE_PROTECTED = 0xC00000A2
STATUS_FILE_LOCK_CONFLICT = 0xC0000054
STATUS_ACCOUNT_DISABLED = 0xC0000072
STATUS_ACCOUNT_LOCKED_OUT = 0xC0000234
STATUS_NETWORK_SESSION_EXPIRED = 0xC000035C

ERRNO_BY_STATUS = {
    NtStatus.STATUS_OBJECT_NAME_NOT_FOUND: errno.ENOENT,
    NtStatus.STATUS_OBJECT_PATH_NOT_FOUND: errno.ENOENT,
    NtStatus.STATUS_NO_SUCH_FILE: errno.ENOENT,
    NtStatus.STATUS_NOT_FOUND: errno.ENOENT,
    NtStatus.STATUS_DELETE_PENDING: errno.ENOENT,
    NtStatus.STATUS_OBJECT_NAME_COLLISION: errno.EEXIST,
    NtStatus.STATUS_FILE_IS_A_DIRECTORY: errno.EISDIR,
    NtStatus.STATUS_NOT_A_DIRECTORY: errno.ENOTDIR,
    NtStatus.STATUS_DIRECTORY_NOT_EMPTY: errno.ENOTEMPTY,
    NtStatus.STATUS_ACCESS_DENIED: errno.EACCES,
    NtStatus.STATUS_PRIVILEGE_NOT_HELD: errno.EACCES,
    NtStatus.STATUS_CANNOT_DELETE: errno.EACCES,
    STATUS_MEDIA_WRITE_PROTECTED: errno.EROFS,
    NtStatus.STATUS_DISK_FULL: errno.ENOSPC,
    NtStatus.STATUS_SHARING_VIOLATION: errno.EBUSY,
    STATUS_FILE_LOCK_CONFLICT: errno.EBUSY,
}
INVALID_NAME = {NtStatus.STATUS_OBJECT_NAME_INVALID, NtStatus.STATUS_OBJECT_PATH_INVALID,
                 NtStatus.STATUS_OBJECT_PATH_SYNTAX_BAD}
#: why signing in failed when the file server refused the account (a pass-through
#: mount tells that user so, 403, instead of being down for everybody)
ACCOUNT_REFUSED = "the file server refused the account"
# The share or the account cannot be used at all: the whole mount is unavailable.
MOUNT_DOWN = {
    NtStatus.STATUS_LOGON_FAILURE: ACCOUNT_REFUSED,
    STATUS_ACCOUNT_DISABLED: ACCOUNT_REFUSED,
    STATUS_ACCOUNT_LOCKED_OUT: ACCOUNT_REFUSED,
    STATUS_NETWORK_SESSION_EXPIRED: "the file server ended the session",
    NtStatus.STATUS_PASSWORD_EXPIRED: ACCOUNT_REFUSED,
    NtStatus.STATUS_BAD_NETWORK_NAME: "the share does not exist",
    NtStatus.STATUS_USER_SESSION_DELETED: "the file server ended the session",
    NtStatus.STATUS_NETWORK_NAME_DELETED: "the file server ended the session",
}


def status_of(exc: SMBException) -> int | None:
    """The NTSTATUS an error carries; None for smbprotocol's own (a closed socket, no
    credits left): the connection is unusable."""
    if isinstance(exc, SMBOSError):
        return exc.ntstatus
    if isinstance(exc, SMBResponseException):
        return exc.status
    return None


def session_failure(exc: SMBException) -> str:
    """Why signing in failed, as the mount's log line and 503 say it."""
    if isinstance(exc, SMBAuthenticationError):
        return ACCOUNT_REFUSED
    return MOUNT_DOWN.get(status_of(exc) or 0, "the file server cannot be reached")
