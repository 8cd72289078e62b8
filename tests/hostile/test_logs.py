"""Logs and secrets (issue 13, items 12 and 15), on a real ``mosaic serve`` process.

* No configured secret, key id or credential-bearing URL reaches any log line,
  at ``log_level: debug``, after PUT/GET/PROPFIND/MOVE/DELETE on every provider
  (local, S3 on moto, Azure Blob on Azurite, GCS on fake-gcs-server, Swift
  with auth v1 and Keystone v3, Rackspace).
* Libraries log warnings only unless ``server.log_levels`` names them; named,
  they log, and the secrets are still masked.
* A mount whose store goes down is logged once (WARNING) and once when it is
  back (INFO), however many requests fail in between.
* The access log is one JSON object per request, with the final status and
  the body bytes actually sent.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import struct
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
import yaml

from mosaic import logs
from tests.hostile.support import ServerProcess, basic, raw_request, two_tenant_process
from tests.support import azurite, fakegcs, moto, swift
from tests.support.moto import StoppableS3, stoppable_s3  # noqa: F401 (fixture)
from tests.support.swift import Identity, identity, swift_cluster  # noqa: F401 (fixtures)

ALICE = ("alice@acme.example", "alice-secret")
MIB = 1024 * 1024
#: a log line as mosaic.logs.FORMAT writes it
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:\d+ )?(?P<level>[A-Z]+) "
                  r"(?P<logger>[\w.]+): ")
ACCESS_KEYS = {"time", "remote", "tenant", "user", "method", "path", "status", "bytes",
               "duration_ms"}
LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "azure", "swiftclient", "gcsfs",
             "google", "aiohttp", "fsspec", "requests")


# -- every provider ---------------------------------------------------------------------------


class Secrets:
    """Distinctive credentials for the stores that accept any (moto), and the
    fixed ones of the others, with what each must never show up as."""

    def __init__(self, identity: Identity) -> None:  # noqa: F811
        self.s3_key_id = "AKIAMOSAIC" + secrets.token_hex(5).upper()
        self.s3_secret = "s3-secret-" + secrets.token_hex(8)
        self.identity = identity

    def never_logged(self) -> list[str]:
        return [self.s3_key_id, self.s3_secret, azurite.KEY,
                swift.KEY, self.identity.password, self.identity.api_key,
                "AUTH_tk",  # a tempauth token, as Swift hands them out
                "SharedKey devstoreaccount1:"]  # an Azure request's signature


def provider_mounts(known: Secrets) -> dict[str, Any]:
    ident = known.identity
    s3 = {**moto.provider(moto.fresh_bucket()), "key": known.s3_key_id,
          "secret": known.s3_secret}
    keystone = {"type": "swift", "auth_url": ident.url + "/v3",
                "username": ident.username, "password": ident.password,
                "project_name": ident.project, "region": ident.region,
                "container": swift.fresh_container()}
    rackspace = {"type": "rackspace", "identity_url": ident.url + "/v2.0",
                 "username": ident.username, "api_key": ident.api_key,
                 "region": ident.region, "container": swift.fresh_container()}
    specs = {
        "/s3": s3,
        "/azure": azurite.provider(azurite.fresh_container()),
        "/gcs": fakegcs.provider(fakegcs.fresh_bucket()),
        "/swift": swift.provider(swift.fresh_container()),
        "/keystone": keystone,
        "/rackspace": rackspace,
    }
    return {path: {"provider": spec} for path, spec in specs.items()}


def exercise(port: int, folder: str) -> None:
    """PUT, GET, PROPFIND, MOVE and DELETE in ``folder``, each answered as it should."""
    url = f"http://127.0.0.1:{port}{folder}"
    with requests.Session() as session:
        session.auth = ALICE
        body = secrets.token_bytes(3000)
        assert session.put(f"{url}/a.bin", data=body, timeout=60).status_code in (201, 204)
        got = session.get(f"{url}/a.bin", timeout=60)
        assert (got.status_code, got.content) == (200, body)
        listed = session.request("PROPFIND", f"{url}/", headers={"Depth": "1"}, timeout=60)
        assert listed.status_code == 207 and b"a.bin" in listed.content
        moved = session.request("MOVE", f"{url}/a.bin", timeout=60,
                                headers={"Destination": f"{url}/b.bin"})
        assert moved.status_code in (201, 204)
        assert session.delete(f"{url}/b.bin", timeout=60).status_code == 204
        assert session.get(f"{url}/b.bin", timeout=60).status_code == 404


def served_every_provider(base: Path, identity: Identity, **server: Any  # noqa: F811
                          ) -> tuple[ServerProcess, Secrets]:
    known = Secrets(identity)
    process = two_tenant_process(base, **server)
    mounts = process.config["tenants"]["acme"]["mounts"]
    mounts.update(provider_mounts(known))
    with process:
        for folder in ["/projects", "/home", *provider_mounts_paths(mounts)]:
            exercise(process.port, folder)
        # A service URL carrying a password never gets this far: the config
        # refuses it without echoing it (tests/test_config.py).
    return process, known


def provider_mounts_paths(mounts: dict[str, Any]) -> list[str]:
    return [path for path, mount in mounts.items() if mount["provider"]["type"] != "local"]


def library_lines_below_warning(log: str) -> list[str]:
    """Lines a library (not Mosaic) wrote at INFO or DEBUG."""
    found = []
    for line in log.splitlines():
        match = LINE.match(line)
        if match and match["level"] in ("DEBUG", "INFO") \
                and not match["logger"].startswith("mosaic"):
            found.append(line)
    return found


def test_no_secret_in_any_log_line_at_debug_across_every_provider(
        tmp_path: Path, identity: Identity) -> None:  # noqa: F811
    process, known = served_every_provider(tmp_path, identity, log_level="debug")
    log = process.log()
    for value in known.never_logged():
        leaking = [line for line in log.splitlines() if value in line]
        assert not leaking, f"{value!r} logged:\n" + "\n".join(leaking[:5])
    assert library_lines_below_warning(log) == []
    assert process.tracebacks() == 0


def test_libraries_stay_quiet_at_the_default_level(tmp_path: Path,
                                                   identity: Identity) -> None:  # noqa: F811
    process, _ = served_every_provider(tmp_path, identity, workers=2)  # workers set up theirs
    lines = process.log().splitlines()
    # Start-up, the broken mount's warning, a few of Mosaic's own: not a line per request.
    assert len(lines) < 15, "\n".join(lines[:40])
    assert library_lines_below_warning("\n".join(lines)) == []


def test_a_library_named_in_log_levels_logs_with_its_secrets_masked(
        tmp_path: Path, identity: Identity) -> None:  # noqa: F811
    levels = dict.fromkeys(LIBRARIES, "debug")
    process, known = served_every_provider(tmp_path, identity, log_level="debug",
                                           log_levels=levels)
    log = process.log()
    chatty = {LINE.match(line)["logger"].partition(".")[0]  # type: ignore[index]
              for line in library_lines_below_warning(log)}
    assert {"botocore", "azure"} <= chatty  # asked for by name: they do log
    for value in known.never_logged():
        leaking = [line for line in log.splitlines() if value in line]
        assert not leaking, f"{value!r} logged:\n" + "\n".join(leaking[:5])


def test_secrets_a_reload_brings_are_masked_too(tmp_path: Path) -> None:
    process = two_tenant_process(tmp_path, log_level="debug", log_levels={"botocore": "debug"})
    url = f"http://127.0.0.1:{process.port}/late/"
    late_key = "AKIALATE" + secrets.token_hex(6).upper()
    with process:
        assert requests.request("PROPFIND", url, auth=ALICE, headers={"Depth": "0"},
                                timeout=30).status_code == 404
        spec = {**moto.provider(moto.fresh_bucket()), "key": late_key}
        process.config["tenants"]["acme"]["mounts"]["/late"] = {"provider": spec}
        process.config_path.write_text(yaml.safe_dump(process.config))
        _until(lambda: requests.request("PROPFIND", url, auth=ALICE, headers={"Depth": "0"},
                                        timeout=30).status_code == 207)
        exercise(process.port, "/late")
        log = process.log()
    assert "botocore" in log  # it logs: the reload kept the level asked for
    assert late_key not in log
    assert process.tracebacks() == 0


# -- a store going down -----------------------------------------------------------------------


def _get(port: int, path: str) -> int:
    return raw_request(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n{basic(*ALICE)}"
                       "Connection: close\r\n\r\n".encode(), timeout=60).status


def _lines(log: str, level: str, *words: str) -> list[str]:
    return [line for line in log.splitlines()
            if f" {level} " in line and all(word in line for word in words)]


def _until(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_an_s3_outage_is_logged_once_and_so_is_the_recovery(
        tmp_path: Path, stoppable_s3: StoppableS3) -> None:  # noqa: F811
    bucket = moto.fresh_bucket(stoppable_s3.url)
    spec = {**moto.provider(bucket, url=stoppable_s3.url), "listing_cache_seconds": 30}
    process = two_tenant_process(tmp_path, log_level="debug")
    process.config["tenants"]["acme"]["mounts"]["/s3"] = {"provider": spec}
    with process:
        exercise(process.port, "/s3")
        requests.put(f"http://127.0.0.1:{process.port}/s3/kept.txt", data=b"kept",
                     auth=ALICE, timeout=30).raise_for_status()
        stoppable_s3.stop()
        started = time.monotonic()
        # 8 requests: ~1.4 s each (botocore retries a refused connection)
        statuses = [_get(process.port, path) for path in ("/s3/kept.txt", "/s3/a/") * 4]
        failing = time.monotonic() - started
        assert set(statuses) == {503}
        assert _get(process.port, "/projects/") == 200  # the rest of the tenant works
        stoppable_s3.start()
        _until(lambda: _get(process.port, "/s3/kept.txt") == 200)
        for _ in range(5):
            assert _get(process.port, "/s3/kept.txt") == 200
        log = process.log()
    down = _lines(log, "WARNING", "acme", "/s3", "unavailable")
    assert len(down) == 1, log
    assert "storage service unreachable" in down[0]
    assert stoppable_s3.url.split("//")[1] not in down[0]  # the cause, not the address
    assert len(_lines(log, "INFO", "acme", "/s3", "back")) == 1, log
    assert process.tracebacks() == 0
    print(f"8 requests failed in {failing:.1f} s; {len(log.splitlines())} log lines")


def test_a_local_mount_gone_and_back_is_logged_once_each(tmp_path: Path) -> None:
    process = two_tenant_process(tmp_path)
    folder = tmp_path / "acme-projects"
    with process:
        assert _get(process.port, "/projects/") == 200
        folder.rename(tmp_path / "moved-away")
        assert {_get(process.port, "/projects/") for _ in range(20)} == {503}
        (tmp_path / "moved-away").rename(folder)
        assert {_get(process.port, "/projects/") for _ in range(5)} == {200}
        log = process.log()
    assert len(_lines(log, "WARNING", "acme", "/projects", "root directory is missing")) == 1
    assert len(_lines(log, "INFO", "acme", "/projects", "back")) == 1, log
    # The broken mount of the shared config is reported once, not at every retry.
    assert len(_lines(log, "WARNING", "acme", "/broken", "unavailable")) == 1, log


# -- the access log ---------------------------------------------------------------------------


def _access_lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        assert set(entry) == ACCESS_KEYS, line
        datetime.fromisoformat(entry["time"])
        assert isinstance(entry["duration_ms"], float | int) and entry["duration_ms"] >= 0
        yield entry


def test_the_access_log_is_one_json_line_per_request(tmp_path: Path) -> None:
    access = tmp_path / "access.jsonl"
    process = two_tenant_process(tmp_path, access_log=str(access))
    url = f"http://127.0.0.1:{process.port}"
    body = secrets.token_bytes(100_000)
    with process:
        with requests.Session() as session:
            session.auth = ALICE
            assert session.put(f"{url}/\u00e9t\u00e9.bin", data=body).status_code == 201
            assert session.get(f"{url}/\u00e9t\u00e9.bin").content == body
            assert session.request("PROPFIND", f"{url}/", headers={"Depth": "0"}) \
                .status_code == 207
            assert session.get(f"{url}/missing").status_code == 404
        assert requests.get(f"{url}/x", auth=("dave@globex.example", "wrong")) \
            .status_code == 401
        assert requests.get(f"{url}/", auth=("dave@globex.example", "dave-secret")) \
            .status_code == 200
    probes = [e for e in _access_lines(access) if e["method"] == "OPTIONS"]
    assert probes and {(e["user"], e["status"]) for e in probes} == {("-", 200)}  # start-up
    entries = [e for e in _access_lines(access) if e["method"] != "OPTIONS"]
    seen = [(e["tenant"], e["user"], e["method"], e["path"], e["status"]) for e in entries]
    assert seen == [
        ("acme", "alice", "PUT", "/\u00e9t\u00e9.bin", 201),
        ("acme", "alice", "GET", "/\u00e9t\u00e9.bin", 200),
        ("acme", "alice", "PROPFIND", "/", 207),
        ("acme", "alice", "GET", "/missing", 404),
        ("-", "-", "GET", "/x", 401),
        ("globex", "dave", "GET", "/", 200),
    ]
    assert entries[1]["bytes"] == len(body)
    assert {e["remote"] for e in entries} == {"127.0.0.1"}


def test_the_access_log_counts_what_was_sent_to_a_client_that_hung_up(tmp_path: Path) -> None:
    size = 64 * MIB
    (tmp_path / "acme-root").mkdir(parents=True, exist_ok=True)
    (tmp_path / "acme-root" / "big.bin").write_bytes(b"\0" * size)
    process = two_tenant_process(tmp_path, access_log="-")  # to stderr: the server's log
    with process:
        with socket.create_connection(("127.0.0.1", process.port)) as sock:
            sock.sendall(f"GET /big.bin HTTP/1.1\r\nHost: x\r\n{basic(*ALICE)}\r\n".encode())
            sock.settimeout(10)
            received = sock.recv(65536)
            assert received.startswith(b"HTTP/1.1 200")
            while len(received) < 2 * MIB:
                received += sock.recv(65536)
            # linger 0: close() resets the connection, as a killed client would
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        _until(lambda: '"path": "/big.bin"' in process.log())
        assert _get(process.port, "/") == 200  # still serving
        entries = [json.loads(line) for line in process.log().splitlines()
                   if line.startswith("{")]
    big = next(e for e in entries if e["path"] == "/big.bin")
    assert big["status"] == 200
    # What the client got, give or take the block being written at the hang-up
    # and the socket buffers: far less than the file, which was not buffered.
    assert MIB <= big["bytes"] < size // 2, big
    assert process.tracebacks() == 0



def test_the_formatter_masks_url_passwords_credential_headers_and_known_secrets() -> None:
    """The safety net under every log line, whatever a library decides to print."""
    formatter = logs.RedactingFormatter("%(message)s")
    formatter.remember(["s3-secret-4f1a9c", "ab"])  # too short to mask: "ab" stays
    record = logging.LogRecord(
        "botocore", logging.DEBUG, __file__, 1,
        "GET https://urluser:p4ss@store.example/x headers={'Authorization': b'AWS4 key'} "
        "secret=s3-secret-4f1a9c tab", None, None)
    line = formatter.format(record)
    assert "p4ss" not in line and "AWS4 key" not in line and "s3-secret-4f1a9c" not in line
    assert "https://urluser:***@store.example/x" in line and "tab" in line
