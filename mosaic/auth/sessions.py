"""Principal -> that user's view of their tenant, for any protocol."""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from mosaic.auth.pass_through import PassThroughSessions, Session, account_of
from mosaic.auth.principal import Principal
from mosaic.config.holder import ConfigHolder
from mosaic.config.schema import Config
from mosaic.core.credentials import Secret, SignedInAccount
from mosaic.vfs.permissions import PermissionView
from mosaic.vfs.storage import StorageRegistry, has_own_account_mounts, own_filesystems
from mosaic.vfs.tenantfs import TenantFileSystem

log = logging.getLogger(__name__)


class SessionService:
    """The signed-in user's view of their tenant, from the live config.

    Views are reused across requests (building the mount table and deciding
    the rules costs more than serving a small GET); a config change drops them
    all, and a view with a broken mount is never kept, so the mount is retried.

    A tenant with mounts reached as the signed-in user (``credentials:
    pass_through``) needs the password the user signed in with: ``open`` takes it
    as a :class:`Secret` (None after a Kerberos sign-in) and hands it to those
    mounts only. Such a view is that user's session
    (:mod:`mosaic.auth.pass_through`), keyed by an HMAC tag of the password.
    """

    MAX_VIEWS = 4096

    def __init__(self, holder: ConfigHolder) -> None:
        self._holder = holder
        self.storage = StorageRegistry(Path(holder.current.server.data_dir))
        self._views: OrderedDict[tuple[Any, ...], tuple[Config, TenantFileSystem]] = \
            OrderedDict()
        self._lock = threading.Lock()
        self.pass_through = PassThroughSessions(
            lambda: self._holder.current.server.auth.pass_through_idle_seconds)
        self._tag_key = secrets.token_bytes(32)  # this process's own: tags mean nothing elsewhere
        holder.on_change(lambda _config: self._forget_all())

    def _forget_all(self) -> None:
        with self._lock:
            self._views.clear()
        self.storage.clear()
        self.pass_through.end_all()

    def open(self, principal: Principal, secret: Secret | None = None) -> TenantFileSystem:
        """The user's view; ``secret``: the password they signed in with, if any."""
        config = self._holder.current
        key = (id(config), principal.tenant, principal.user, principal.home_name,
               principal.groups)
        if has_own_account_mounts(config, principal.tenant):
            account = account_of(principal, secret)
            if isinstance(account, SignedInAccount):
                tag = account.password.tag(self._tag_key)
                return self._open_own(config, principal, account, (*key, tag))
            return self._open_view(config, principal, key, account)
        return self._open_view(config, principal, key)

    def _open_view(self, config: Config, principal: Principal, key: tuple[Any, ...],
                   no_account: str = "") -> TenantFileSystem:
        with self._lock:
            cached = self._views.get(key)
            # Identity check too: a new config may reuse a freed one's id().
            if cached is not None and cached[0] is config:
                self._views.move_to_end(key)
                return cached[1]
        view = self._build(config, principal, None, no_account)
        if all(entry.fs is not None or entry.refused for entry in view.table.entries):
            with self._lock:
                self._views[key] = (config, view)
                while len(self._views) > self.MAX_VIEWS:
                    self._views.popitem(last=False)
        return view

    def _open_own(self, config: Config, principal: Principal, account: SignedInAccount,
                  key: tuple[Any, ...]) -> TenantFileSystem:
        """A view holding the user's own connections: their pass-through session."""
        view = self.pass_through.get(key, config)
        if view is not None:
            return view
        view = self._build(config, principal, account)
        session = Session(config, view, own_filesystems(config, view.table))
        if all(entry.fs is not None for entry in view.table.entries):
            self.pass_through.put(key, session)
        else:  # not kept, so that the broken mount is retried; its connections still end
            self.pass_through.end_later(session)
        return view

    def _build(self, config: Config, principal: Principal, account: SignedInAccount | None,
               no_account: str = "") -> TenantFileSystem:
        tenant = config.tenants.get(principal.tenant)
        if tenant is None:  # removed by a reload while the login was cached
            raise PermissionError(13, "tenant no longer exists")
        table = self.storage.mount_table(config, principal.tenant, principal.home_name,
                                         account, no_account)
        refused = [entry.path for entry in table.entries if entry.refused]
        if refused:  # once per view: views are kept
            log.info("tenant %s: %s may not use %s: %s", principal.tenant, principal.user,
                     ", ".join("/" + path for path in refused), no_account)
        permissions = PermissionView(tenant.permissions, principal.user, principal.groups,
                                     tenant.default_access)
        return TenantFileSystem(table, permissions)
