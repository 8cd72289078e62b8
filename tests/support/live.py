"""A real cheroot server running Mosaic on an ephemeral loopback port."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import requests

from mosaic.config.holder import ConfigHolder
from mosaic.config.schema import Config
from mosaic.server import make_server
from tests.support import tenants


@dataclass
class Live:
    url: str
    holder: ConfigHolder
    port: int
    base: Path | None = None  # the folder the tenants' storage lives in

    def session(self, login: str, password: str) -> requests.Session:
        session = requests.Session()
        session.auth = (login, password)
        return session


@contextmanager
def live_server(config: Config) -> Iterator[Live]:
    holder = ConfigHolder(None, config)
    server = make_server(holder)
    server.prepare()
    port = server.bind_addr[1]
    thread = threading.Thread(target=server.serve, name="mosaic-test-server", daemon=True)
    thread.start()
    try:
        yield Live(f"http://127.0.0.1:{port}", holder, port)
    finally:
        server.stop()
        thread.join(timeout=10)


@contextmanager
def two_tenant_server(base: Path) -> Iterator[Live]:
    """The shared acme/globex setup (tests.support.tenants) served from ``base``."""
    with live_server(tenants.build(tenants.two_tenants(base))) as live:
        live.base = base
        yield live


#: the href of a multistatus member, whatever the DAV: prefix
HREF = re.compile(r"<(?:\w+:)?href>([^<]+)</(?:\w+:)?href>")


def dav(live: Live, login: tuple[str, str], method: str, path: str,
        **kwargs: Any) -> requests.Response:
    """One WebDAV request as ``login`` (a PROPFIND is Depth 1 unless told)."""
    headers = kwargs.pop("headers", {})
    if method == "PROPFIND":
        headers.setdefault("Depth", "1")
    return requests.request(method, live.url + path, auth=login, headers=headers, timeout=30,
                            **kwargs)


def listed(live: Live, login: tuple[str, str], folder: str) -> set[str]:
    """The member names of a PROPFIND Depth 1 of ``folder`` (ending in "/")."""
    reply = dav(live, login, "PROPFIND", folder)
    assert reply.status_code == 207, reply.text
    hrefs = {unquote(h) for h in HREF.findall(reply.text)}
    return {h[len(folder):].rstrip("/") for h in hrefs if h != folder}


def unique(prefix: str) -> str:
    """A name no other test run uses."""
    return f"{prefix}-{secrets.token_hex(4)}"
