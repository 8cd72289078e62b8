"""RFC 4331 quota properties and configured quotas, on a real server: a local
volume's free space, a per-mount and a per-tenant quota on local disk and on an
S3 mount (moto), and writes beyond a quota refused with 507, nothing stored."""

from __future__ import annotations

import logging
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.hostile.support import basic, raw_request
from tests.support import moto, tenants
from tests.support.live import Live, live_server

KIB = 1024
QUOTA = 64 * KIB
ALICE = ("alice@acme.example", "alice-secret")
NAMES = ("quota-used-bytes", "quota-available-bytes")
QUOTA_PROPS = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
               "<D:quota-used-bytes/><D:quota-available-bytes/></D:prop></D:propfind>")


def _spaces(session: requests.Session, url: str, depth: str = "0",
            body: str = QUOTA_PROPS) -> dict[str, dict[str, int]]:
    """href -> {property: value} of the quota properties answered with 200."""
    reply = session.request("PROPFIND", url, data=body, headers={"Depth": depth})
    assert reply.status_code == 207, reply.text
    found: dict[str, dict[str, int]] = {}
    for response in ET.fromstring(reply.content).iter("{DAV:}response"):
        values = found.setdefault(response.findtext("{DAV:}href", ""), {})
        for propstat in response.iter("{DAV:}propstat"):
            if "200" in propstat.findtext("{DAV:}status", ""):
                for name in NAMES:
                    text = propstat.findtext(f"{{DAV:}}prop/{{DAV:}}{name}")
                    if text is not None:
                        values[name] = int(text)
    return found


def _space(session: requests.Session, url: str) -> tuple[int, int] | None:
    values = next(iter(_spaces(session, url).values()))
    if not values:
        return None
    return values["quota-used-bytes"], values["quota-available-bytes"]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict:
    if request.param == "local":
        (tmp_path / "store").mkdir()
        return tenants.local(tmp_path / "store")
    return moto.provider(moto.fresh_bucket())


def _serve(tmp_path: Path, store: dict, mount_quota: int | str | None = None,
           tenant_quota: int | None = None) -> Iterator[tuple[Live, requests.Session]]:
    data = tenants.two_tenants(tmp_path)
    mount: dict = {"provider": store}
    if mount_quota is not None:
        mount["quota"] = mount_quota
    data["tenants"]["acme"]["mounts"]["/drive"] = mount
    if tenant_quota is not None:
        data["tenants"]["acme"]["quota"] = tenant_quota
    with live_server(tenants.build(data)) as live:
        yield live, live.session(*ALICE)


@pytest.fixture
def limited(tmp_path: Path, store: dict) -> Iterator[tuple[Live, requests.Session]]:
    yield from _serve(tmp_path, store, mount_quota="64 KiB")


def test_a_local_volume_reports_its_used_and_free_space(tmp_path: Path) -> None:
    with live_server(tenants.build(tenants.two_tenants(tmp_path))) as live:
        alice = live.session(*ALICE)
        for folder in ("/", "/projects/", "/projects/archive/"):
            space = _space(alice, live.url + folder)
            volume = os.statvfs(tmp_path)
            assert space is not None, folder
            used, available = space
            assert abs(available - volume.f_bavail * volume.f_frsize) < 256 * 2**20
            assert abs(used - (volume.f_blocks - volume.f_bfree) * volume.f_frsize) < 256 * 2**20


def test_a_mount_quota_is_reported_on_every_folder(limited: tuple[Live, requests.Session]) -> None:
    live, alice = limited
    drive = live.url + "/drive"
    assert alice.request("MKCOL", drive + "/sub").status_code == 201
    assert alice.put(drive + "/sub/a.bin", data=b"a" * 10 * KIB).status_code == 201
    assert _space(alice, drive + "/") == (10 * KIB, QUOTA - 10 * KIB)
    assert _space(alice, drive + "/sub/") == (10 * KIB, QUOTA - 10 * KIB)
    # Depth 1 from the root: the mount point shows its own quota
    listed = _spaces(alice, live.url + "/", depth="1")
    assert listed["/drive/"] == {"quota-used-bytes": 10 * KIB,
                                 "quota-available-bytes": QUOTA - 10 * KIB}
    assert listed["/"]  # the local root has its volume's figures
    # a file has none, and allprop does not include them (RFC 4331 section 3)
    assert _spaces(alice, drive + "/sub/a.bin") == {"/drive/sub/a.bin": {}}
    allprop = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
    assert _spaces(alice, drive + "/", body=allprop) == {"/drive/": {}}


def test_a_put_beyond_the_quota_is_507_and_stores_nothing(
        limited: tuple[Live, requests.Session]) -> None:
    live, alice = limited
    drive = live.url + "/drive"
    assert alice.put(drive + "/keep.bin", data=b"k" * 40 * KIB).status_code == 201
    assert alice.put(drive + "/big.bin", data=b"b" * 30 * KIB).status_code == 507
    # replacing a file counts only the difference
    assert alice.put(drive + "/keep.bin", data=b"K" * 60 * KIB).status_code == 204
    assert alice.put(drive + "/keep.bin", data=b"X" * 70 * KIB).status_code == 507
    assert alice.get(drive + "/keep.bin").content == b"K" * 60 * KIB
    assert alice.head(drive + "/big.bin").status_code == 404
    assert _space(alice, drive + "/") == (60 * KIB, 4 * KIB)
    assert alice.delete(drive + "/keep.bin").status_code == 204
    assert _space(alice, drive + "/") == (0, QUOTA)
    assert alice.put(drive + "/big.bin", data=b"b" * 30 * KIB).status_code == 201


def test_a_chunked_put_beyond_the_quota_stops_is_507_and_is_discarded(
        limited: tuple[Live, requests.Session], caplog: pytest.LogCaptureFixture) -> None:
    live, alice = limited
    assert alice.put(live.url + "/drive/old.bin", data=b"o" * 8 * KIB).status_code == 201
    chunk = b"c" * 16 * KIB
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)) + b"0\r\n\r\n"
    for name in ("new.bin", "old.bin"):
        head = (f"PUT /drive/{name} HTTP/1.1\r\nHost: x\r\n{basic(*ALICE)}"
                "Transfer-Encoding: chunked\r\n\r\n").encode()
        reply = raw_request(live.port, head + body)
        assert reply.status == 507
        assert reply.closed  # the chunks left unread are never taken for a next request
    assert alice.head(live.url + "/drive/new.bin").status_code == 404
    assert alice.get(live.url + "/drive/old.bin").content == b"o" * 8 * KIB
    assert _space(alice, live.url + "/drive/") == (8 * KIB, QUOTA - 8 * KIB)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_copy_beyond_the_quota_is_507(limited: tuple[Live, requests.Session]) -> None:
    live, alice = limited
    drive = live.url + "/drive"
    assert alice.put(drive + "/a.bin", data=b"a" * 40 * KIB).status_code == 201
    reply = alice.request("COPY", drive + "/a.bin", headers={"Destination": drive + "/b.bin"})
    assert reply.status_code == 507
    assert alice.head(drive + "/b.bin").status_code == 404
    # into the mount from elsewhere (a streamed copy across mounts)
    assert alice.put(live.url + "/outside.bin", data=b"o" * 30 * KIB).status_code == 201
    reply = alice.request("COPY", live.url + "/outside.bin",
                          headers={"Destination": drive + "/o.bin"})
    assert reply.status_code == 507
    assert alice.head(drive + "/o.bin").status_code == 404


def test_a_tenant_quota_counts_every_mount(tmp_path: Path, store: dict) -> None:
    for live, alice in _serve(tmp_path, store, tenant_quota=QUOTA):
        assert alice.put(live.url + "/root.bin", data=b"r" * 40 * KIB).status_code == 201
        assert alice.put(live.url + "/drive/d.bin", data=b"d" * 20 * KIB).status_code == 201
        assert _space(alice, live.url + "/drive/") == (60 * KIB, 4 * KIB)
        assert alice.put(live.url + "/projects/p.bin", data=b"p" * 8 * KIB).status_code == 507
        assert alice.head(live.url + "/projects/p.bin").status_code == 404


def test_a_store_without_any_limit_reports_none(tmp_path: Path) -> None:
    for live, alice in _serve(tmp_path, moto.provider(moto.fresh_bucket())):
        assert alice.put(live.url + "/drive/f.bin", data=b"f").status_code == 201
        assert _space(alice, live.url + "/drive/") is None


def test_a_per_user_mount_quota_is_each_users_own(tmp_path: Path) -> None:
    data = tenants.two_tenants(tmp_path)
    data["tenants"]["acme"]["mounts"]["/home"]["quota"] = QUOTA
    with live_server(tenants.build(data)) as live:
        alice, bob = live.session(*ALICE), live.session("bob@acme.example", "bob-secret")
        assert alice.put(live.url + "/home/a.bin", data=b"a" * 60 * KIB).status_code == 201
        assert bob.put(live.url + "/home/b.bin", data=b"b" * 60 * KIB).status_code == 201
        assert _space(bob, live.url + "/home/") == (60 * KIB, 4 * KIB)


def test_an_announced_size_beyond_the_quota_is_refused_before_the_body(
        limited: tuple[Live, requests.Session]) -> None:
    live, alice = limited
    head = (f"PUT /drive/huge.iso HTTP/1.1\r\nHost: x\r\n{basic(*ALICE)}"
            f"Content-Length: {10 * 2**30}\r\n\r\n").encode()
    reply = raw_request(live.port, head + b"first bytes only", timeout=5)
    assert reply.status == 507  # answered without waiting for 10 GiB
    assert reply.closed  # the unread body cannot be taken for a next request
    assert alice.head(live.url + "/drive/huge.iso").status_code == 404


def test_quota_properties_also_come_from_wsgidavs_own_propfind(
        limited: tuple[Live, requests.Session]) -> None:
    """A PROPFIND with an If header is answered by wsgidav's generic handler."""
    live, alice = limited
    assert alice.put(live.url + "/drive/a.bin", data=b"a" * KIB).status_code == 201
    reply = alice.request("PROPFIND", live.url + "/drive/", data=QUOTA_PROPS,
                          headers={"Depth": "0", "If": "(Not <DAV:no-lock>)"})
    assert reply.status_code == 207
    root = ET.fromstring(reply.content)
    assert root.findtext(".//{DAV:}quota-used-bytes") == str(KIB)
    assert root.findtext(".//{DAV:}quota-available-bytes") == str(QUOTA - KIB)


def test_changes_by_another_tool_count_after_the_recount_period(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    data = tenants.two_tenants(tmp_path)
    data["tenants"]["acme"]["mounts"]["/drive"] = {
        "provider": tenants.local(tmp_path / "store"), "quota": QUOTA}
    data["tenants"]["acme"]["quota_recount_seconds"] = 0.5
    with live_server(tenants.build(data)) as live:
        alice = live.session(*ALICE)
        assert _space(alice, live.url + "/drive/") == (0, QUOTA)
        (tmp_path / "store" / "outside.bin").write_bytes(b"x" * 50 * KIB)
        time.sleep(0.6)
        assert _space(alice, live.url + "/drive/") == (50 * KIB, QUOTA - 50 * KIB)
        assert alice.put(live.url + "/drive/f.bin", data=b"f" * 20 * KIB).status_code == 507
