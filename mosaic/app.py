"""Assembles the WSGI application: auth, tenant routing, VFS and wsgidav."""

from __future__ import annotations

import logging
from typing import Any

from wsgidav.error_printer import ErrorPrinter
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from mosaic import logs
from mosaic.accesslog import AccessLog
from mosaic.auth.authenticator import Authenticator
from mosaic.auth.sessions import SessionService
from mosaic.config.holder import ConfigHolder
from mosaic.dav.authentication import PRINCIPAL_KEY, SECRET_KEY, HttpAuthentication
from mosaic.dav.locks import SqlLockStorage, install_lock_manager
from mosaic.dav.properties import SqlPropertyManager
from mosaic.dav.provider import MosaicProvider
from mosaic.dav.store import database_url, make_engine
from mosaic.front import pages
from mosaic.front.tenant_share import TenantShare

log = logging.getLogger(__name__)


def wsgidav_config(holder: ConfigHolder, provider: MosaicProvider, engine: Any,
                   authenticator: Authenticator) -> dict[str, Any]:
    server = holder.current.server
    return {
        "provider_mapping": {"/": provider},
        "mount_path": None,
        "block_size": server.block_size,
        "lock_storage": SqlLockStorage(engine),
        "property_manager": SqlPropertyManager(engine),
        "mosaic": {"authenticator": authenticator, "get_config": lambda: holder.current},
        "middleware_stack": [
            *([AccessLog] if server.access_log else []),  # first: it sees every answer
            ErrorPrinter,
            HttpAuthentication,  # Basic -> Principal; no Digest: AD cannot give its hashes
            TenantShare,  # a tenant's share of the threads, once its login is known
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
    sessions = SessionService(holder)
    provider = MosaicProvider(lambda environ: sessions.open(environ[PRINCIPAL_KEY],
                                                            environ.get(SECRET_KEY)))
    holder.on_change(logs.on_reload)  # new secrets to mask, new levels
    authenticator = Authenticator(lambda: holder.current)
    app = WsgiDAVApp(wsgidav_config(holder, provider, engine, authenticator))
    # wsgidav's LockManager checks and grants under an in-process lock only;
    # ours does both in one serialised transaction, so worker processes agree.
    install_lock_manager(app, app.lock_manager.storage)
    return app
