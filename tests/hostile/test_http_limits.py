"""Limits and timeouts on request heads and bodies, against a real two-worker server
(issue 13: 7 and the timeouts of 16).

The server runs with small limits from ``server.limits`` so that each case is
cheap; what is checked is that a request beyond a limit is refused at once,
without its rest being read or buffered (worker memory stays at its
baseline), and that a slow client is cut off on time, its upload discarded.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.hostile.support import (
    PREVIOUS,
    Reply,
    ServerProcess,
    keep_file,
    raw_request,
    read_reply,
    request,
    two_tenant_process,
    wait_until_every_worker_listens,
)

MIB = 2**20
LIMITS = {
    "max_request_line_bytes": 4096,
    "max_head_bytes": 32768,
    "max_header_fields": 50,
    "max_xml_body_bytes": MIB,
    "head_timeout_seconds": 2,
    "body_idle_timeout_seconds": 2,
    "body_min_bytes_per_second": 1000,
    "body_rate_grace_seconds": 2,
}
#: Worker growth tolerated across a refused request (allocator noise, caches).
RSS_SLACK_MIB = 12
#: Every client here is 127.0.0.1: this file tests the limits and timeouts alone,
#: the shares of the threads are tested in test_fair_share.py.
NO_SHARES = {"per_address": 0, "per_tenant": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("limits")
    process = two_tenant_process(base, workers=2, threads=4, limits=LIMITS,
                                 fair_share=NO_SHARES)
    (base / "acme-root").mkdir(parents=True, exist_ok=True)
    with process:
        wait_until_every_worker_listens(process)
        for _ in range(8):  # warm both workers up before any baseline is taken
            raw_request(process.port, request(b"PROPFIND / HTTP/1.1\r\nDepth: 1"))
        yield process


@pytest.fixture
def keep(server: ServerProcess) -> Path:
    return keep_file(server)


def assert_refused(server: ServerProcess, reply: Reply, status: int, offset: int) -> None:
    assert reply.status == status, reply
    assert reply.closed
    assert server.tracebacks() == 0, server.log()
    lines = server.log()[offset:].splitlines()
    # One line, the refusal (the fixture's broken mount warns when a view is built).
    lines = [line for line in lines if "mount /broken" not in line]
    assert len(lines) == 1 and f"refused {status} " in lines[0], lines
    answer = raw_request(server.port, request(b"OPTIONS / HTTP/1.1\r\nConnection: close"))
    assert answer.status == 200


def upload_leftovers(server: ServerProcess) -> list[str]:
    return [p.name for p in (server.base / "acme-root").iterdir() if "upload" in p.name]


# --- item 7: heads ----------------------------------------------------------------------

HEADS = {
    "51 fields": b"".join(b"X-F%d: v\r\n" % i for i in range(51)),
    "10,000 fields": b"".join(b"X-F%d: v\r\n" % i for i in range(10_000)),
    "100 KB field": b"X-Big: " + b"a" * 100_000 + b"\r\n",
    "1 MB field": b"X-Big: " + b"a" * 1_000_000 + b"\r\n",
}


@pytest.mark.parametrize("fields", HEADS.values(), ids=HEADS.keys())
def test_oversized_head_is_431_before_authentication(server, fields):
    offset = len(server.log())
    reply = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert_refused(server, reply, 431, offset)


def test_request_line_over_the_limit_is_414(server):
    offset = len(server.log())
    reply = raw_request(server.port, request(b"GET /" + b"a" * 5000 + b" HTTP/1.1"))
    assert_refused(server, reply, 414, offset)


def test_whitespace_inside_a_field_costs_linear_time(server):
    """A valid field with 30 KB of inner whitespace: a backtracking parser spent
    seconds of CPU on it, per line, unauthenticated."""
    started = time.monotonic()
    reply = raw_request(server.port, b"OPTIONS / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        b"X-Padded: a" + b" " * 30_000 + b"b\r\n\r\n")
    assert reply.status == 200
    assert time.monotonic() - started < 1


def test_huge_unauthenticated_header_leaves_worker_memory_at_baseline(server):
    baseline = server.rss_mib()
    offset = len(server.log())
    started = time.monotonic()
    reply = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
                        + b"a" * (64 * MIB) + b"\r\n\r\n", timeout=20)
    assert time.monotonic() - started < 5
    assert_refused(server, reply, 431, offset)
    assert server.rss_mib() - baseline < RSS_SLACK_MIB


# --- item 7: bodies parsed in memory ----------------------------------------------------

PROPFIND = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/>'
            b"</D:prop></D:propfind>")


@pytest.mark.parametrize("method", [b"PROPFIND", b"PROPPATCH", b"LOCK", b"MOVE", b"MKCOL"])
def test_announced_xml_body_over_the_limit_is_413_unread(server, keep, method):
    baseline = server.rss_mib()
    offset = len(server.log())
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        # Announce 50 MB and send only the head: the answer must not wait for the body.
        sock.sendall(request(method + b" /keep.txt HTTP/1.1\r\nContent-Length: 50000000\r\n"
                             b"Destination: /moved.txt"))
        sock.settimeout(10)
        reply = read_reply(sock)
    assert time.monotonic() - started < 2
    assert_refused(server, reply, 413, offset)
    assert keep.read_bytes() == PREVIOUS and not (server.base / "acme-root" / "moved.txt").exists()
    assert server.rss_mib() - baseline < RSS_SLACK_MIB


def test_chunked_xml_body_is_cut_off_once_over_the_limit(server, keep):
    within = b"%x\r\n%s\r\n0\r\n\r\n" % (len(PROPFIND), PROPFIND)
    reply = raw_request(server.port, request(b"PROPFIND /keep.txt HTTP/1.1\r\nDepth: 0\r\n"
                                             b"Transfer-Encoding: chunked", within))
    assert reply.status == 207, reply
    baseline = server.rss_mib()
    offset = len(server.log())
    chunk = b"<!--" + b"x" * (64 * 1024 - 7) + b"-->"
    endless = (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * (32 * MIB // len(chunk))
    reply = raw_request(server.port, request(b"PROPFIND /keep.txt HTTP/1.1\r\nDepth: 0\r\n"
                                             b"Transfer-Encoding: chunked", endless), timeout=20)
    assert_refused(server, reply, 413, offset)
    assert server.rss_mib() - baseline < RSS_SLACK_MIB


def test_put_bodies_stream_past_the_xml_limit(server, keep):
    """The in-memory limit is not a file size limit (and refuses what is over it)."""
    data = bytes(range(256)) * (3 * MIB // 256)
    reply = raw_request(server.port, request(b"PUT /keep.txt HTTP/1.1\r\nContent-Length: %d"
                                             % len(data), data), timeout=30)
    assert reply.status == 204, reply
    assert keep.read_bytes() == data
    offset = len(server.log())
    reply = raw_request(server.port, request(b"PROPPATCH /keep.txt HTTP/1.1\r\n"
                                             b"Content-Length: %d" % len(data), data), timeout=30)
    assert_refused(server, reply, 413, offset)


# --- item 16: timeouts ------------------------------------------------------------------

def drip(sock: socket.socket, data: bytes, every: float, seconds: float) -> Reply | None:
    """Send ``data`` ``every`` seconds until the server answers (its reply) or
    ``seconds`` pass (None)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.sendall(data)
        except OSError:
            break
        if select.select([sock], [], [], every)[0]:
            break
    else:
        return None
    sock.settimeout(5)
    return read_reply(sock)


def test_slow_head_is_408_at_the_head_timeout(server):
    offset = len(server.log())
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        reply = drip(sock, b"X-Slow: a\r\n", every=0.3, seconds=8)
    assert reply is not None, "a head sent a line every 0.3 s was still being read after 8 s"
    assert time.monotonic() - started < LIMITS["head_timeout_seconds"] + 1.5
    assert_refused(server, reply, 408, offset)


def test_slow_heads_free_their_threads(server):
    """More slow heads than the server has threads (2 workers x 4): each is cut
    off at the head timeout, and a normal request is answered right after."""
    replies: list[Reply | None] = []

    def slow_client() -> None:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")
            replies.append(drip(sock, b"X: a\r\n", every=0.5, seconds=12))

    threads = [threading.Thread(target=slow_client) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [reply and reply.status for reply in replies] == [408] * 12
    started = time.monotonic()
    answer = raw_request(server.port, request(b"OPTIONS / HTTP/1.1\r\nConnection: close"))
    assert answer.status == 200 and time.monotonic() - started < 1


def test_stalled_upload_is_408_and_discarded(server, keep):
    offset = len(server.log())
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request(b"PUT /keep.txt HTTP/1.1\r\nContent-Length: 1000", b"x" * 10))
        sock.settimeout(10)
        reply = read_reply(sock)
    assert time.monotonic() - started < LIMITS["body_idle_timeout_seconds"] + 1.5
    assert_refused(server, reply, 408, offset)
    assert "silent" in server.log()[offset:]
    assert keep.read_bytes() == PREVIOUS and upload_leftovers(server) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_trickling_upload_is_408_once_below_the_minimum_rate(server, keep, chunked):
    offset = len(server.log())
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: 100000"
    piece = b"5\r\nxxxxx\r\n" if chunked else b"x" * 10
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request(b"PUT /keep.txt HTTP/1.1\r\n" + framing))
        # ~20 bytes/s: never silent for the idle timeout, far below the minimum rate.
        reply = drip(sock, piece, every=0.5, seconds=10)
    assert reply is not None, "an upload at ~20 bytes/s was still being read after 10 s"
    assert time.monotonic() - started < LIMITS["body_rate_grace_seconds"] + 2
    assert_refused(server, reply, 408, offset)
    assert "slower than 1000 bytes/s" in server.log()[offset:]
    assert keep.read_bytes() == PREVIOUS and upload_leftovers(server) == []


def test_limits_come_from_the_live_config(server):
    """A reloaded config's larger limit lets through what the old one refused."""
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(60))
    data = request(b"OPTIONS / HTTP/1.1\r\nConnection: close\r\n" + fields.rstrip(b"\r\n"))
    assert raw_request(server.port, data).status == 431
    config = server.config
    try:
        config["server"]["limits"] = {**LIMITS, "max_header_fields": 80}
        server.config_path.write_text(yaml.safe_dump(config))  # the watcher reloads it
        deadline = time.monotonic() + 15
        while not all(raw_request(server.port, data).status == 200 for _ in range(4)):
            assert time.monotonic() < deadline, "the reloaded limit never applied"
            time.sleep(0.2)
    finally:
        config["server"]["limits"] = LIMITS
        server.config_path.write_text(yaml.safe_dump(config))


# --- item 16: a TLS handshake is part of the head -----------------------------------------

@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("limits-tls")
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    process = two_tenant_process(base, workers=1, limits=LIMITS, fair_share=NO_SHARES,
                                 tls={"cert": str(cert), "key": str(key)})
    process.start(wait=False)
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError):
            https_options(process.port)
            break
        assert time.monotonic() < deadline, process.log()
        time.sleep(0.2)
    yield process
    process.stop()


def https_options(port: int) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw) as sock:
        sock.sendall(b"OPTIONS / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return sock.recv(100)


def test_silent_tls_connections_neither_block_others_nor_stay(tls_server):
    """A TCP connection that never starts its TLS handshake held cheroot's one
    acceptor thread for the connection timeout (60 s each): nobody else got in."""
    silent = [socket.create_connection(("127.0.0.1", tls_server.port)) for _ in range(3)]
    try:
        time.sleep(0.3)
        started = time.monotonic()
        assert https_options(tls_server.port).startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - started < 2
        for sock in silent:  # each is closed at the head timeout
            sock.settimeout(LIMITS["head_timeout_seconds"] + 3)
            assert sock.recv(1) == b""
        assert tls_server.log().count("TLS handshake failed") == 3
        assert tls_server.tracebacks() == 0
    finally:
        for sock in silent:
            sock.close()
