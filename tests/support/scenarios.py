"""Scenarios every object store runs, each written once.

A store's test module (test_s3, test_gcs, test_azure, test_swift) keeps what is
its own - how to build a mount, how its emulator goes down and comes back, how
to see the requests a mount sends, what an aborted upload may leave in the
store - and hands that to the scenarios here, one test per scenario, so that a
failure still names the store and what broke.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import requests

from mosaic.core.errors import MountUnavailableError
from mosaic.providers.transfers import StreamedWriter
from tests.support import moto, tenants
from tests.support.live import Live, live_server
from tests.test_litmus import SUITES, SUMMARY, run_litmus

ALICE = ("alice@acme.example", "alice-secret")
BOB = ("bob@acme.example", "bob-secret")
MIB = 1024 * 1024
#: what Windows' WebDAV client sets as Win32LastModifiedTime, and the same in seconds
WINDOWS_TIME, WINDOWS_TIMESTAMP = "Wed, 01 Jan 2020 10:00:00 GMT", 1577872800.0
LITMUS_PLACES = ("tenant root", "mount")

#: called with (method, target) before each request a mount sends its store; the
#: target is whatever names the request in that store's client (URL, container)
RequestHook = Callable[[str, str], None]
#: writes an object straight to the store, as another tool would: (key, content)
PutElsewhere = Callable[[str, bytes], None]


def nothing() -> None:
    """The default of a hook a store does not need."""


def propfind(session: requests.Session, url: str) -> int:
    return session.request("PROPFIND", url, headers={"Depth": "1"}, timeout=60).status_code


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)


# -- what a store tells the scenarios ---------------------------------------------------


@dataclass(frozen=True)
class Outage:
    """How a test takes its store down (stop, kill, the proxy alone) and back up."""

    down: Callable[[], None]
    up: Callable[[], None]


@dataclass(frozen=True)
class Traffic:
    """How to see the requests a mount (``fs``) sends to its store."""

    watch: Callable[[Any, RequestHook], None]
    is_listing: Callable[[str, str], bool]


def watch_store_calls(fs: Any, hook: RequestHook) -> None:
    """For stores whose every request goes through ``fs._store.call(method, ...)``."""
    call = fs._store.call

    def watched(method: str, *args: Any, **kwargs: Any) -> Any:
        target = args[0] if args and isinstance(args[0], str) else ""
        hook(method, target)
        return call(method, *args, **kwargs)

    fs._store.call = watched


def record_requests(fs: Any, traffic: Traffic) -> list[str]:
    """The methods of the requests ``fs`` sends from now on, in order."""
    methods: list[str] = []
    traffic.watch(fs, lambda method, _target: methods.append(method))
    return methods


@dataclass(frozen=True)
class CutUpload:
    """What the cut-off upload scenario needs to know of a store.

    Each PUT sends ``before_mib`` (more than one part: an upload is open in the
    store), the store goes down, and ``after_mib`` more follow.
    """

    before_mib: int
    after_mib: int
    #: checks what the aborted uploads left in the store, once it is back
    leftovers: Callable[[], None]
    #: true once the parts sent before the outage have reached the store
    parts_stored: Callable[[], Any] = lambda: True
    #: before the outage: give the store time to persist the previous version
    settle: Callable[[], None] = nothing
    #: checks the store after the next write (which sweeps what aborts left)
    after_next_write: Callable[[], None] = nothing
    #: a second PUT, of a new file, is cut off at the same time
    new_file_too: bool = True


# -- the mount on a store a test takes down -----------------------------------------------


@dataclass
class Cloud:
    """acme's live server with /cloud on ``container`` of a store that ``outage`` controls."""

    live: Live
    outage: Outage
    container: str

    def url(self, path: str = "") -> str:
        return f"{self.live.url}/cloud/{path}"


@contextmanager
def cloud_server(base: Path, provider: dict[str, Any], outage: Outage,
                 container: str) -> Iterator[Cloud]:
    """The two-tenant setup with acme's /cloud on ``provider``."""
    data = tenants.two_tenants(base)
    # No listing cache: every request must reach the store to see it go down.
    data["tenants"]["acme"]["mounts"]["/cloud"] = {
        "provider": {**provider, "listing_cache_seconds": 0}}
    with live_server(tenants.build(data)) as live:
        yield Cloud(live, outage, container)


# -- faults -------------------------------------------------------------------------------


def store_down_is_503_for_that_mount_only_and_recovers(cloud: Cloud) -> None:
    alice = cloud.live.session(*ALICE)
    assert alice.put(cloud.url("kept.txt"), data=b"kept").status_code == 201
    assert propfind(alice, cloud.url()) == 207
    cloud.outage.down()
    try:
        started = time.monotonic()
        assert propfind(alice, cloud.url()) == 503
        assert time.monotonic() - started < 10  # a few quick retries, then 503
        assert alice.get(cloud.url("kept.txt")).status_code == 503
        assert propfind(alice, cloud.live.url + "/") == 207  # the rest of the tenant is served
        assert alice.put(cloud.live.url + "/local.txt", data=b"x").status_code == 201
    finally:
        cloud.outage.up()
    assert propfind(alice, cloud.url()) == 207  # no restart, no reload
    assert alice.get(cloud.url("kept.txt")).content == b"kept"


def puts_cut_off_by_the_outage_leave_the_previous_version_and_no_new_file(
        cloud: Cloud, cut: CutUpload) -> None:
    """PUTs in flight when the store goes down: one replacing a file (its previous
    version stays) and, unless the store opts out, one of a new file (nothing
    appears)."""
    alice, bob = cloud.live.session(*ALICE), cloud.live.session(*BOB)
    assert alice.put(cloud.url("f.bin"), data=b"previous").status_code == 201
    cut.settle()
    sent, down = threading.Event(), threading.Event()
    statuses: dict[str, int] = {}

    def new_file_body() -> Iterator[bytes]:
        yield os.urandom(cut.before_mib * MIB)
        sent.set()
        down.wait(60)
        yield os.urandom(cut.after_mib * MIB)

    def replacing_body() -> Iterator[bytes]:
        yield os.urandom(cut.before_mib * MIB)
        sent.wait(60)
        eventually(cut.parts_stored)
        cloud.outage.down()  # with no goodbye to the open connections
        down.set()
        yield os.urandom(cut.after_mib * MIB)

    def put_new() -> None:
        statuses["new"] = bob.put(cloud.url("new.bin"), data=new_file_body()).status_code

    other = threading.Thread(target=put_new)
    if cut.new_file_too:
        other.start()
    else:
        sent.set()  # no other PUT to wait for
    try:
        statuses["replace"] = alice.put(cloud.url("f.bin"), data=replacing_body()).status_code
        if cut.new_file_too:
            other.join(120)
    finally:
        cloud.outage.up()
    assert down.is_set()
    # the store went away: the mount is unavailable
    assert statuses == ({"replace": 503, "new": 503} if cut.new_file_too else {"replace": 503})
    assert alice.get(cloud.url("f.bin")).content == b"previous"
    assert alice.get(cloud.url("new.bin")).status_code == 404
    cut.leftovers()
    assert alice.put(cloud.url("f.bin"), data=b"next").status_code == 204
    cut.after_next_write()


def cut_off_put(cloud: Cloud, path: str, headers: str, body: bytes) -> None:
    """A PUT of ``path`` under /cloud whose client sends ``body`` and is gone."""
    auth = base64.b64encode(":".join(ALICE).encode()).decode()
    with socket.create_connection(("127.0.0.1", cloud.live.port)) as raw:
        raw.sendall(f"PUT /cloud/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Basic {auth}\r\n{headers}\r\n".encode())
        raw.sendall(body)


def sized_put_is_one_streamed_request_and_a_cut_off_one_leaves_the_previous_version(
        cloud: Cloud, monkeypatch: pytest.MonkeyPatch,
        no_parts_left: Callable[[], bool]) -> None:
    """A PUT whose size is announced (Content-Length), more than a part and
    within the store's limit for one request, is one streamed request; cut off
    by its client, the store takes nothing and the previous version stays."""
    outcomes: list[str] = []  # each streamed request: stored, or how it failed
    send = StreamedWriter._send

    def recording(writer: StreamedWriter) -> None:
        send(writer)
        outcomes.append(type(writer._error).__name__ if writer._error else "stored")

    monkeypatch.setattr(StreamedWriter, "_send", recording)
    alice = cloud.live.session(*ALICE)
    data = os.urandom(12 * MIB)  # more than a part (8 MiB)
    assert alice.put(cloud.url("f.bin"), data=data).status_code == 201
    assert outcomes == ["stored"]
    assert no_parts_left()
    assert alice.get(cloud.url("f.bin")).content == data
    cut_off_put(cloud, "f.bin", f"Content-Length: {15 * MIB}\r\n", os.urandom(10 * MIB))
    eventually(lambda: len(outcomes) == 2)  # the request to the store was cut off
    assert outcomes[1] != "stored"
    assert alice.get(cloud.url("f.bin")).content == data
    assert alice_listing(alice, cloud) == ["f.bin"]
    assert no_parts_left()


def alice_listing(alice: requests.Session, cloud: Cloud) -> list[str]:
    """The names /cloud lists, as a client sees them."""
    answer = alice.request("PROPFIND", cloud.url(), headers={"Depth": "1"}, timeout=60)
    assert answer.status_code == 207
    hrefs = [element.text or "" for element in ElementTree.fromstring(answer.content).iter()
             if element.tag == "{DAV:}href"]
    return sorted(href.rstrip("/").rsplit("/", 1)[-1] for href in hrefs
                  if href.rstrip("/") != "/cloud")


def outage_between_listing_pages_then_recovery(fs: Any, outage: Outage, traffic: Traffic,
                                               settle: Callable[[], None] = nothing) -> None:
    """``fs``: a mount without listing cache on the store ``outage`` controls."""
    for name in "abcdef":
        fs.touch(name)
    settle()
    fs._store.page_size = 2  # three pages
    pages: list[str] = []

    def down_before_the_second_page(method: str, target: str) -> None:
        if traffic.is_listing(method, target):
            pages.append(method)
            if len(pages) == 2:
                outage.down()

    traffic.watch(fs, down_before_the_second_page)
    try:
        with pytest.raises(MountUnavailableError, match="unreachable"):
            fs.ls("")
    finally:
        outage.up()
    assert sorted(fs.ls("", detail=False)) == list("abcdef")
    assert len(pages) >= 5  # the three pages again after the restart


# -- what a file browser sees ---------------------------------------------------------------


def windows_set_modification_time_survives_in_metadata(
        cloud: Cloud, stored_time: Callable[[str], float], listings_carry_it: bool,
        files: dict[str, bytes] | None = None) -> None:
    """``stored_time(key)``: the time in the object's metadata, read from the store."""
    alice = cloud.live.session(*ALICE)
    body = ('<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" '
            'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32LastModifiedTime>'
            f'{WINDOWS_TIME}</Z:Win32LastModifiedTime></D:prop></D:set></D:propertyupdate>')
    asked = '<D:propfind xmlns:D="DAV:"><D:prop><D:getlastmodified/></D:prop></D:propfind>'
    for name, data in (files or {"dated.txt": b"d"}).items():
        assert alice.put(cloud.url(name), data=data).status_code == 201
        answer = alice.request("PROPPATCH", cloud.url(name), data=body,
                               headers={"Content-Type": "text/xml",
                                        "User-Agent": "Microsoft-WebDAV-MiniRedir/10.0.19045"})
        assert answer.status_code == 207 and "200 OK" in answer.text
        assert stored_time(name) == WINDOWS_TIMESTAMP
        assert alice.get(cloud.url(name)).content == data  # content untouched
        found = alice.request("PROPFIND", cloud.url(name), headers={"Depth": "0"}, data=asked)
        assert WINDOWS_TIME in found.text
        if listings_carry_it:  # no request per entry needed to show it
            listed = alice.request("PROPFIND", cloud.url(), headers={"Depth": "1"}, data=asked)
            assert WINDOWS_TIME in listed.text


def folders_other_tools_made_without_markers_are_listed_once(
        fs: Any, put_elsewhere: PutElsewhere) -> None:
    for key in ("a/x", "a/y/z", "a/y", "b"):
        put_elsewhere(key, b"1")
    assert sorted((e["name"], e["type"]) for e in fs.ls("")) == [
        ("a", "directory"), ("b", "file")]
    # "a/y" is both a file and a prefix: listed once, as the file (as info says)
    assert sorted((e["name"], e["type"]) for e in fs.ls("a")) == [
        ("a/x", "file"), ("a/y", "file")]
    assert fs.info("a/y")["type"] == "file"
    assert time.time() - fs.info("a/x")["mtime"] < 3600


def warm_listing_costs_no_request_and_own_writes_show_at_once(
        fs: Any, traffic: Traffic, put_elsewhere: PutElsewhere) -> None:
    """``fs``: a mount whose listing cache lives one second."""
    fs.mkdir("docs")
    fs.touch("docs/a")
    methods = record_requests(fs, traffic)
    fs.info("docs")
    assert [e["name"] for e in fs.ls("docs")] == ["docs/a"]
    cold = len(methods)
    fs.info("docs")
    fs.ls("docs")
    assert len(methods) == cold  # warm: answered from the mount's cache
    fs.touch("docs/b")  # our own write: visible at once
    assert sorted(fs.ls("docs", detail=False)) == ["docs/a", "docs/b"]
    put_elsewhere("docs/c", b"other tool")
    assert "docs/c" not in fs.ls("docs", detail=False)  # another tool's, within the lifetime
    time.sleep(1.1)
    assert "docs/c" in fs.ls("docs", detail=False)  # ... and after it


def get_serves_a_file_another_tool_replaced_whole_and_new(
        base: Path, provider: dict[str, Any], put_elsewhere: PutElsewhere,
        store_class: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GET within the listing cache's lifetime of a file another tool has
    since replaced: the new content, with its own length and ETag (a cached
    size with a fresh body would cut the download or send garbage after it),
    for one HEAD and one GET of the store."""
    data = tenants.two_tenants(base)
    data["tenants"]["acme"]["mounts"]["/cloud"] = {
        "provider": {**provider, "listing_cache_seconds": 600}}
    with live_server(tenants.build(data)) as live:
        alice = live.session(*ALICE)
        url = f"{live.url}/cloud/report.txt"
        assert alice.put(url, data=b"first version").status_code == 201
        first = alice.get(url)  # its size and ETag are now in the cache
        assert first.content == b"first version"
        put_elsewhere("report.txt", b"the second, longer version")
        calls: list[str] = []
        for name in ("head", "stream"):
            original = getattr(store_class, name)
            monkeypatch.setattr(store_class, name, _recorded(name, original, calls))
        again = alice.get(url)
        assert calls == ["head", "stream"]
        assert again.content == b"the second, longer version"
        assert again.headers["Content-Length"] == str(len(again.content))
        assert again.headers["ETag"] != first.headers["ETag"]


def _recorded(name: str, method: Callable[..., Any], calls: list[str]) -> Callable[..., Any]:
    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return method(*args, **kwargs)
    return recording


# -- moves ----------------------------------------------------------------------------------


def folder_move_copies_everything_or_rolls_back(
        fs: Any, stored_names: Callable[[], list[str]] | None = None) -> None:
    """``stored_names``: every object name, straight from the store (checked if given)."""
    fs.makedirs("src/empty")
    for i in range(30):
        fs.touch(f"src/f{i}")
    before = sorted(fs.ls("src", detail=False))
    stored_before = stored_names() if stored_names else []
    copy, count = fs._store.copy, []

    def failing(src: str, dst: str, metadata: Any = None) -> None:
        count.append(src)
        if len(count) == 12:
            raise ConnectionRefusedError("store went away")
        copy(src, dst, metadata)

    fs._store.copy = failing
    with pytest.raises(MountUnavailableError):
        fs.mv("src", "dst")
    assert not fs.exists("dst")  # what was copied is gone again
    assert sorted(fs.ls("src", detail=False)) == before  # the source is whole
    if stored_names:
        assert stored_names() == stored_before  # no copy left behind in the store
    fs._store.copy = copy
    fs.mv("src", "dst")
    assert not fs.exists("src")
    assert sorted(fs.ls("dst", detail=False)) == [n.replace("src", "dst", 1) for n in before]
    assert fs.isdir("dst/empty")
    if stored_names:
        assert stored_names() == [n.replace("src", "dst", 1) for n in stored_before]


def moves_between_a_mount_and_an_s3_mount(base: Path, provider: dict[str, Any]) -> None:
    """Folders and files, there and back, between /store on ``provider`` and /s3."""
    data = tenants.two_tenants(base)
    mounts = data["tenants"]["acme"]["mounts"]
    mounts["/store"] = {"provider": provider}
    mounts["/s3"] = {"provider": moto.provider(moto.fresh_bucket())}
    payload = os.urandom(11 * MIB + 7)  # several parts on every store
    with live_server(tenants.build(data)) as live:
        alice = live.session(*ALICE)
        url = live.url
        assert alice.request("MKCOL", url + "/store/tree/").status_code == 201
        assert alice.request("MKCOL", url + "/store/tree/empty/").status_code == 201
        assert alice.put(url + "/store/tree/big.bin", data=payload).status_code == 201
        assert alice.put(url + "/store/tree/small.txt", data=b"small").status_code == 201
        for there, back in (("/store/tree", "/s3/moved"), ("/s3/moved", "/store/back")):
            _move(alice, url + there, url + back)
            assert alice.get(url + back + "/big.bin").content == payload
            assert alice.get(url + back + "/small.txt").content == b"small"
            assert propfind(alice, url + back + "/empty/") == 207
        for there, back in (("/store/back/big.bin", "/s3/big.bin"),
                            ("/s3/big.bin", "/store/big.bin")):
            _move(alice, url + there, url + back)
            assert alice.get(url + back).content == payload


def _move(session: requests.Session, source: str, destination: str) -> None:
    moved = session.request("MOVE", source, headers={"Destination": destination})
    assert moved.status_code == 201, (source, moved.status_code, moved.text)
    assert session.request("PROPFIND", source, headers={"Depth": "0"}).status_code == 404


# -- litmus ---------------------------------------------------------------------------------


@contextmanager
def litmus_server(base: Path, fresh_provider: Callable[[str], dict[str, Any]]) -> Iterator[Live]:
    """globex's root on the store, and acme's /cloud mount on it;
    ``fresh_provider(prefix)``: a provider spec on a fresh container."""
    data = tenants.two_tenants(base)
    data["tenants"]["globex"]["root"] = fresh_provider("root")
    data["tenants"]["acme"]["mounts"]["/cloud"] = {"provider": fresh_provider("")}
    with live_server(tenants.build(data)) as live:
        yield live


def litmus_passes(server: Live, where: str, workdir: Path) -> None:
    """Every litmus suite, in full and without a warning, on one of LITMUS_PLACES."""
    url, login = {"tenant root": (server.url + "/", "alice@globex.example"),
                  "mount": (server.url + "/cloud/", "alice@acme.example")}[where]
    output = run_litmus(url, login, "alice-secret", str(workdir))
    summaries = {m.group(1): m.groups()[1:] for m in SUMMARY.finditer(output)}
    assert set(summaries) == set(SUITES), output
    for suite, (run, passed, failed) in summaries.items():
        assert failed == "0" and run == passed, f"{suite}: {output}"
    assert "WARNING" not in output, output
