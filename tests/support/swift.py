"""A single-node OpenStack Swift on 127.0.0.1 for the tests, plus an identity endpoint.

:func:`cluster` starts, once per test process, memcached and Debian's four
Swift servers (proxy, account, container, object) with everything under a
temporary directory (``swift_dir``: /etc/swift is never read), tempauth with
``test:tester`` / ``testing``, and the bulk and SLO middlewares. Its
``max_file_size`` is :data:`MAX_FILE_SIZE` (16 MiB), so a test can prove that a
file larger than the store's single-object limit is stored as a Static Large
Object. Every caller makes a fresh container. The proxy alone can be stopped and
started again (:meth:`SwiftCluster.stop_proxy`): the data and the tokens
(kept in memcached) survive.

:class:`Identity` is a minimal identity service (no Keystone runs here within
the suite's budget: it needs a database, a WSGI host and bootstrap steps): it
answers Keystone v3 ``POST /v3/auth/tokens`` and Rackspace's
``POST /v2.0/tokens`` for one known user, handing out the tempauth account's
storage URL and a real tempauth token in its catalog.

A missing Swift or memcached is a failure, never a skip: scripts/test.sh
installs them.
"""

from __future__ import annotations

import atexit
import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import emulator

USER, KEY = "test:tester", "testing"
MIB = 1024 * 1024
MAX_FILE_SIZE = 16 * MIB  # the store's single-object limit (Swift's own default: 5 GiB)
READY_TIMEOUT_S = 120.0  # four servers starting on a loaded 2-core machine
SERVERS = ("account", "container", "object")
DEBIAN_PACKAGES = "swift swift-proxy swift-object swift-container swift-account memcached"

_lock = threading.Lock()


def _binary(name: str) -> str:
    found = shutil.which(name, path="/usr/bin:/usr/sbin:/bin")
    if found is None:
        raise RuntimeError(f"{name} is not installed: apt-get install {DEBIAN_PACKAGES} "
                           "(scripts/test.sh does)")
    return found


def _common(base: Path, port: int) -> str:
    """Every server's [DEFAULT]: all state below ``base``, one process, loopback."""
    return (f"[DEFAULT]\nswift_dir = {base}\ndevices = {base}/node\nmount_check = false\n"
            f"workers = 0\nbind_ip = 127.0.0.1\nbind_port = {port}\nuser = root\n"
            "log_level = WARNING\nlog_udp_host = 127.0.0.1\n"
            f"log_udp_port = {emulator.free_port()}\n")  # nobody listens: logs are dropped


def _server_conf(base: Path, kind: str, port: int) -> str:
    return (_common(base, port) + f"\n[pipeline:main]\npipeline = {kind}-server\n\n"
            f"[app:{kind}-server]\nuse = egg:swift#{kind}\n\n"
            + ("" if kind != "container" else "[container-sync]\n")
            + ("" if kind != "object" else "[object-updater]\n"))


def _proxy_conf(base: Path, port: int, memcached_port: int) -> str:
    pipeline = ("catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk "
                "tempauth copy slo dlo proxy-logging proxy-server")
    filters = "".join(f"[filter:{name}]\nuse = egg:swift#{name.replace('-', '_')}\n\n"
                      for name in ("catch_errors", "gatekeeper", "healthcheck", "proxy-logging",
                                   "listing_formats", "bulk", "copy", "slo", "dlo"))
    return (_common(base, port)
            + f"\n[pipeline:main]\npipeline = {pipeline}\n\n"
            "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\n"
            f"[filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:"
            f"{memcached_port}\n\n"
            "[filter:tempauth]\nuse = egg:swift#tempauth\nuser_test_tester = testing .admin\n"
            "user_test2_tester2 = testing2 .admin\n\n" + filters)


def _swift_conf() -> str:
    return ("[swift-hash]\nswift_hash_path_suffix = mosaic-tests\n\n"
            "[storage-policy:0]\nname = Policy-0\ndefault = yes\n\n"
            f"[swift-constraints]\nmax_file_size = {MAX_FILE_SIZE}\n")


#: runs one server with ``swift.conf`` read from its ``swift_dir``: Swift reads its
#: constraints (max_file_size) and hash suffix from /etc/swift/swift.conf at import
_LAUNCHER = """
import sys
import swift.common.utils as utils
utils.SWIFT_CONF_FILE = sys.argv[1]
from swift.common.wsgi import run_wsgi
sys.exit(run_wsgi(sys.argv[2], sys.argv[3]))
"""


#: builds the three rings in one process (swift-ring-builder, once per command and
#: ring, takes 9 interpreter starts: 5 s idle, far more on a loaded machine)
_RING_BUILDER = """
import sys
from swift.common.ring import RingBuilder
base = sys.argv[1]
for kind, port in zip(("account", "container", "object"), sys.argv[2:]):
    builder = RingBuilder(8, 1, 1)
    builder.add_dev({"region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
                     "device": "sdb1", "weight": 1})
    builder.rebalance()
    builder.get_ring().save(f"{base}/{kind}.ring.gz")
"""


def _build_rings(base: Path, ports: dict[str, int]) -> None:
    _binary("swift-ring-builder")  # the package is installed
    done = subprocess.run([_binary("python3"), "-c", _RING_BUILDER, str(base),
                           *(str(ports[kind]) for kind in SERVERS)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the Swift rings failed: {done.stderr[-2000:]}")


@dataclass
class SwiftCluster:
    """memcached + the four Swift servers of one test process."""

    base: Path
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    @property
    def auth_url(self) -> str:
        return self.url + "/auth/v1.0"

    def setup(self) -> None:
        for name in ("proxy", "memcached", *SERVERS):
            self.ports[name] = emulator.free_port()
        (self.base / "node" / "sdb1").mkdir(parents=True)
        (self.base / "swift.conf").write_text(_swift_conf())
        for kind in SERVERS:
            (self.base / f"{kind}-server.conf").write_text(
                _server_conf(self.base, kind, self.ports[kind]))
        (self.base / "proxy-server.conf").write_text(
            _proxy_conf(self.base, self.ports["proxy"], self.ports["memcached"]))
        _build_rings(self.base, self.ports)

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=log,
                                                stdin=subprocess.DEVNULL)

    def start(self) -> None:
        self._spawn("memcached", [_binary("memcached"), "-l", "127.0.0.1", "-p",
                                  str(self.ports["memcached"]), "-U", "0", "-u", "root"])
        for kind in SERVERS:
            self._spawn_server(kind)
        self.start_proxy()

    def _spawn_server(self, kind: str) -> None:
        _binary(f"swift-{kind}-server")  # the package is installed
        self._spawn(kind, [_binary("python3"), "-c", _LAUNCHER, str(self.base / "swift.conf"),
                           str(self.base / f"{kind}-server.conf"), f"{kind}-server"])

    def start_proxy(self) -> None:
        self._spawn_server("proxy")
        self._wait_ready()

    def stop_proxy(self) -> None:
        """The store goes down: connections to the proxy are refused."""
        emulator.stop(self.processes.pop("proxy"))

    def _wait_ready(self) -> None:
        emulator.wait_until_ready("swift", self.processes,
                                  lambda: self._listening() and self._authenticates(),
                                  READY_TIMEOUT_S, self._log_tail)

    def _log_tail(self, name: str) -> str:
        return (self.base / f"{name}.log").read_text(errors="replace")[-2000:]

    def _listening(self) -> bool:
        """Every server accepts connections (the proxy answers 503 until they do)."""
        for name in self.processes:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.ports[name])) != 0:
                    return False
        return True

    def _authenticates(self) -> bool:
        try:
            return requests.get(self.auth_url, headers={"X-Auth-User": USER, "X-Auth-Key": KEY},
                                timeout=2).ok
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        for process in self.processes.values():
            emulator.stop(process)
        self.processes.clear()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- test helpers -----------------------------------------------------------------

    def token(self, user: str = USER, key: str = KEY) -> tuple[str, str]:
        """(storage URL, token) from tempauth."""
        answer = requests.get(self.auth_url, headers={"X-Auth-User": user, "X-Auth-Key": key},
                              timeout=10)
        answer.raise_for_status()
        return answer.headers["X-Storage-Url"], answer.headers["X-Auth-Token"]

    def request(self, method: str, path: str = "", **kwargs: Any) -> requests.Response:
        """A request on the test account, ``path`` below its storage URL."""
        storage, token = self.token()
        headers = {"X-Auth-Token": token, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 60)
        return requests.request(method, f"{storage}/{path}".rstrip("/"), headers=headers,
                                **kwargs)

    def names(self, container: str, prefix: str = "") -> list[str]:
        """Every object name in ``container`` (an absent one has none)."""
        answer = self.request("GET", container, params={"format": "json", "prefix": prefix})
        if answer.status_code == 404:
            return []
        answer.raise_for_status()
        return [item["name"] for item in answer.json()]

    def fresh_container(self) -> str:
        name = f"mosaic-{secrets.token_hex(6)}"
        self.request("PUT", name).raise_for_status()
        return name


def _started_cluster() -> SwiftCluster:
    made = SwiftCluster(Path(tempfile.mkdtemp(prefix="mosaic-swift-")))
    try:
        made.setup()
        made.start()
    except BaseException:
        made.stop()
        raise
    return made


#: this test process's Swift, started on first use (about 3 s, plus the rings)
cluster = emulator.OnePerProcess(_started_cluster, SwiftCluster.stop)


def fresh_container() -> str:
    return cluster().fresh_container()


def provider(container: str, prefix: str = "", **extra: Any) -> dict[str, Any]:
    """The provider spec of a ``swift`` mount (auth v1) on ``container``."""
    return {"type": "swift", "auth_url": cluster().auth_url, "user": USER, "key": KEY,
            "container": container, "prefix": prefix, **extra}


# -- identity ------------------------------------------------------------------------------


@dataclass
class Identity:
    """Keystone v3 and Rackspace identity for one user, backed by tempauth."""

    swift: SwiftCluster
    username: str = "demo"
    password: str = "demo-password"  # Keystone's
    api_key: str = "demo-api-key"  # Rackspace's
    project: str = "demo-project"
    domain: str = "Default"
    region: str = "RegionOne"
    requests: list[str] = field(default_factory=list)  # paths posted, in order
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def endpoints(self, storage_url: str) -> list[dict[str, str]]:
        """The object-store endpoints: this region (all interfaces) and a decoy."""
        found = [{"interface": kind, "region": self.region, "region_id": self.region,
                  "url": storage_url} for kind in ("public", "internal", "admin")]
        decoy = {"interface": "public", "region": "Elsewhere", "region_id": "Elsewhere",
                 "url": "http://127.0.0.1:9/v1/AUTH_x"}
        return [*found, decoy]

    def keystone_v3(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        auth = body.get("auth", {})
        user = auth.get("identity", {}).get("password", {}).get("user", {})
        project = auth.get("scope", {}).get("project", {})
        if (user.get("name"), user.get("password"), user.get("domain", {}).get("name")) != (
                self.username, self.password, self.domain) or project.get("name") != self.project:
            return 401, {}, {"error": {"code": 401, "title": "Unauthorized"}}
        storage, token = self.swift.token()
        catalog = [{"type": "identity", "name": "keystone", "endpoints": []},
                   {"type": "object-store", "name": "swift",
                    "endpoints": self.endpoints(storage)}]
        return 201, {"X-Subject-Token": token}, {"token": {
            "catalog": catalog, "expires_at": "2099-01-01T00:00:00.000000Z"}}

    def rackspace(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        creds = body.get("auth", {}).get("RAX-KSKEY:apiKeyCredentials", {})
        if (creds.get("username"), creds.get("apiKey")) != (self.username, self.api_key):
            return 401, {}, {"unauthorized": {"code": 401, "message": "Username or api key "
                                              "is invalid."}}
        storage, token = self.swift.token()
        endpoints = [{"region": e["region"], "publicURL": e["url"], "internalURL": e["url"],
                      "tenantId": "AUTH_test"} for e in self.endpoints(storage)
                     if e["interface"] == "public"]
        catalog = [{"name": "cloudServersOpenStack", "type": "compute", "endpoints": []},
                   {"name": "cloudFiles", "type": "object-store", "endpoints": endpoints}]
        return 200, {}, {"access": {"token": {"id": token, "expires": "2099-01-01T00:00:00Z"},
                                    "serviceCatalog": catalog}}


def _handler(identity: Identity) -> type[BaseHTTPRequestHandler]:
    routes = {"/v3/auth/tokens": identity.keystone_v3, "/v2.0/tokens": identity.rackspace}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            identity.requests.append(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            route = routes.get(self.path.rstrip("/"))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                body = None
            if route is None or not isinstance(body, dict):
                self._reply(404 if route is None else 400, {}, {"error": "no"})
                return
            self._reply(*route(body))

        def _reply(self, status: int, headers: dict[str, str], body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json",
                                "Content-Length": str(len(data))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


_identity: Identity | None = None


def identity_service() -> Identity:
    """This test process's identity endpoint, started on first use (for targets)."""
    global _identity
    swift = cluster()
    with _lock:
        if _identity is None:
            _identity = Identity(swift)
            _identity.start()
            atexit.register(_identity.stop)
        return _identity


def keystone_provider(container: str, prefix: str = "", **extra: Any) -> dict[str, Any]:
    """The provider spec of a ``swift`` mount on ``container`` through Keystone v3."""
    known = identity_service()
    return {"type": "swift", "auth_url": known.url + "/v3", "username": known.username,
            "password": known.password, "project_name": known.project,
            "region": known.region, "container": container, "prefix": prefix, **extra}


@pytest.fixture(scope="session")
def swift_cluster() -> SwiftCluster:
    return cluster()


@pytest.fixture
def identity(swift_cluster: SwiftCluster) -> Iterator[Identity]:
    made = Identity(swift_cluster)
    made.start()
    try:
        yield made
    finally:
        made.stop()
