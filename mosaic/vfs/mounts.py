"""The mount table of one tenant as seen by one user, resolved by longest prefix."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from fsspec import AbstractFileSystem

from mosaic.core import paths
from mosaic.core.capabilities import Capabilities
from mosaic.core.errors import MountUnavailableError, OwnAccountError
from mosaic.vfs.quota import Usage


@dataclass(frozen=True)
class MountEntry:
    """One mounted provider. ``fs`` is None when it could not be built (``error``), or
    when this user may not use it at all (``refused``: a pass-through mount and a user
    without a password to pass)."""

    path: str  # normalised virtual path, "" for the tenant root
    read_only: bool
    capabilities: Capabilities
    fs: AbstractFileSystem | None
    error: str | None = None
    owner: str | None = None  # set for per-user ({user}) mounts
    quota: int | None = None  # bytes this mount may hold (configured), None: no limit
    usage: Usage | None = None  # what it holds; None when fs is None
    refused: str | None = None  # why this user cannot use the mount (403, not 503)

    @property
    def key(self) -> str:
        return paths.match_key(self.path)

    def filesystem(self, tenant: str) -> AbstractFileSystem:
        if self.refused is not None:
            raise OwnAccountError("/" + self.path, self.refused)
        if self.fs is None:
            raise MountUnavailableError(tenant, "/" + self.path, self.error or "not available")
        return self.fs

    def ref_segment(self) -> str:
        """The lock/property key of the mount point: per-user mounts get ``~user``
        so alice's and bob's ``/home/doc.txt`` never share a lock."""
        name = _quote(paths.basename(self.path))
        return f"{name}~{_quote(self.owner)}" if self.owner else name


def _quote(segment: str) -> str:
    # "~" is our per-user marker, so a literal one is always escaped.
    return paths.quote_segment(segment).replace("~", "%7E")


class MountTable:
    def __init__(self, tenant: str, entries: Iterable[MountEntry],
                 quota: int | None = None) -> None:
        self.tenant = tenant
        self.quota = quota  # bytes the whole tenant may hold, None: no limit
        self._entries = sorted(entries, key=lambda e: len(e.key), reverse=True)
        if not self._entries or self._entries[-1].path != "":
            raise ValueError("a mount table needs a root entry")
        self._by_key = {e.key: e for e in self._entries}

    @property
    def entries(self) -> list[MountEntry]:
        return list(self._entries)

    def resolve(self, path: str) -> tuple[MountEntry, str]:
        """The mount serving ``path`` and the path relative to that mount."""
        key = paths.match_key(path)
        for entry in self._entries:
            if paths.is_within(key, entry.key):
                return entry, paths.relative_to(path, entry.path)
        raise AssertionError("unreachable: the root entry matches every path")

    def mount_at(self, path: str) -> MountEntry | None:
        return self._by_key.get(paths.match_key(path))

    def virtual_children(self, path: str) -> dict[str, MountEntry | None]:
        """Names directly below ``path`` that lead to a mount point.

        Maps name -> the mount entry when the child IS a mount point, else None
        (an intermediate folder the parent backend may not have).
        """
        key = paths.match_key(path)
        found: dict[str, MountEntry | None] = {}
        for entry in self._entries:
            if not entry.path or entry.key == key or not paths.is_within(entry.key, key):
                continue
            rest = paths.relative_to(entry.path, path)
            name = rest.split("/", 1)[0]
            if "/" not in rest:
                found[name] = entry
            else:
                found.setdefault(name, None)
        return found

    def has_mount_below(self, path: str) -> bool:
        key = paths.match_key(path)
        return any(e.path and e.key != key and paths.is_within(e.key, key)
                   for e in self._entries)

    def is_virtual(self, path: str) -> bool:
        """A mount point or a folder on the way to one."""
        key = paths.match_key(path)
        return any(e.path and paths.is_within(e.key, key) for e in self._entries)

    def child_ref_keys(self, parent_ref: str, parent: str, names: list[str]) -> list[str]:
        """The :meth:`ref_key` of each name listed in folder ``parent``, whose key
        is ``parent_ref``: a mount point's key is its own; the rest only append
        their name (resolving each would cost a lookup per member)."""
        mounted = {paths.match_key(name) for name, entry in self.virtual_children(parent).items()
                   if entry is not None}
        base = parent_ref.rstrip("/")
        return [self.ref_key(paths.join(parent, name))
                if mounted and paths.match_key(name) in mounted
                else f"{base}/{_quote(name)}" for name in names]

    def ref_key(self, path: str) -> str:
        """A stable key for locks and dead properties: tenant + mount identity + path."""
        entry, rel = self.resolve(path)
        parts = [_quote(self.tenant)]
        if entry.path:
            parts += [_quote(seg) for seg in paths.parent(entry.path).split("/") if seg]
            parts.append(entry.ref_segment())
        parts += [_quote(seg) for seg in rel.split("/") if seg]
        return "/" + "/".join(parts)


def path_from_ref_key(ref_key: str) -> tuple[str, str]:
    """Invert :meth:`MountTable.ref_key`: (tenant, virtual path with leading "/")."""
    tenant, _, rest = ref_key.strip("/").partition("/")
    segments = [unquote(seg.split("~", 1)[0]) for seg in rest.split("/") if seg]
    return unquote(tenant), "/" + "/".join(segments)
