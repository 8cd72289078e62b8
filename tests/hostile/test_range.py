"""Range requests (RFC 9110 section 14) as curl, browsers and Office send them,
on a local folder and on an S3 mount (whose GET reads the version a fresh HEAD
described): one satisfiable range is a 206, an invalid header or a failed
If-Range the whole file, several ranges the whole file, none satisfiable a 416
with ``Content-Range: bytes */LEN``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.support import Reply, ServerProcess, basic, raw_request, two_tenant_process
from tests.support import moto

DATA = bytes(range(256)) * 4  # 1,024 bytes, every offset distinguishable
SIZE = len(DATA)
AUTH = basic("alice@acme.example", "alice-secret")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = two_tenant_process(tmp_path_factory.mktemp("range"))
    process.config["tenants"]["acme"]["mounts"]["/cloud"] = {
        "provider": moto.provider(moto.fresh_bucket())}
    with process:
        for folder in ("", "/cloud"):
            assert request(process, "PUT", f"{folder}/media.bin", body=DATA).status in (201, 204)
        yield process
    assert process.tracebacks() == 0


@pytest.fixture(params=["", "/cloud"], ids=["local", "s3"])
def url(request: pytest.FixtureRequest) -> str:
    return request.param + "/media.bin"


def request(server: ServerProcess, method: str, path: str, headers: str = "",
            body: bytes = b"") -> Reply:
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{AUTH}{headers}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return raw_request(server.port, head.encode("latin-1") + body)


def get(server: ServerProcess, path: str, headers: str = "") -> Reply:
    return request(server, "GET", path, headers)


def assert_partial(reply: Reply, first: int, last: int) -> None:
    assert reply.status == 206, reply
    assert reply.headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert reply.headers["content-length"] == str(last - first + 1)
    assert reply.body == DATA[first:last + 1]


def assert_whole(reply: Reply) -> None:
    assert reply.status == 200, reply
    assert "content-range" not in reply.headers
    assert reply.body == DATA


@pytest.mark.parametrize(("header", "first", "last"), [
    ("bytes=0-99", 0, 99),                 # curl -r 0-99
    ("bytes=500-", 500, SIZE - 1),         # curl -C - (resume)
    ("bytes=0-", 0, SIZE - 1),             # browsers' first request for media
    ("bytes=-100", SIZE - 100, SIZE - 1),  # the last 100 bytes
    ("bytes=-5000", 0, SIZE - 1),          # a suffix longer than the file
    ("bytes=1000-99999", 1000, SIZE - 1),  # a last position beyond the end
    ("bytes=1023-1023", SIZE - 1, SIZE - 1),
    ("BYTES = 7-8", 7, 8),                 # the unit is case-insensitive
    ("bytes=3-4, ", 3, 4),                 # an empty list element
    ("bytes=0-99999999999999999999999999", 0, SIZE - 1),
])
def test_one_satisfiable_range_is_206(server: ServerProcess, url: str, header: str,
                                      first: int, last: int) -> None:
    assert_partial(get(server, url, f"Range: {header}\r\n"), first, last)


@pytest.mark.parametrize("header", [
    "bytes=0-9,20-29",       # curl -r 0-9,20-29: several ranges, the whole file
    "bytes=0-0,-1",          # first and last byte
    "bytes=0-99,2000-3000",  # one of them unsatisfiable
    "bytes=5-1",             # last before first: invalid
    "bytes=abc",
    "bytes=",
    "bytes=0x10-",
    "bytes=--5",
    "bytes=1-2-3",
    "items=0-5",             # another unit
    "0-5",
])
def test_several_or_invalid_ranges_are_the_whole_file(server: ServerProcess, url: str,
                                                      header: str) -> None:
    assert_whole(get(server, url, f"Range: {header}\r\n"))


@pytest.mark.parametrize("header", ["bytes=-0", f"bytes={SIZE}-", "bytes=2000-3000, 5000-",
                                    "bytes=99999999999999999999999-"])
def test_no_satisfiable_range_is_416_with_the_length(server: ServerProcess, url: str,
                                                     header: str) -> None:
    reply = get(server, url, f"Range: {header}\r\n")
    assert reply.status == 416
    assert reply.headers["content-range"] == f"bytes */{SIZE}"


def test_if_range_with_the_current_etag_or_date_gives_the_range(server: ServerProcess,
                                                               url: str) -> None:
    whole = get(server, url)
    etag, date = whole.headers["etag"], whole.headers["last-modified"]
    assert_partial(get(server, url, f"Range: bytes=10-19\r\nIf-Range: {etag}\r\n"), 10, 19)
    assert_partial(get(server, url, f"Range: bytes=10-19\r\nIf-Range: {date}\r\n"), 10, 19)


@pytest.mark.parametrize("validator", ['"not-the-etag"', "W/{etag}",
                                       "Mon, 01 Jan 2001 00:00:00 GMT", "garbage"])
def test_if_range_that_does_not_match_gives_the_whole_file(server: ServerProcess, url: str,
                                                           validator: str) -> None:
    etag = get(server, url).headers["etag"]
    reply = get(server, url, f"Range: bytes=10-19\r\nIf-Range: {validator.format(etag=etag)}\r\n")
    assert_whole(reply)


def test_preconditions_come_before_the_range(server: ServerProcess, url: str) -> None:
    etag = get(server, url).headers["etag"]
    reply = get(server, url, f"Range: bytes=-0\r\nIf-None-Match: {etag}\r\n")
    assert reply.status == 304


def test_head_with_a_range_announces_it_without_a_body(server: ServerProcess, url: str) -> None:
    reply = request(server, "HEAD", url, "Range: bytes=0-4095\r\n")  # Office's first probe
    assert reply.status == 206
    assert reply.headers["content-range"] == f"bytes 0-{SIZE - 1}/{SIZE}"
    assert reply.body == b""


def test_a_range_of_a_replaced_file_describes_the_new_version(server: ServerProcess,
                                                             url: str) -> None:
    path = url.replace("media", "replaced")
    assert request(server, "PUT", path, body=b"old version").status in (201, 204)
    assert request(server, "PUT", path, body=b"the new, longer version").status == 204
    reply = get(server, path, "Range: bytes=4-\r\n")
    assert reply.status == 206
    assert reply.headers["content-range"] == "bytes 4-22/23"
    assert reply.body == b"new, longer version"


def test_an_empty_file_is_served_whole(server: ServerProcess, url: str) -> None:
    path = url.replace("media", "empty")
    assert request(server, "PUT", path).status in (201, 204)
    reply = get(server, path, "Range: bytes=0-\r\n")
    assert (reply.status, reply.body) == (200, b"")


def _curl(server: ServerProcess, path: str, *args: str) -> bytes:
    command = ["curl", "-sS", "--fail", "-u", "alice@acme.example:alice-secret", *args,
               f"http://127.0.0.1:{server.port}{path}"]
    return subprocess.run(command, check=True, capture_output=True, timeout=30).stdout


def test_curl_ranges_and_resume(server: ServerProcess, url: str, tmp_path: Path) -> None:
    assert _curl(server, url, "-r", "0-99") == DATA[:100]
    assert _curl(server, url, "-r", "-24") == DATA[-24:]
    assert _curl(server, url, "-r", "0-9,20-29") == DATA  # several: the whole file
    partial = tmp_path / "media.bin"
    partial.write_bytes(DATA[:300])  # an interrupted download
    _curl(server, url, "-C", "-", "-o", str(partial))
    assert partial.read_bytes() == DATA
