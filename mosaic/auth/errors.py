"""Sign-in failures a client must be told apart from a wrong password."""

from __future__ import annotations


class DirectoryUnavailable(Exception):
    """No domain controller of a tenant's directory could check a login.

    The client gets 503 with Retry-After (not 401: its password may be right,
    and a 401 makes Windows ask the user again and again).
    """

    def __init__(self, tenant: str, domain: str, reason: str, retry_after: float) -> None:
        super().__init__(f"tenant {tenant}: directory {domain}: {reason}")
        self.tenant = tenant
        self.domain = domain
        self.reason = reason
        self.retry_after = retry_after
