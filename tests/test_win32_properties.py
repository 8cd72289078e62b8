"""Properties Windows Explorer sets (Win32*) and any dead property read back as set,
by name and in allprop, after MOVE, COPY and a restart, on a local and an S3 mount."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.support import moto, tenants
from tests.support.live import Live, live_server

MS = "urn:schemas-microsoft-com:"
#: what the Windows mini-redirector sends after a copy into the drive
WIN32 = {
    "Win32FileAttributes": "00000023",  # read-only, hidden, archive
    "Win32CreationTime": "Mon, 02 Mar 2026 10:11:12 GMT",
    "Win32LastAccessTime": "Tue, 03 Mar 2026 10:11:12 GMT",
    "Win32LastModifiedTime": "Wed, 04 Mar 2026 10:11:12 GMT",
}
DEAD_NS, DEAD_NAME, DEAD_VALUE = "urn:example:tags", "colour", "grün"
ALL = {(MS, name): value for name, value in WIN32.items()} | {(DEAD_NS, DEAD_NAME): DEAD_VALUE}

PROPPATCH = (
    '<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" '
    f'xmlns:Z="{MS}" xmlns:T="{DEAD_NS}"><D:set><D:prop>'
    + "".join(f"<Z:{name}>{value}</Z:{name}>" for name, value in WIN32.items())
    + f"<T:{DEAD_NAME}>{DEAD_VALUE}</T:{DEAD_NAME}>"
    + "</D:prop></D:set></D:propertyupdate>"
)
NAMED = (
    f'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="{MS}" xmlns:T="{DEAD_NS}">'
    "<D:prop>" + "".join(f"<Z:{name}/>" for name in WIN32) + f"<T:{DEAD_NAME}/>"
    "</D:prop></D:propfind>"
)
ALLPROP = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
ALICE = ("alice@acme.example", "alice-secret")


def _config(base: Path, mount: dict) -> dict:
    data = tenants.two_tenants(base)
    data["tenants"]["acme"]["mounts"]["/drive"] = {"provider": mount}
    return data


@pytest.fixture(params=["local", "s3"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> dict:
    if request.param == "local":
        (tmp_path / "drive").mkdir()
        return _config(tmp_path, tenants.local(tmp_path / "drive"))
    bucket = moto.fresh_bucket()
    return _config(tmp_path, moto.provider(bucket))


@contextmanager
def serving(config: dict) -> Iterator[tuple[Live, requests.Session]]:
    with live_server(tenants.build(config)) as live:
        yield live, live.session(*ALICE)


def _found(session: requests.Session, url: str, body: str) -> dict[tuple[str, str], str]:
    """The 200 properties of a Depth 0 PROPFIND: {(namespace, name): text}."""
    reply = session.request("PROPFIND", url, data=body, headers={"Depth": "0"})
    assert reply.status_code == 207, reply.text
    found = {}
    for propstat in ET.fromstring(reply.content).iter("{DAV:}propstat"):
        if "200" not in propstat.findtext("{DAV:}status", ""):
            continue
        for prop in propstat.find("{DAV:}prop"):
            namespace, _, name = prop.tag[1:].partition("}")
            found[(namespace, name)] = prop.text
    return found


def _assert_read_back(session: requests.Session, url: str) -> None:
    for body in (NAMED, ALLPROP):
        found = _found(session, url, body)
        assert {key: found.get(key) for key in ALL} == ALL, body


def _set(session: requests.Session, url: str) -> None:
    reply = session.request("PROPPATCH", url, data=PROPPATCH.encode(),
                            headers={"User-Agent": "Microsoft-WebDAV-MiniRedir/10.0.19045",
                                     "Content-Type": "text/xml; charset=utf-8"})
    assert reply.status_code == 207
    assert reply.text.count("200 OK") >= 1 and "424" not in reply.text and "403" not in reply.text


def test_properties_read_back_as_set_after_move_copy_and_restart(config: dict) -> None:
    with serving(config) as (live, alice):
        drive = live.url + "/drive"
        assert alice.put(drive + "/doc.txt", data=b"hello").status_code == 201
        assert alice.request("MKCOL", drive + "/folder").status_code == 201
        _set(alice, drive + "/doc.txt")
        _set(alice, drive + "/folder")
        _assert_read_back(alice, drive + "/doc.txt")
        _assert_read_back(alice, drive + "/folder")
        assert alice.request("MOVE", drive + "/doc.txt",
                             headers={"Destination": drive + "/moved.txt"}).status_code == 201
        assert alice.request("COPY", drive + "/moved.txt",
                             headers={"Destination": drive + "/copied.txt"}).status_code == 201
        assert alice.request("MOVE", drive + "/folder",
                             headers={"Destination": drive + "/renamed"}).status_code == 201
    with serving(config) as (live, alice):  # a fresh server over the same data_dir
        for name in ("moved.txt", "copied.txt", "renamed"):
            _assert_read_back(alice, f"{live.url}/drive/{name}")
        assert _found(alice, live.url + "/drive/moved.txt", NAMED)  # still there
        assert alice.head(live.url + "/drive/doc.txt").status_code == 404


def test_win32_last_modified_time_also_sets_the_file_time(config: dict) -> None:
    with serving(config) as (live, alice):
        url = live.url + "/drive/dated.txt"
        assert alice.put(url, data=b"x").status_code == 201
        _set(alice, url)
        found = _found(alice, url, ALLPROP)
        assert found[("DAV:", "getlastmodified")] == WIN32["Win32LastModifiedTime"]


def test_a_removed_win32_property_is_gone(config: dict) -> None:
    with serving(config) as (live, alice):
        url = live.url + "/drive/plain.txt"
        assert alice.put(url, data=b"x").status_code == 201
        _set(alice, url)
        remove = (f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="{MS}">'
                  "<D:remove><D:prop><Z:Win32FileAttributes/></D:prop></D:remove>"
                  "</D:propertyupdate>")
        assert alice.request("PROPPATCH", url, data=remove).status_code == 207
        found = _found(alice, url, NAMED)
        assert (MS, "Win32FileAttributes") not in found
        assert found[(MS, "Win32CreationTime")] == WIN32["Win32CreationTime"]
