"""DFS namespaces for the ``smb`` provider: a mount's path resolved to its targets.

A mount whose share is a DFS namespace root (the tree connect says so) asks the
namespace server for the referral of its own path, once per referral lifetime,
and then talks to a target share directly. The referral is kept by the mount,
never in smbprotocol's process-wide ``ClientConfig`` cache: that cache is keyed
by path alone (no port, no credentials), so one tenant's referral would route
another tenant's calls.

A referral names servers and shares but no port: every target is reached on the
mount's own port (as smbprotocol does too).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from smbclient._pool import dfs_request
from smbprotocol.exceptions import ObjectNameNotFound, ObjectPathNotFound
from smbprotocol.tree import TreeConnect

#: a referral without a lifetime (DFS_REFERRAL_V1) is asked for again after this
DEFAULT_TTL_S = 300


@dataclass
class Referral:
    """Where a namespace path lives: ``covered`` (``\\host\\share\\link``) is served by
    each of ``targets`` (``\\server\\share[\\folder]``) alike."""

    covered: str
    targets: tuple[str, ...]
    expires: float  # time.monotonic()
    preferred: int = 0  # the target that answered last: tried first next time

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.expires

    def candidates(self, path: str) -> Iterator[str]:
        """``path`` (below :attr:`covered`) on each target, the preferred one first."""
        rest = path[len(self.covered):]
        order = [self.preferred, *(i for i in range(len(self.targets)) if i != self.preferred)]
        for index in order:
            yield self.targets[index] + rest

    def prefer(self, path: str) -> None:
        for index, target in enumerate(self.targets):
            if path.lower().startswith(target.lower()):
                self.preferred = index
                return


def ask(tree: TreeConnect, path: str) -> Referral | None:
    """The referral of ``path`` (``\\host\\share\\folders``) from the namespace server
    ``tree`` is connected to; None when no link covers it (the namespace's root, or a
    plain folder of its share: served by the share itself)."""
    try:
        response = dfs_request(tree, path)
    except (ObjectPathNotFound, ObjectNameNotFound):
        return None
    entries = response["referral_entries"].get_value()
    # PathConsumed counts UTF-16 bytes of the request's path
    covered = path[:response["path_consumed"].get_value() // 2]
    if not entries or len(list(filter(None, covered.split("\\")))) < 3:
        return None  # a root referral: the namespace's own share
    ttl = min(_ttl(entry) for entry in entries)
    return Referral(covered, tuple(entry.network_address.rstrip("\\") for entry in entries),
                    time.monotonic() + ttl)


def _ttl(entry: object) -> int:
    try:
        return int(entry["time_to_live"].get_value())  # type: ignore[index]
    except KeyError:  # DFS_REFERRAL_V1 has no lifetime
        return DEFAULT_TTL_S


def server_of(path: str) -> str:
    """``\\server\\share\\...`` -> ``server``."""
    return path.lstrip("\\").split("\\", 1)[0]
