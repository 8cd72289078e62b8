"""Builds and caches the filesystems behind every tenant's mounts.

One filesystem instance per (tenant, mount, expanded user): instances are
never shared between tenants (providers set ``cachable = False``) and a config
reload drops them all. A mount that fails to build is remembered only briefly,
so it recovers by itself once its backend is back; the failure is reported to
:data:`~mosaic.core.health.HEALTH`, which logs it once, not at every retry.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from mosaic import providers
from mosaic.config.schema import Config, Mount, ProviderSpec
from mosaic.core import paths
from mosaic.core.capabilities import BuildContext, Capabilities
from mosaic.core.errors import MountUnavailableError
from mosaic.core.health import HEALTH
from mosaic.vfs.mounts import MountEntry, MountTable
from mosaic.vfs.quota import Usage

log = logging.getLogger(__name__)

USER_PLACEHOLDER = "{user}"
FAILED_MOUNT_RETRY_SECONDS = 5.0


def _expand(value: Any, user: str) -> Any:
    if isinstance(value, str):
        return value.replace(USER_PLACEHOLDER, user)
    if isinstance(value, dict):
        return {k: _expand(v, user) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, user) for v in value]
    return value


def is_per_user(spec: ProviderSpec) -> bool:
    return USER_PLACEHOLDER in repr(spec.model_extra)


def safe_user_segment(user: str) -> str:
    """A user name as it may appear inside a backend path."""
    if not user or user.startswith(".") or any(c in user for c in "/\\\x00"):
        raise ValueError(f"user name {user!r} cannot be used in a per-user path")
    return user


class StorageRegistry:
    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._lock = threading.Lock()
        self._built: dict[tuple[str, str, str | None], tuple[MountEntry, float]] = {}

    def clear(self) -> None:
        with self._lock:
            self._built.clear()

    def mount_table(self, config: Config, tenant_id: str, user: str) -> MountTable:
        tenant = config.tenants[tenant_id]
        recount = tenant.quota_recount_seconds
        # The root has no quota of its own: the tenant's covers it.
        entries = [self._entry(tenant_id, "", Mount(provider=tenant.root), user, recount)]
        for vpath, mount in tenant.mounts.items():
            entries.append(self._entry(tenant_id, paths.normalize(vpath), mount, user, recount))
        return MountTable(tenant_id, entries, quota=tenant.quota)

    def _entry(self, tenant_id: str, vpath: str, mount: Mount, user: str,
               recount_seconds: float) -> MountEntry:
        owner = user if is_per_user(mount.provider) else None
        cache_key = (tenant_id, vpath, owner)
        with self._lock:
            cached = self._built.get(cache_key)
        if cached is not None and (cached[0].fs is not None or cached[1] > time.monotonic()):
            return cached[0]
        entry = self._build(tenant_id, vpath, mount, owner, recount_seconds)
        expiry = time.monotonic() + FAILED_MOUNT_RETRY_SECONDS
        with self._lock:
            self._built[cache_key] = (entry, expiry)
        return entry

    def _build(self, tenant_id: str, vpath: str, mount: Mount, owner: str | None,
               recount_seconds: float) -> MountEntry:
        mount_name, spec = "/" + vpath, mount.provider
        try:
            module = providers.load(spec.type)
            capabilities: Capabilities = module.CAPABILITIES
            raw = spec.model_extra or {}
            if owner is not None:
                raw = _expand(raw, safe_user_segment(owner))
            options = module.Options.model_validate(raw)
            context = BuildContext(tenant_id, mount_name, self._data_dir, owner)
            fs = module.build(options, context)
        except Exception as exc:  # any backend failure is confined to this mount
            HEALTH.failed(tenant_id, mount_name, f"{spec.type} mount cannot start: "
                          f"{_cause(exc)}", owner)
            return MountEntry(vpath, mount.read_only, Capabilities(), None,
                              error="storage backend unavailable", owner=owner)
        return MountEntry(vpath, mount.read_only, capabilities, fs, owner=owner,
                          quota=mount.quota, usage=Usage(fs, recount_seconds))


def _cause(exc: Exception) -> str:
    """Why a build failed, in words: the log's formatter masks any secret left in it."""
    if isinstance(exc, MountUnavailableError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"
