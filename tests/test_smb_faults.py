"""The file server going away and coming back, against an smbd of this module's own.

A share of a real smbd that the tests stop (SIGTERM, or SIGKILL as a crash), pause
(SIGSTOP: a hung server) and start again: the mount answers 503 meanwhile, for its
own subtree only, logs the outage once, and recovers by itself; nothing half-done
(an upload, a listing cut short) is ever visible.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests

from tests.support import samba, tenants
from tests.support.live import HREF, Live, dav, listed, live_server, unique

GLOBEX_LOGIN = ("dave@globex.example", "dave-secret")
MIB = 1024 * 1024
#: files of the folder whose listing the file server's crash cuts: its PROPFIND
#: takes ~1 s, nearly all of it the enumeration (~10 QUERY_DIRECTORY round trips)
MANY = 5000


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, samba.SambaServer]]:
    """globex's /flaky on an smbd of its own, which the tests stop and start, and its
    /steady on the session's smbd, which they leave alone."""
    smbd = samba.SambaServer().start()
    data = tenants.two_tenants(tmp_path_factory.mktemp("smb-flaky"))
    data["tenants"]["globex"]["mounts"] = {
        "/flaky": {"provider": {**samba.provider("globex", samba.GLOBEX), "port": smbd.port,
                                "retry_after_failure_s": 0.2, "timeout_s": 1}},
        "/steady": {"provider": samba.provider("globex", samba.GLOBEX)},
    }
    try:
        with live_server(tenants.build(data)) as live:
            yield live, smbd
    finally:
        smbd.remove()


def test_mount_recovers_when_the_file_server_is_back(
        flaky: tuple[Live, samba.SambaServer], caplog: pytest.LogCaptureFixture) -> None:
    live, smbd = flaky
    name = unique("kept") + ".txt"
    assert dav(live, GLOBEX_LOGIN, "PUT", f"/flaky/{name}", data=b"kept").status_code == 201
    smbd.stop()
    try:
        with caplog.at_level(logging.INFO):
            assert dav(live, GLOBEX_LOGIN, "PROPFIND", "/flaky/").status_code == 503
            assert dav(live, GLOBEX_LOGIN, "GET", f"/flaky/{name}").status_code == 503
            assert dav(live, GLOBEX_LOGIN, "PROPFIND", "/", headers={"Depth": "0"}).status_code \
                == 207
    finally:
        smbd.start()
    time.sleep(0.3)  # retry_after_failure_s
    assert dav(live, GLOBEX_LOGIN, "GET", f"/flaky/{name}").content == b"kept"
    assert "tenant globex: mount /flaky (smb) unavailable" in caplog.text
    assert samba.GLOBEX.password not in caplog.text


def test_a_hung_file_server_fails_its_mount_in_seconds(
        flaky: tuple[Live, samba.SambaServer], caplog: pytest.LogCaptureFixture) -> None:
    live, smbd = flaky
    assert dav(live, GLOBEX_LOGIN, "PROPFIND", "/flaky/").status_code == 207
    smbd.pause()  # accepts bytes, answers nothing
    try:
        caplog.set_level(logging.INFO)
        started = time.monotonic()
        reply = dav(live, GLOBEX_LOGIN, "PROPFIND", f"/flaky/{unique('hung')}/")
        waited = time.monotonic() - started
        assert reply.status_code == 503
        assert waited < 5  # timeout_s 1: an unanswered keep-alive after 1 s, given up at 2 s
        assert caplog.text.count("mount /flaky (smb) unavailable") == 1
        assert "Traceback" not in caplog.text
        assert dav(live, GLOBEX_LOGIN, "PROPFIND", "/", headers={"Depth": "0"}).status_code \
            == 207
    finally:
        smbd.resume()
    time.sleep(0.3)
    assert dav(live, GLOBEX_LOGIN, "PROPFIND", "/flaky/").status_code == 207


def test_upload_cut_by_the_file_server_leaves_no_file(
        flaky: tuple[Live, samba.SambaServer]) -> None:
    live, smbd = flaky
    name = unique("cut") + ".bin"

    def body() -> Iterator[bytes]:
        for i in range(64):
            if i == 24:  # 6 MiB sent: the first 4 MiB block has reached the file server
                _wait_for_a_file_of(smbd.share_dir("globex"), 4 * MIB)
                smbd.stop(kill=True)  # the file server dies mid-upload
            yield b"x" * 256 * 1024

    try:
        reply = dav(live, GLOBEX_LOGIN, "PUT", f"/flaky/{name}", data=body())
        assert reply.status_code == 503
    except requests.ConnectionError:
        pass  # the server may close the connection without reading the whole body
    finally:
        smbd.start()
    time.sleep(0.3)
    members = listed(live, GLOBEX_LOGIN, "/flaky/")
    assert name not in members and not any(m.startswith(".~") for m in members)
    assert dav(live, GLOBEX_LOGIN, "GET", f"/flaky/{name}").status_code == 404
    # the temp file is hidden from listings; nothing of the name was published
    assert not (smbd.share_dir("globex") / name).exists()


def _wait_for_a_file_of(folder: Path, size: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.stat().st_size >= size for p in folder.iterdir()):
            return
        time.sleep(0.02)
    raise AssertionError(f"no file of {size} bytes appeared in {folder}")


def test_listing_cut_by_the_file_server_is_503_and_recovers_whole(
        flaky: tuple[Live, samba.SambaServer], caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    """smbd killed while it enumerates a large folder: that PROPFIND answers 503 (no
    207 pretending to be the whole folder), the rest of the tenant keeps answering,
    and once smbd is back the same PROPFIND lists every file, nothing kept from the
    cut listing."""
    live, smbd = flaky
    folder = unique("many")
    disk = smbd.share_dir("globex") / folder
    names = _files_on_disk(disk, MANY)
    caplog.set_level(logging.INFO)
    try:
        with ThreadPoolExecutor(1) as pool:
            cut = pool.submit(dav, live, GLOBEX_LOGIN, "PROPFIND", f"/flaky/{folder}/")
            _wait_until_enumerating(smbd, disk)
            smbd.pause()  # a still picture: the listing's handle open, part of it read
            assert any(offset > 0 for offset in smbd.offsets_open_on(disk)) and not cut.done()
            smbd.stop(kill=True)  # the file server dies mid-listing
            killed = time.monotonic()
            reply = cut.result()
        assert reply.status_code == 503, reply.text[:500]
        assert time.monotonic() - killed < 5
        assert "file-" not in reply.text  # not one member of the cut listing
        assert dav(live, GLOBEX_LOGIN, "PROPFIND", f"/flaky/{folder}/").status_code == 503
        # the rest of the tenant answers meanwhile: its root, and a mount on another smbd
        assert listed(live, GLOBEX_LOGIN, "/") >= {"flaky", "steady"}
        other = unique("during-outage") + ".txt"
        assert dav(live, GLOBEX_LOGIN, "PUT", f"/steady/{other}", data=b"x").status_code == 201
        assert other in listed(live, GLOBEX_LOGIN, "/steady/")
        # meanwhile someone changes the folder on the file server itself
        (disk / names.pop()).unlink()
        (disk / "restored.txt").write_bytes(b"r")
        names.add("restored.txt")
    finally:
        smbd.stop(kill=True)  # nothing left if an assertion came before the kill
        smbd.start()
    back = time.monotonic()
    while (reply := dav(live, GLOBEX_LOGIN, "PROPFIND", f"/flaky/{folder}/")).status_code == 503:
        assert time.monotonic() - back < 10, "the mount did not recover"
        time.sleep(0.05)
    # the first answer after the outage is the whole folder as it is now
    assert reply.status_code == 207
    assert _members(reply.text, f"/flaky/{folder}/") == names
    outage_lines = [r for r in caplog.records if "mount /flaky (smb)" in r.getMessage()]
    assert [r.getMessage().split(": ", 2)[1] for r in outage_lines] == \
        ["mount /flaky (smb) unavailable", "mount /flaky (smb) available again"]
    assert all(r.getMessage().startswith("tenant globex: ") for r in outage_lines)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert "Traceback" not in caplog.text + capfd.readouterr().err


def _files_on_disk(folder: Path, count: int) -> set[str]:
    """``count`` empty files made straight in the share's folder on disk: their names."""
    folder.mkdir()
    shutil.chown(folder, user=samba.GLOBEX.user)
    names = {f"file-{i:05}.txt" for i in range(count)}
    for name in names:
        (folder / name).touch()
    return names


def _wait_until_enumerating(smbd: samba.SambaServer, folder: Path, reads: int = 3,
                            timeout: float = 10.0) -> None:
    """Until smbd, enumerating ``folder`` for a client, has read it up to ``reads``
    different places: several answers into the listing (it reads on each request)."""
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while len(seen) < reads:
        if time.monotonic() > deadline:
            raise AssertionError(f"smbd read {folder} at {len(seen)} places only")
        seen.update(offset for offset in smbd.offsets_open_on(folder) if offset > 0)
        time.sleep(0.001)


def _members(multistatus: str, folder: str) -> set[str]:
    hrefs = {unquote(h) for h in HREF.findall(multistatus)}
    return {h[len(folder):].rstrip("/") for h in hrefs if h != folder}
