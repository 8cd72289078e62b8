"""The closed error vocabulary of the VFS.

Every provider and the tenant filesystem raise only these (built-in OSError
subclasses where Python has one), so the protocol layers map errors to status
codes in exactly one place (`mosaic.dav.errors`). Messages name virtual paths
and mounts, never backend locations or credentials.
"""

from __future__ import annotations

import errno


class InvalidPathError(OSError):
    """The path is malformed or tries to leave its root (traversal, NUL, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EINVAL, message)


class DirectoryNotEmptyError(OSError):
    def __init__(self, path: str) -> None:
        super().__init__(errno.ENOTEMPTY, "Directory not empty", path)


class ReadOnlyError(PermissionError):
    """A write into a read-only mount."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.EROFS, "Read-only mount", path)


class AccessDeniedError(PermissionError):
    """The user's permission rules forbid this operation."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.EACCES, "Access denied", path)


class MountUnavailableError(OSError):
    """The backend of a mount cannot be reached or is misconfigured.

    Raised for the mount's subtree only; the message names the tenant and the
    mount point, never the backend's address or secrets.
    """

    #: seconds after which asking again is worth it: a failed mount is built again
    #: after this long (mosaic.vfs.storage), and providers retry a server after as long
    retry_after = 5.0

    def __init__(self, tenant: str, mount: str, reason: str) -> None:
        super().__init__(errno.EIO, f"Mount {mount!r} of tenant {tenant!r} unavailable: {reason}")
        self.tenant = tenant
        self.mount = mount
        self.reason = reason


class CrossDeviceError(OSError):
    """Raised by a provider that cannot do an operation natively across roots."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.EXDEV, "Cross-device operation", path)


class FileTooLargeError(OSError):
    """More than the backend can store as one file (its part limit, say)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(errno.EFBIG, f"File too large: {reason}", path)


class QuotaExceededError(OSError):
    """A write would take a mount or tenant beyond its configured quota."""

    def __init__(self, path: str, scope: str) -> None:
        super().__init__(errno.EDQUOT, f"Quota of the {scope} exceeded", path)


class SameFileError(PermissionError):
    """A copy onto the source itself: another case of its name where names are
    case-insensitive (RFC 4918 9.8.5: 403)."""

    def __init__(self, path: str, mount: str) -> None:
        super().__init__(errno.EPERM, "Source and destination are the same file (names "
                         f"differing only in case are one file in {mount})", path)


class NameCollisionError(OSError):
    """A tree holds two names that would be one at the destination (``a.txt`` and
    ``A.txt`` moved to a case-insensitive store): refused before anything is written."""

    def __init__(self, path: str, first: str, second: str, mount: str) -> None:
        super().__init__(errno.EEXIST, f"{first!r} and {second!r} would be one file in "
                         f"{mount} (names there are case-insensitive)", path)


class OwnAccountError(PermissionError):
    """A mount reached with each user's own account (``credentials: pass_through``)
    that this user cannot use: none to give (a local user, a Kerberos sign-in without
    a password), or the backend refuses it. 403 for the mount's subtree; the message
    says why and names no secret."""

    def __init__(self, mount: str, reason: str) -> None:
        super().__init__(errno.EACCES, f"Mount {mount!r}: {reason}")
        self.mount = mount
        self.reason = reason
