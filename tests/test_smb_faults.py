"""The file server going away and coming back, against an smbd of this module's own.

A share of a real smbd that the tests stop (SIGTERM, or SIGKILL as a crash), pause
(SIGSTOP: a hung server) and start again: the mount answers 503 meanwhile, for its
own subtree only, logs the outage once, and recovers by itself; nothing half-done
(an upload) is ever visible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import samba, tenants
from tests.support.live import Live, dav, listed, live_server, unique

GLOBEX_LOGIN = ("dave@globex.example", "dave-secret")
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, samba.SambaServer]]:
    """globex's /flaky on an smbd of its own, which the tests stop and start."""
    smbd = samba.SambaServer().start()
    data = tenants.two_tenants(tmp_path_factory.mktemp("smb-flaky"))
    data["tenants"]["globex"]["mounts"] = {"/flaky": {"provider": {
        **samba.provider("globex", samba.GLOBEX), "port": smbd.port,
        "retry_after_failure_s": 0.2, "timeout_s": 1}}}
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
