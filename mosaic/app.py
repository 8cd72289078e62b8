"""Assembles the WSGI application: auth, tenant routing, VFS and wsgidav."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from wsgidav.error_printer import ErrorPrinter
from wsgidav.http_authenticator import HTTPAuthenticator
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from mosaic import logs
from mosaic.accesslog import AccessLog
from mosaic.auth.domain_controller import MosaicDomainController
from mosaic.auth.middleware import BasicHeaderGuard, CanonicalUserMiddleware
from mosaic.config.holder import ConfigHolder
from mosaic.config.schema import Config
from mosaic.dav.locks import SqlLockStorage, install_lock_manager
from mosaic.dav.properties import SqlPropertyManager
from mosaic.dav.provider import MosaicProvider
from mosaic.dav.store import database_url, make_engine
from mosaic.front import pages
from mosaic.front.tenant_share import TenantShare
from mosaic.vfs.permissions import PermissionView
from mosaic.vfs.storage import StorageRegistry
from mosaic.vfs.tenantfs import TenantFileSystem

log = logging.getLogger(__name__)


class SessionOpener:
    """The requesting user's view of their tenant, from the live config.

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

    def __call__(self, environ: dict[str, Any]) -> TenantFileSystem:
        config = self._holder.current
        principal = environ["mosaic.principal"]
        key = (id(config), principal.tenant, principal.user, principal.groups)
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

    def _build(self, config: Config, principal: Any) -> TenantFileSystem:
        tenant = config.tenants.get(principal.tenant)
        if tenant is None:  # removed by a reload while the login was cached
            raise PermissionError(13, "tenant no longer exists")
        table = self.storage.mount_table(config, principal.tenant, principal.user)
        permissions = PermissionView(tenant.permissions, principal.user, principal.groups,
                                     tenant.default_access)
        return TenantFileSystem(table, permissions)


def wsgidav_config(holder: ConfigHolder, provider: MosaicProvider,
                   engine: Any) -> dict[str, Any]:
    server = holder.current.server
    return {
        "provider_mapping": {"/": provider},
        "mount_path": None,
        "block_size": server.block_size,
        "lock_storage": SqlLockStorage(engine),
        "property_manager": SqlPropertyManager(engine),
        "http_authenticator": {
            "domain_controller": MosaicDomainController,
            "accept_basic": True,
            "accept_digest": False,  # AD cannot give Digest hashes
            "default_to_digest": False,
            "trusted_auth_header": None,
        },
        "mosaic": {"get_config": lambda: holder.current},
        "middleware_stack": [
            *([AccessLog] if server.access_log else []),  # first: it sees every answer
            ErrorPrinter,
            BasicHeaderGuard,  # malformed Basic headers: 401, not wsgidav's 500
            HTTPAuthenticator,
            TenantShare,  # a tenant's share of the threads, once its login is known
            CanonicalUserMiddleware,
            RequestResolver,
        ],
        "dir_browser": {"enable": False},
        "hotfixes": {
            "emulate_win32_lastmod": True,  # Explorer PROPPATCHes Win32LastModifiedTime
            "re_encode_path_info": True,
            "unquote_path_info": False,
            "treat_root_options_as_asterisk": False,
        },
        "add_header_MS_Author_Via": True,
        "suppress_version_info": True,
        "verbose": 1,
        "logging": {"enable": False},
    }


def build_app(holder: ConfigHolder) -> WsgiDAVApp:
    pages.install()  # status pages name Mosaic, not WsgiDAV/<version>
    # No schema creation here: the starting process made it before any worker
    # existed (mosaic.server.claim); the lock and property stores check again.
    engine = make_engine(database_url(holder.current.server))
    provider = MosaicProvider(SessionOpener(holder))
    holder.on_change(logs.on_reload)  # new secrets to mask, new levels
    app = WsgiDAVApp(wsgidav_config(holder, provider, engine))
    # wsgidav's LockManager checks and grants under an in-process lock only;
    # ours does both in one serialised transaction, so worker processes agree.
    install_lock_manager(app, app.lock_manager.storage)
    return app
