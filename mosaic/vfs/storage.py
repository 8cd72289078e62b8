"""Builds and caches the filesystems behind every tenant's mounts.

One filesystem instance per (tenant, mount, expanded user): instances are
never shared between tenants (providers set ``cachable = False``) and a config
reload drops them all. A mount reached as the signed-in user (``smb`` with
``credentials: pass_through``) is not kept here at all: it is built for each
user session with that user's account, and the session owns it
(:mod:`mosaic.auth.sessions` closes it when the session ends); a user without an
account to pass gets an entry that refuses them (403).

A mount that fails to build is remembered only briefly, so it recovers by
itself once its backend is back; the failure is reported to
:data:`~mosaic.core.health.HEALTH`, which logs it once, not at every retry.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from mosaic import providers
from mosaic.config.derived import PerObject
from mosaic.config.schema import Config, Mount, ProviderSpec
from mosaic.core import paths
from mosaic.core.capabilities import BuildContext, Capabilities
from mosaic.core.credentials import SignedInAccount
from mosaic.core.errors import MountUnavailableError
from mosaic.core.health import HEALTH
from mosaic.vfs.mounts import MountEntry, MountTable
from mosaic.vfs.quota import Usage

log = logging.getLogger(__name__)

USER_PLACEHOLDER = "{user}"
FAILED_MOUNT_RETRY_SECONDS = MountUnavailableError.retry_after


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


def _own_account_mounts(config: Config) -> dict[str, frozenset[str]]:
    """Tenant -> the mounts (normalised paths) reached as the signed-in user."""
    return {tenant_id: frozenset(paths.normalize(vpath) for vpath, mount in tenant.mounts.items()
                                 if mount.provider.signs_in_as_user())
            for tenant_id, tenant in config.tenants.items()}


#: worked out once per config object (validating every mount's options)
OWN_ACCOUNT_MOUNTS = PerObject(_own_account_mounts)


def has_own_account_mounts(config: Config, tenant_id: str) -> bool:
    """Whether a session of this tenant needs the user's account (and password)."""
    return bool(OWN_ACCOUNT_MOUNTS(config).get(tenant_id))


def own_filesystems(config: Config, table: MountTable) -> list[Any]:
    """The filesystems of ``table`` built with the user's own account."""
    own = OWN_ACCOUNT_MOUNTS(config).get(table.tenant, frozenset())
    return [entry.fs for entry in table.entries if entry.path in own and entry.fs is not None]


class StorageRegistry:
    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._lock = threading.Lock()
        self._built: dict[tuple[str, str, str | None], tuple[MountEntry, float]] = {}

    def clear(self) -> None:
        with self._lock:
            self._built.clear()

    def mount_table(self, config: Config, tenant_id: str, user: str,
                    account: SignedInAccount | None = None, no_account: str = "") -> MountTable:
        """The user's mounts. ``account`` is given to the mounts reached as the signed-in
        user only; without it they refuse the user, saying ``no_account``."""
        tenant = config.tenants[tenant_id]
        recount = tenant.quota_recount_seconds
        own = OWN_ACCOUNT_MOUNTS(config).get(tenant_id, frozenset())
        # The root has no quota of its own: the tenant's covers it.
        entries = [self._entry(tenant_id, "", Mount(provider=tenant.root), user, recount)]
        for vpath, mount in tenant.mounts.items():
            vpath = paths.normalize(vpath)
            if vpath in own:
                entries.append(self._own_entry(tenant_id, vpath, mount, user, recount,
                                               account, no_account))
            else:
                entries.append(self._entry(tenant_id, vpath, mount, user, recount))
        return MountTable(tenant_id, entries, quota=tenant.quota)

    def _own_entry(self, tenant_id: str, vpath: str, mount: Mount, user: str,
                   recount_seconds: float, account: SignedInAccount | None,
                   no_account: str) -> MountEntry:
        """A mount reached as the user: built for them alone, never kept here."""
        owner = user if is_per_user(mount.provider) else None
        if account is None:
            return MountEntry(vpath, mount.read_only, Capabilities(), None, owner=owner,
                              refused=no_account or "no account to reach the file server with")
        return self._build(tenant_id, vpath, mount, owner, recount_seconds, account)

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
               recount_seconds: float, account: SignedInAccount | None = None) -> MountEntry:
        mount_name, spec = "/" + vpath, mount.provider
        try:
            module = providers.load(spec.type)
            capabilities: Capabilities = module.CAPABILITIES
            raw = spec.model_extra or {}
            if owner is not None:
                raw = _expand(raw, safe_user_segment(owner))
            options = module.Options.model_validate(raw)
            context = BuildContext(tenant_id, mount_name, self._data_dir, owner, account)
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
