"""Hostile framing, heads and targets against a real two-worker server (issue 13: 5, 6, 8, 21).

Every malformed request is answered with a strict status and a closed
connection, before authentication where the head is at fault; nothing of it
reaches storage (the file on disk keeps its bytes, no upload temp file stays),
the server keeps answering, and the log gets one line and no traceback.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.support import (
    ALICE_AUTH,
    PREVIOUS,
    Reply,
    ServerProcess,
    keep_file,
    raw_request,
    read_replies,
    read_reply,
    request,
    two_tenant_process,
    wait_until_every_worker_listens,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("framing")
    process = two_tenant_process(base, workers=2)
    (base / "acme-root").mkdir(parents=True, exist_ok=True)
    with process:
        wait_until_every_worker_listens(process)
        yield process


@pytest.fixture
def keep(server: ServerProcess) -> Path:
    return keep_file(server)


def chunked_put(chunks: bytes, path: bytes = b"/keep.txt") -> bytes:
    return request(b"PUT " + path + b" HTTP/1.1\r\nTransfer-Encoding: chunked", chunks)


def new_log_lines(server: ServerProcess, offset: int) -> list[str]:
    return server.log()[offset:].splitlines()


def unrelated(line: str) -> bool:
    """The fixture's deliberately broken mount warns whenever a user's view is built."""
    return "mount /broken" in line


def assert_refused(server: ServerProcess, data: bytes, status: int) -> Reply:
    """One request answered ``status``, its connection closed, one log line, no traceback."""
    offset, tracebacks = len(server.log()), server.tracebacks()
    reply = raw_request(server.port, data)
    assert reply.status == status, reply
    assert reply.closed and reply.headers.get("connection") == "close"
    assert server.tracebacks() == tracebacks
    refusals = [line for line in new_log_lines(server, offset) if not unrelated(line)]
    assert len(refusals) == 1 and f"refused {status} " in refusals[0], server.log()[offset:]
    assert_still_serving(server)
    return reply


def assert_still_serving(server: ServerProcess) -> None:
    reply = raw_request(server.port, request(b"OPTIONS / HTTP/1.1\r\nConnection: close"))
    assert reply.status == 200 and reply.headers["server"] == "Mosaic"


def upload_leftovers(server: ServerProcess) -> list[str]:
    return [p.name for p in (server.base / "acme-root").iterdir() if "upload" in p.name]


# --- item 5: a malformed chunked body is a 400 and stores nothing ---------------------

MALFORMED_CHUNKS = {
    "negative size": b"-5\r\nhello\r\n0\r\n\r\n",
    "minus zero": b"-0\r\n\r\n",
    "plus sign": b"+10\r\n0123456789abcdef\r\n0\r\n\r\n",
    "0x prefix": b"0x10\r\n0123456789abcdef\r\n0\r\n\r\n",
    "not hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "beyond 63 bits": b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "1,000 digits": b"1" * 1000 + b"\r\nhello\r\n0\r\n\r\n",
    "leading space": b" 5\r\nhello\r\n0\r\n\r\n",
    "trailing space": b"5 \r\nhello\r\n0\r\n\r\n",
    "empty size": b"\r\nhello\r\n0\r\n\r\n",
    "bare LF after size": b"5\nhello\r\n0\r\n\r\n",
    "chunk longer than announced": b"3\r\nhello\r\n0\r\n\r\n",
    "no CRLF after data": b"5\r\nhello0\r\n\r\n",
    "bare LF after data": b"5\r\nhello\n0\r\n\r\n",
    "malformed extension": b"5;=x\r\nhello\r\n0\r\n\r\n",
    "trailer without colon": b"5\r\nhello\r\n0\r\nX-Trailer\r\n\r\n",
    "obs-fold in trailer": b"5\r\nhello\r\n0\r\nX-A: a\r\n b\r\n\r\n",
    "NUL in trailer": b"5\r\nhello\r\n0\r\nX-A: a\x00b\r\n\r\n",
    "bare LF ends trailer": b"5\r\nhello\r\n0\r\n\n",
}


@pytest.mark.parametrize("chunks", MALFORMED_CHUNKS.values(), ids=MALFORMED_CHUNKS.keys())
def test_malformed_chunked_put_is_400_and_keeps_the_file(server, keep, chunks):
    assert_refused(server, chunked_put(chunks), 400)
    assert keep.read_bytes() == PREVIOUS
    assert upload_leftovers(server) == []


@pytest.mark.parametrize("chunks", [MALFORMED_CHUNKS["negative size"],
                                    MALFORMED_CHUNKS["chunk longer than announced"]])
def test_malformed_chunked_put_of_a_new_file_creates_nothing(server, chunks):
    assert_refused(server, chunked_put(chunks, b"/never.txt"), 400)
    assert not (server.base / "acme-root" / "never.txt").exists()
    assert upload_leftovers(server) == []


LOCK_BODY = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
             b"</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>x</D:owner>"
             b"</D:lockinfo>")
PROPPATCH_BODY = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x">'
                  b"<D:set><D:prop><Z:colour>ultramarine-42</Z:colour></D:prop></D:set>"
                  b"</D:propertyupdate>")


@pytest.mark.parametrize(("method", "body"), [(b"LOCK", LOCK_BODY), (b"PROPPATCH", PROPPATCH_BODY)],
                         ids=["LOCK", "PROPPATCH"])
def test_a_malformed_chunked_xml_body_is_not_acted_on(server, keep, method, body):
    """The whole XML arrives in a valid chunk; the malformed chunk after it
    still makes the request a 400: no lock is taken, no property stored."""
    chunks = b"%x\r\n%s\r\n-5\r\nhello\r\n0\r\n\r\n" % (len(body), body)
    assert_refused(server, request(method + b" /keep.txt HTTP/1.1\r\n"
                                   b"Transfer-Encoding: chunked", chunks), 400)
    put = raw_request(server.port, request(b"PUT /keep.txt HTTP/1.1\r\nContent-Length: 3", b"new"))
    assert put.status == 204, put  # no lock holds the file
    propfind = raw_request(server.port, request(b"PROPFIND /keep.txt HTTP/1.1\r\nDepth: 0\r\n"
                                                b"Content-Length: 0"))
    assert propfind.status == 207 and b"ultramarine-42" not in propfind.body


def test_a_chunked_body_cut_off_stores_nothing(server, keep):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(chunked_put(b"10\r\n0123456789"))
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        assert read_reply(sock).status in (0, 400)
    assert keep.read_bytes() == PREVIOUS and upload_leftovers(server) == []


def test_chunked_put_takes_exactly_the_rfc_grammar(server, keep):
    """Extensions (BWS before ';', quoted values), leading zeros and trailers are
    valid and stored; the near misses beside them are not."""
    valid = (b"5 ;name=value;quoted=\"a b\"\r\nhello\r\n00001\r\n \r\n"
             b"6\r\nworld!\r\n0\r\nX-Checksum: none\r\n\r\n")
    reply = raw_request(server.port, chunked_put(valid))
    assert reply.status == 204, reply
    assert keep.read_bytes() == b"hello world!"
    for near_miss in (b"5 \r\nhello\r\n0\r\n\r\n", b"5;\r\nhello\r\n0\r\n\r\n",
                      b"5;a=\"b\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\nX : y\r\n\r\n"):
        assert_refused(server, chunked_put(near_miss), 400)
        assert keep.read_bytes() == b"hello world!"


def test_a_chunked_propfind_body_is_read_and_the_connection_stays_in_step(server, keep):
    body = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/>'
            b"</D:prop></D:propfind>")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    first = request(b"PROPFIND /keep.txt HTTP/1.1\r\nDepth: 0\r\nTransfer-Encoding: chunked",
                    chunked)
    second = request(b"GET /keep.txt HTTP/1.1")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        sock.sendall(first + second)
        propfind, get = read_replies(sock, 2)
    assert propfind.status == 207 and b"<D:getcontentlength>%d<" % len(PREVIOUS) in \
        propfind.body.replace(b"ns0:", b"D:")
    assert get.status == 200 and get.body == PREVIOUS


def test_100_continue_is_sent_only_when_the_body_is_wanted(server, keep):
    """An upload refused before its body is read (here 401) is never invited:
    the client gets the refusal instead of a 100 Continue, and sends nothing."""
    head = b"PUT /keep.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        sock.sendall(head + b"Content-Length: 100000000\r\n\r\n")
        assert read_reply(sock).status == 401
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        sock.sendall(head + ALICE_AUTH + b"Content-Length: 3\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"new")
        assert read_reply(sock).status == 204
    assert keep.read_bytes() == b"new"


# --- item 6: conflicting or malformed framing is a 400 (501) before anything else -----

BAD_FRAMING = {
    "two different Content-Length": (b"Content-Length: 3\r\nContent-Length: 5", b"abcde", 400),
    "two equal Content-Length": (b"Content-Length: 5\r\nContent-Length: 5", b"abcde", 400),
    "Content-Length -1": (b"Content-Length: -1", b"abc", 400),
    "Content-Length -99999999999999999999": (b"Content-Length: -99999999999999999999", b"", 400),
    "Content-Length +3": (b"Content-Length: +3", b"abc", 400),
    "Content-Length 1,1": (b"Content-Length: 1,1", b"a", 400),
    "Content-Length 1 2": (b"Content-Length: 1 2", b"abcdefghijkl", 400),
    "Content-Length hex": (b"Content-Length: 0x3", b"abc", 400),
    "Content-Length beyond 63 bits": (b"Content-Length: 99999999999999999999", b"", 400),
    "Content-Length and chunked": (b"Content-Length: 3\r\nTransfer-Encoding: chunked",
                                   b"3\r\nabc\r\n0\r\n\r\n", 400),
    "chunked, chunked": (b"Transfer-Encoding: chunked, chunked", b"3\r\nabc\r\n0\r\n\r\n", 400),
    "chunked twice": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                      b"3\r\nabc\r\n0\r\n\r\n", 400),
    "chunked not last": (b"Transfer-Encoding: chunked, gzip", b"3\r\nabc\r\n0\r\n\r\n", 400),
    "unknown coding": (b"Transfer-Encoding: gzip", b"abc", 501),
    "unknown coding before chunked": (b"Transfer-Encoding: gzip, chunked",
                                      b"3\r\nabc\r\n0\r\n\r\n", 501),
}


@pytest.mark.parametrize(("fields", "body", "status"), BAD_FRAMING.values(),
                         ids=BAD_FRAMING.keys())
def test_conflicting_framing_is_refused_and_stores_nothing(server, keep, fields, body, status):
    assert_refused(server, request(b"PUT /keep.txt HTTP/1.1\r\n" + fields, body), status)
    assert keep.read_bytes() == PREVIOUS


def test_transfer_encoding_in_http_1_0_is_refused(server, keep):
    data = request(b"PUT /keep.txt HTTP/1.0\r\nTransfer-Encoding: chunked",
                   b"3\r\nabc\r\n0\r\n\r\n")
    assert_refused(server, data, 400)
    assert keep.read_bytes() == PREVIOUS


BAD_HEADS = {
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "bare LF in a field": b"GET / HTTP/1.1\r\nHost: x\nX-A: a\r\n\r\n",
    "bare LF ends the head": b"GET / HTTP/1.1\r\nHost: x\r\n\n",
    "bare LF request line": b"GET / HTTP/1.1\nHost: x\r\n\r\n",
    "bare CR in a field": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "NUL in a field": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "escape char in a field": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x1bb\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n",
    "tab before colon": b"GET / HTTP/1.1\r\nHost: x\r\nX-A\t: a\r\n\r\n",
    "no colon": b"GET / HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n",
    "empty field name": b"GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n",
    "no Host": b"GET / HTTP/1.1\r\n\r\n",
    "two Hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "Host with a slash": b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "two spaces in request line": b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
    "no version": b"GET /\r\nHost: x\r\n\r\n",
    "lower-case version": b"GET / http/1.1\r\nHost: x\r\n\r\n",
    "NUL in method": b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("data", BAD_HEADS.values(), ids=BAD_HEADS.keys())
def test_malformed_head_is_400_before_authentication(server, data):
    reply = assert_refused(server, data, 400)
    assert "www-authenticate" not in reply.headers


def test_http_2_request_line_is_505(server):
    assert_refused(server, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)


# --- item 8: undecodable or hostile request targets -----------------------------------

BAD_TARGETS = {
    "invalid UTF-8": b"/%ff",
    "overlong UTF-8": b"/%c0%af",
    "NUL": b"/%00",
    "NUL in a folder": b"/projects%00/keep.txt",
    "newline": b"/a%0ab",
    "encoded dot-dot": b"/%2e%2e/%2e%2e/etc/passwd",
    "encoded dot-dot inside": b"/projects/%2E%2E/keep.txt",
    "literal dot-dot": b"/projects/../keep.txt",
    "dot segment": b"/./keep.txt",
    "invalid escape": b"/%zz",
    "truncated escape": b"/keep.txt%f",
    "not a path": b"keep.txt",
    "fragment": b"/keep.txt#x",
}


@pytest.mark.parametrize("target", BAD_TARGETS.values(), ids=BAD_TARGETS.keys())
@pytest.mark.parametrize("auth", [False, True], ids=["anonymous", "alice"])
def test_hostile_target_is_400(server, keep, target, auth):
    data = request(b"GET " + target + b" HTTP/1.1", auth=auth)
    reply = assert_refused(server, data, 400)
    assert PREVIOUS not in reply.body


def test_encoded_names_work_and_hostile_ones_remove_nothing(server, keep):
    name = "r\u00e9sum\u00e9 #1 100%.txt"
    target = b"/r%C3%A9sum%C3%A9%20%231%20100%25.txt"
    reply = raw_request(server.port, request(b"PUT " + target + b" HTTP/1.1\r\n"
                                             b"Content-Length: 2", b"ok"))
    assert reply.status == 201, reply
    assert (server.base / "acme-root" / name).read_bytes() == b"ok"
    assert_refused(server, request(b"DELETE /projects/%2e%2e/keep.txt HTTP/1.1"), 400)
    assert keep.read_bytes() == PREVIOUS


def test_huge_target_is_414(server):
    assert_refused(server, request(b"GET /" + b"a" * 100_000 + b" HTTP/1.1"), 414)


def test_absolute_form_target_is_served_as_its_path(server, keep):
    reply = raw_request(server.port, request(b"GET http://127.0.0.1/keep.txt HTTP/1.1"))
    assert reply.status == 200 and reply.body == PREVIOUS


# --- item 21: Mosaic, without a version, everywhere -----------------------------------

ANSWERS = {
    "401 page": request(b"GET /keep.txt HTTP/1.1", auth=False),
    "404 page": request(b"GET /missing.txt HTTP/1.1"),
    "405 page": request(b"MKCOL /keep.txt HTTP/1.1"),
    "201 body": request(b"PUT /created.txt HTTP/1.1\r\nContent-Length: 1", b"x"),
    "207 multistatus": request(b"PROPFIND / HTTP/1.1\r\nDepth: 1"),
    "OPTIONS": request(b"OPTIONS / HTTP/1.1"),
    "front-end refusal": request(b"GET /%ff HTTP/1.1"),
}


def test_every_answer_names_mosaic_without_a_version(server, keep):
    for what, data in ANSWERS.items():
        reply = raw_request(server.port, data)
        assert reply.status in (200, 201, 204, 207, 400, 401, 404, 405), (what, reply)
        assert reply.headers["server"] == "Mosaic", what
        everything = repr(reply.headers).encode() + reply.body
        assert not re.search(rb"(?i)wsgidav|cheroot|github|python", everything), (what, reply)
