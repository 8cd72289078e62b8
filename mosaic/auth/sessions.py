"""Principal -> that user's view of their tenant, for any protocol."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from mosaic.auth.principal import Principal
from mosaic.config.holder import ConfigHolder
from mosaic.config.schema import Config
from mosaic.vfs.permissions import PermissionView
from mosaic.vfs.storage import StorageRegistry
from mosaic.vfs.tenantfs import TenantFileSystem


class SessionService:
    """The signed-in user's view of their tenant, from the live config.

    Views are reused across requests (building the mount table and deciding
    the rules costs more than serving a small GET); a config change drops them
    all, and a view with a broken mount is never kept, so the mount is retried.
    """

    MAX_VIEWS = 4096

    def __init__(self, holder: ConfigHolder) -> None:
        self._holder = holder
        self.storage = StorageRegistry(Path(holder.current.server.data_dir))
        self._views: OrderedDict[tuple[Any, ...], tuple[Config, TenantFileSystem]] = \
            OrderedDict()
        self._lock = threading.Lock()
        holder.on_change(lambda _config: self._forget_all())

    def _forget_all(self) -> None:
        with self._lock:
            self._views.clear()
        self.storage.clear()

    def open(self, principal: Principal) -> TenantFileSystem:
        config = self._holder.current
        key = (id(config), principal.tenant, principal.user, principal.home_name,
               principal.groups)
        with self._lock:
            cached = self._views.get(key)
            # Identity check too: a new config may reuse a freed one's id().
            if cached is not None and cached[0] is config:
                self._views.move_to_end(key)
                return cached[1]
        view = self._build(config, principal)
        if all(entry.fs is not None for entry in view.table.entries):
            with self._lock:
                self._views[key] = (config, view)
                while len(self._views) > self.MAX_VIEWS:
                    self._views.popitem(last=False)
        return view

    def _build(self, config: Config, principal: Principal) -> TenantFileSystem:
        tenant = config.tenants.get(principal.tenant)
        if tenant is None:  # removed by a reload while the login was cached
            raise PermissionError(13, "tenant no longer exists")
        table = self.storage.mount_table(config, principal.tenant, principal.home_name)
        permissions = PermissionView(tenant.permissions, principal.user, principal.groups,
                                     tenant.default_access)
        return TenantFileSystem(table, permissions)
