"""Fair share: one tenant or one address cannot starve everybody else.

A real server with the default thread count; 200 hostile slow connections
(PUT bodies trickled a byte a second, GETs whose reader never reads, heads
trickled a byte a second) while globex's client at 127.0.0.3 keeps working.
Every globex request must be answered in well under a second, and the
hostile connections beyond their share get 503 + Retry-After at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mosaic.config.schema import FairShare, Server
from mosaic.front.shares import RefusalLog, Shares
from tests.hostile.support import (
    Reply,
    ServerProcess,
    basic,
    raw_request,
    two_tenant_process,
)
from tests.support import tenants
from tests.support.live import Live, live_server

HOSTILE = 200
THREADS = Server.model_fields["threads"].default
BIG_FILE = 32 * 2**20  # far more than the socket buffers of a reader that never reads
GLOBEX = "127.0.0.3"
#: globex's requests are measured for this long while the attack is on.
MEASURE_SECONDS = 3.0
#: The most threads one address or tenant may hold: its share, then more while a
#: quarter of them stay free for the others (the defaults).
BUSIEST = THREADS - THREADS // 4
#: What 32 busy threads may add to a worker's memory for good (measured: 13-24 MiB).
RSS_GROWTH_MIB = 48
RSS_AT_REST: list[float] = []
#: A request of globex that takes longer than this counts as starved.
CLIENT_TIMEOUT = 4.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("fair-share")
    process = two_tenant_process(base, threads=THREADS, workers=1)
    (base / "acme-root").mkdir(parents=True, exist_ok=True)
    (base / "acme-root" / "big.bin").write_bytes(b"\0" * BIG_FILE)
    with process:
        globex_latencies(process, seconds=0.2)  # warm: logins cached, views built
        RSS_AT_REST.append(process.rss_mib())
        yield process
    assert process.tracebacks() == 0, process.log()[-3000:]


class Attack:
    """Slow hostile connections, kept trickling a byte a second until closed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: list[socket.socket] = []
        #: Refused connections the server kept open (it must close every one).
        self.left_open = 0
        self._stop = threading.Event()
        self._trickler = threading.Thread(target=self._trickle, daemon=True)

    def open(self, source: str, head: bytes) -> None:
        sock = socket.socket()
        # A reader that never reads: the server's writes stall at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", self.port))
        sock.sendall(head)
        self.sockets.append(sock)

    def start(self) -> None:
        self._trickler.start()

    def _trickle(self) -> None:
        while not self._stop.wait(1.0):
            for sock in list(self.sockets):
                with contextlib.suppress(OSError):
                    sock.send(b"x", socket.MSG_DONTWAIT)

    def refusals(self, settle: float = 0.5, at_most: float = 5.0) -> list[Reply]:
        """The answers sent on hostile connections (the refused ones), once no more come."""
        deadline = time.monotonic() + at_most
        readable: list[socket.socket] = []
        while True:  # a busy machine may take a while to refuse them all
            time.sleep(settle)
            before, (readable, _, _) = len(readable), select.select(self.sockets, [], [], 0)
            if len(readable) == before or time.monotonic() > deadline:
                break
        replies = []
        for sock in readable:
            with contextlib.suppress(OSError):
                # Admitted GETs are readable too: their 200 and a file's worth of body.
                if sock.recv(12, socket.MSG_PEEK) == b"HTTP/1.1 200":
                    continue
            reply = read_answer(sock)
            replies.append(reply)
            self.left_open += not reply.closed
        return replies

    def close(self) -> None:
        self._stop.set()
        if self._trickler.is_alive():
            self._trickler.join()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            sock.close()


def read_answer(sock: socket.socket) -> Reply:
    """One answer, and whether the server closed the connection after it."""
    head = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    if b"\r\n\r\n" not in head:
        return Reply(0, {}, head, True)
    lines = head.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines[1:])}
    body = head.partition(b"\r\n\r\n")[2]
    closed = False
    sock.settimeout(2)
    try:
        while chunk := sock.recv(4096):
            body += chunk
        closed = True
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        pass
    return Reply(int(lines[0].split()[1]), headers, body, closed)


@contextlib.contextmanager
def attack(server: ServerProcess) -> Iterator[Attack]:
    hostile = Attack(server.port)
    try:
        yield hostile
    finally:
        hostile.close()
    # The server is itself again once the attack is over.
    assert max(globex_latencies(server, seconds=0.5)) < 1.0
    # Every thread has served now (glibc keeps an arena per thread): bounded, not leaking.
    print(f"RSS {RSS_AT_REST[-1]:.1f} MiB at rest, {server.rss_mib():.1f} MiB after")
    assert server.rss_mib() < RSS_AT_REST[-1] + RSS_GROWTH_MIB


def slow_put(login: str, password: str, name: str) -> bytes:
    return (f"PUT /{name} HTTP/1.1\r\nHost: acme.localhost\r\n{basic(login, password)}"
            f"Content-Length: 100000\r\n\r\n").encode()


def slow_get(login: str, password: str) -> bytes:
    return (f"GET /big.bin HTTP/1.1\r\nHost: acme.localhost\r\n"
            f"{basic(login, password)}\r\n").encode()


def globex_latencies(server: ServerProcess, seconds: float = MEASURE_SECONDS) -> list[float]:
    """Globex's client at work: one PROPFIND after the other, each on its own connection."""
    request = (f"PROPFIND / HTTP/1.1\r\nHost: globex.localhost\r\n"
               f"{basic('dave@globex', 'dave-secret')}Depth: 0\r\n"
               "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        reply = raw_request(server.port, request, timeout=CLIENT_TIMEOUT, source=GLOBEX)
        # 0: no answer within CLIENT_TIMEOUT (starved), counted with its full wait.
        assert reply.status in (207, 0), reply
        latencies.append(time.monotonic() - started)
    return latencies


def report(what: str, latencies: list[float], refusals: list[Reply]) -> None:
    print(f"\n{what}: globex {len(latencies)} requests in {MEASURE_SECONDS:g}s, "
          f"max {max(latencies):.3f}s, mean {sum(latencies) / len(latencies):.3f}s; "
          f"{len(refusals)} hostile connections refused")


def assert_refused_with_retry_after(refusals: list[Reply], at_least: int) -> None:
    assert len(refusals) >= at_least
    for reply in refusals:
        assert reply.status == 503, reply
        assert int(reply.headers["retry-after"]) > 0
        assert reply.body.startswith(b"503 Service Unavailable")


def assert_globex_served(latencies: list[float]) -> None:
    assert len(latencies) >= 10
    assert max(latencies) < 1.0


def test_one_tenant_from_one_address_cannot_starve_another(server: ServerProcess) -> None:
    with attack(server) as hostile:
        for i in range(HOSTILE):
            head = (slow_put("alice@acme", "alice-secret", f"slow-{i}.bin") if i % 2
                    else slow_get("alice@acme", "alice-secret"))
            hostile.open("127.0.0.2", head)
        refusals = hostile.refusals()
        hostile.start()
        latencies = globex_latencies(server)
        report("acme from one address", latencies, refusals)
    assert server.log().count("address 127.0.0.2 over its share") == 1  # one line, not 176
    assert_globex_served(latencies)
    assert_refused_with_retry_after(refusals, at_least=HOSTILE - BUSIEST)
    # Beyond its share (8) while threads were free: a share is no cap on an idle server.
    assert len(refusals) < HOSTILE - THREADS // 4
    assert hostile.left_open == 0  # nothing more is read from a refused connection


def test_one_tenant_from_many_addresses_cannot_starve_another(server: ServerProcess) -> None:
    with attack(server) as hostile:
        for i in range(HOSTILE):
            head = (slow_put("bob@acme", "bob-secret", f"many-{i}.bin") if i % 2
                    else slow_get("bob@acme", "bob-secret"))
            hostile.open(f"127.0.1.{1 + i % 100}", head)  # two connections per address
        refusals = hostile.refusals()
        hostile.start()
        latencies = globex_latencies(server)
        report("acme from 100 addresses", latencies, refusals)
    assert server.log().count("tenant acme over its share") == 1
    assert_globex_served(latencies)
    assert_refused_with_retry_after(refusals, at_least=HOSTILE - BUSIEST)
    assert hostile.left_open == 0  # nothing more is read from a refused connection


def test_one_address_without_a_login_cannot_starve_anyone(server: ServerProcess) -> None:
    with attack(server) as hostile:
        for i in range(HOSTILE):
            head = (b"PROPFIND / HTTP/1.1\r\nHost: glob" if i % 2
                    else slow_put("nobody@acme", "guess", f"anon-{i}.bin")[:-30])
            hostile.open("127.0.0.4", head)
        refusals = hostile.refusals()
        hostile.start()
        latencies = globex_latencies(server)
        report("one address, no login", latencies, refusals)
    assert_globex_served(latencies)
    assert_refused_with_retry_after(refusals, at_least=HOSTILE - BUSIEST)
    assert hostile.left_open == 0  # nothing more is read from a refused connection


def test_the_refused_retry_and_get_in(server: ServerProcess) -> None:
    """A refusal is no ban: once the address's own requests end, it is served again."""
    request = (f"PROPFIND / HTTP/1.1\r\nHost: acme.localhost\r\n"
               f"{basic('alice@acme', 'alice-secret')}Depth: 0\r\n"
               "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()
    with attack(server) as hostile:
        for _ in range(HOSTILE):
            hostile.open("127.0.0.5", slow_get("alice@acme", "alice-secret"))
        hostile.refusals()
        assert raw_request(server.port, request, source="127.0.0.5").status == 503
    deadline = time.monotonic() + 2
    while (reply := raw_request(server.port, request, source="127.0.0.5")).status != 207:
        assert time.monotonic() < deadline, reply
        time.sleep(0.1)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Live]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    data = tenants.two_tenants(tmp_path)
    data["server"].update(threads=THREADS, tls={"cert": str(cert), "key": str(key)})
    with live_server(tenants.build(data)) as live:
        yield live


def test_silent_tls_clients_cannot_stop_the_server_accepting(tls_server: Live) -> None:
    """TCP connections that never say hello: before, the accept loop waited on each."""
    silent = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", tls_server.port), timeout=5,
                                        source_address=("127.0.0.2", 0))
        silent.append(sock)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    latencies = []
    try:
        for _ in range(20):
            started = time.monotonic()
            with contextlib.suppress(TimeoutError), socket.create_connection(
                    ("127.0.0.1", tls_server.port), timeout=CLIENT_TIMEOUT,
                    source_address=(GLOBEX, 0)) as raw, context.wrap_socket(raw) as sock:
                sock.sendall(b"OPTIONS / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert sock.recv(12) == b"HTTP/1.1 200"
            latencies.append(time.monotonic() - started)
        # Beyond the address's share they were closed at once (no answer without TLS).
        closed = 0
        for sock in silent:
            sock.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                closed += sock.recv(1) == b""
    finally:
        for sock in silent:
            sock.close()
    print(f"\n50 silent TLS connections: HTTPS max {max(latencies):.3f}s; {closed} closed")
    assert max(latencies) < 1.0
    assert closed >= 50 - BUSIEST


def test_shares_count_each_key_under_its_limit_and_forget_idle_keys() -> None:
    shares = Shares("address")
    assert all(shares.enter("192.0.2.1", 2) for _ in range(2))
    assert not shares.enter("192.0.2.1", 2)
    assert shares.enter("192.0.2.2", 2)  # another key has its own share
    assert shares.enter("192.0.2.1", 2, room_to_spare=True)  # beyond it: threads are free
    assert shares.total == 4
    shares.leave("192.0.2.1")
    assert all(shares.enter("192.0.2.3", 0) for _ in range(1000))  # 0: no limit
    for _ in range(1000):
        shares.leave("192.0.2.3")
    shares.leave("192.0.2.1")
    assert shares.enter("192.0.2.1", 2)
    for key in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
        shares.leave(key)
    assert shares._in_flight == {}  # memory follows the live requests only


def test_refusals_are_logged_once_per_key_and_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    log = RefusalLog("tenant", interval=60, clock=lambda: clock[0])
    for _ in range(200):
        log.note("acme", 16)
    log.note("globex", 16)
    clock[0] += 61
    log.note("acme", 16)
    assert [r.getMessage().split(" over")[0] for r in caplog.records] == \
        ["tenant acme", "tenant globex", "tenant acme"]


def test_default_shares_follow_the_thread_count() -> None:
    assert FairShare().address_limit(32) == 8 and FairShare().tenant_limit(32) == 16
    assert FairShare().address_limit(2) == 1 and FairShare().tenant_limit(1) == 1
    assert FairShare(per_address=0, per_tenant=5).address_limit(32) == 0
    assert FairShare(per_tenant=5).tenant_limit(32) == 5
    assert FairShare().room_to_spare(32, 24) and not FairShare().room_to_spare(32, 25)
    assert FairShare(spare_threads=0).room_to_spare(32, 32)


def test_the_shares_follow_a_config_reload(tmp_path: Path) -> None:
    process = two_tenant_process(tmp_path, threads=THREADS, workers=1)
    (tmp_path / "acme-root").mkdir(parents=True, exist_ok=True)
    (tmp_path / "acme-root" / "big.bin").write_bytes(b"\0" * BIG_FILE)
    with process:
        hostile = Attack(process.port)
        try:
            for _ in range(3):
                hostile.open("127.0.0.6", slow_get("alice@acme", "alice-secret"))
            assert hostile.refusals() == []  # within the default share
            process.config["server"]["fair_share"] = {"per_address": 3,
                                                      "spare_threads": THREADS}
            process.config_path.write_text(yaml.safe_dump(process.config))
            os.kill(process.process.pid, signal.SIGHUP)  # type: ignore[union-attr]
            deadline = time.monotonic() + 10
            while "config reloaded" not in process.log():
                assert time.monotonic() < deadline, process.log()
                time.sleep(0.1)
            hostile.open("127.0.0.6", slow_get("alice@acme", "alice-secret"))
            [reply] = hostile.refusals()
            assert reply.status == 503
        finally:
            hostile.close()
    assert process.tracebacks() == 0
