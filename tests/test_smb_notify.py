"""Outside changes at once: SMB2 CHANGE_NOTIFY on the folders a mount listed lately.

A change made on the file server by another client (Samba's own ``smbclient``)
must show in the next PROPFIND within about a second, although the mount keeps
listings for a minute (``listing_cache_seconds: 60``). Only folders listed
lately are watched (their directory handles are visible on the server:
``smbstatus -L``), and the watcher's threads end with the mount (config reload)
and with the connection (smbd restarted), after which the mount watches again.
"""

from __future__ import annotations

import gc
import logging
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import yaml

from mosaic import providers
from mosaic.config.holder import ConfigHolder
from mosaic.config.loader import load_config
from mosaic.core.capabilities import BuildContext
from mosaic.server import make_server
from tests.support import samba, tenants
from tests.support.live import Live

LOGIN = ("alice@acme.example", "alice-secret")
CACHE_S = 60  # far longer than any test: only a notification can explain a fresh listing
SOON_S = 1.5  # "within about a second"
RESPONSE = re.compile(r"<(?:\w+:)?response>(.*?)</(?:\w+:)?response>", re.S)
HREF = re.compile(r"<(?:\w+:)?href>([^<]+)</(?:\w+:)?href>")
LENGTH = re.compile(r"<(?:\w+:)?getcontentlength>(\d+)<")


@pytest.fixture(scope="module")
def smbd() -> Iterator[samba.SambaServer]:
    """An smbd of this module's own: its port names the threads of its connections,
    and the restart test stops it."""
    server = samba.SambaServer().start()
    try:
        yield server
    finally:
        server.remove()


def fresh_folder(smbd: samba.SambaServer) -> str:
    name = f"n-{secrets.token_hex(5)}"
    folder = smbd.share_dir("conformance") / name
    folder.mkdir()
    shutil.chown(folder, user=samba.ACME.user)
    return name


def outside(smbd: samba.SambaServer, commands: str) -> None:
    """Another client of the file server (Samba's smbclient), outside Mosaic."""
    done = subprocess.run(
        ["smbclient", "//127.0.0.1/conformance", "-p", str(smbd.port), "-m", "SMB3",
         "-U", f"{samba.ACME.user}%{samba.ACME.password}", "-c", commands],
        capture_output=True, timeout=30)
    said = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0 and "NT_STATUS_" not in said, said


def provider(smbd: samba.SambaServer, folder: str, **extra: Any) -> dict[str, Any]:
    return {**samba.provider("conformance", samba.ACME, path=folder), "port": smbd.port,
            "listing_cache_seconds": CACHE_S, **extra}


def open_on_server(smbd: samba.SambaServer, folder: str) -> set[str]:
    """What clients hold open in ``folder`` of the share (``smbstatus -L``)."""
    done = subprocess.run(["smbstatus", "-s", str(smbd.conf), "-L"], capture_output=True,
                          text=True, timeout=30, check=True)
    share = str(smbd.share_dir("conformance"))
    held = {line.split(share, 1)[1].split()[0] for line in done.stdout.splitlines()
            if share in line}
    return {name for name in held if name == folder or name.startswith(folder + "/")}


def smb_threads(smbd: samba.SambaServer) -> list[str]:
    """This module's SMB threads: connection receivers to its smbd, the watchers of
    its mounts (all at /watched; other modules' mounts may watch meanwhile)."""
    return sorted(t.name for t in threading.enumerate()
                  if t.name.endswith(f":{smbd.port}")
                  or (t.name.startswith("mosaic-smb-notify") and "mount /watched " in t.name))


@contextmanager
def serving(base: Path, mounts: dict[str, Any]) -> Iterator[tuple[Live, Path]]:
    """acme with ``mounts``, served in-process from a config file that a test may
    rewrite and reload (the reload path a SIGHUP or a file change takes)."""
    data = tenants.two_tenants(base)
    data["tenants"]["acme"]["mounts"].update(mounts)
    config = base / "mosaic.yaml"
    config.write_text(yaml.safe_dump(data))
    holder = ConfigHolder(config, load_config(config))
    server = make_server(holder)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="mosaic-test-server", daemon=True)
    thread.start()
    try:
        yield Live(f"http://127.0.0.1:{server.bind_addr[1]}", holder, server.bind_addr[1]), config
    finally:
        server.stop()
        thread.join(timeout=10)
        # the app outlives its server here: a reload without the mounts drops their
        # filesystems (handles, connections, threads), as in a server that runs on
        data["tenants"]["acme"]["mounts"] = {}
        config.write_text(yaml.safe_dump(data))
        holder.reload()
        gc.collect()


def listing(live: Live, folder: str) -> dict[str, int | None]:
    """PROPFIND Depth 1 of ``folder``: member name -> content length (None: a folder)."""
    reply = requests.request("PROPFIND", live.url + folder, auth=LOGIN,
                             headers={"Depth": "1"}, timeout=30)
    assert reply.status_code == 207, reply.text
    members: dict[str, int | None] = {}
    for response in RESPONSE.findall(reply.text):
        href = unquote(HREF.search(response).group(1))  # type: ignore[union-attr]
        if href != folder:
            length = LENGTH.search(response)
            members[href[len(folder):].rstrip("/")] = int(length.group(1)) if length else None
    return members


def seconds_until(check: Callable[[], bool], limit: float = 10.0) -> float:
    """How long until ``check()`` holds (polled every 50 ms), or ``limit``."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    return limit


def put(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_outside_changes_show_in_the_next_propfind_within_a_second(
        smbd: samba.SambaServer, tmp_path: Path) -> None:
    folder = fresh_folder(smbd)
    with serving(tmp_path, {"/watched": {"provider": provider(smbd, folder)}}) as (live, _):
        requests.request("MKCOL", live.url + "/watched/sub", auth=LOGIN, timeout=30)
        assert listing(live, "/watched/") == {"sub": None}
        assert listing(live, "/watched/sub/") == {}
        steps = [
            (f"cd {folder}; put {put(tmp_path / 'a', b'abc')} new.txt",
             "/watched/", lambda seen: seen.get("new.txt") == 3),
            (f"cd {folder}; put {put(tmp_path / 'b', b'changed!')} new.txt",
             "/watched/", lambda seen: seen.get("new.txt") == 8),
            (f"cd {folder}; del new.txt", "/watched/", lambda seen: "new.txt" not in seen),
            (f"cd {folder}/sub; mkdir made-outside", "/watched/sub/",
             lambda seen: seen == {"made-outside": None}),
            (f"cd {folder}/sub; rename made-outside renamed", "/watched/sub/",
             lambda seen: seen == {"renamed": None}),
        ]
        for command, where, shows in steps:
            before = listing(live, where)
            assert not shows(before)  # and cached from here on, for a minute
            outside(smbd, command)
            waited = seconds_until(lambda where=where, shows=shows: shows(listing(live, where)))
            assert waited < SOON_S, (command, listing(live, where))


def test_only_the_folders_listed_last_are_watched(smbd: samba.SambaServer,
                                                  tmp_path: Path) -> None:
    folder = fresh_folder(smbd)
    names = ["one", "two", "three", "never-listed"]
    for name in names:
        (smbd.share_dir("conformance") / folder / name).mkdir()
        shutil.chown(smbd.share_dir("conformance") / folder / name, user=samba.ACME.user)
    spec = provider(smbd, folder, change_notify_folders=2, change_notify_idle_s=2)
    with serving(tmp_path, {"/watched": {"provider": spec}}) as (live, _):
        for name in names[:3]:
            assert listing(live, f"/watched/{name}/") == {}
        # at most 2 watches, the folders listed last; one never listed is not watched
        assert open_on_server(smbd, folder) == {f"{folder}/two", f"{folder}/three"}
        outside(smbd, f"cd {folder}/three; mkdir seen; cd ../one; mkdir unseen")
        assert seconds_until(lambda: "seen" in listing(live, "/watched/three/")) < SOON_S
        time.sleep(0.5)
        assert listing(live, "/watched/one/") == {}  # unwatched: the cached listing stays
        # a watch not listed for change_notify_idle_s ends: handle closed, thread gone
        assert seconds_until(lambda: not open_on_server(smbd, folder), limit=6) < 6
        assert seconds_until(lambda: not [t for t in smb_threads(smbd) if "notify" in t]) < 3


def test_threads_end_with_the_mount_on_a_config_reload(smbd: samba.SambaServer,
                                                       tmp_path: Path) -> None:
    folder = fresh_folder(smbd)
    baseline = smb_threads(smbd)
    with serving(tmp_path, {"/watched": {"provider": provider(smbd, folder)}}) as (live, config):
        assert listing(live, "/watched/") == {}
        assert len(smb_threads(smbd)) == len(baseline) + 2  # a receiver, a watcher
        outside(smbd, f"cd {folder}; mkdir made-outside")
        assert seconds_until(lambda: "made-outside" in listing(live, "/watched/")) < SOON_S
        data = yaml.safe_load(config.read_text())
        del data["tenants"]["acme"]["mounts"]["/watched"]
        config.write_text(yaml.safe_dump(data))
        assert live.holder.reload()
        gc.collect()
        assert seconds_until(lambda: smb_threads(smbd) == baseline, limit=5) < 5
        assert not open_on_server(smbd, folder)


def test_watches_end_with_the_connection_and_return_with_the_file_server(
        smbd: samba.SambaServer, tmp_path: Path) -> None:
    folder = fresh_folder(smbd)
    spec = provider(smbd, folder, retry_after_failure_s=0.2, timeout_s=1)
    baseline = smb_threads(smbd)
    with serving(tmp_path, {"/watched": {"provider": spec}}) as (live, _):
        assert listing(live, "/watched/") == {}
        assert len(smb_threads(smbd)) == len(baseline) + 2
        smbd.stop()
        try:
            # the connection's receiver and the watcher end: no thread waits on a dead server
            assert seconds_until(lambda: smb_threads(smbd) == baseline, limit=5) < 5, \
                smb_threads(smbd)
        finally:
            smbd.start()
        # what changed meanwhile: the lost watch forgot the cached listing
        outside(smbd, f"cd {folder}; mkdir while-down")
        assert seconds_until(lambda: "while-down" in listing(live, "/watched/")) < SOON_S
        # and the folder is watched again on the new connection
        outside(smbd, f"cd {folder}; mkdir after-restart")
        assert seconds_until(lambda: "after-restart" in listing(live, "/watched/")) < SOON_S
        assert open_on_server(smbd, folder) == {folder}


def test_watched_folders_move_and_go_as_if_unwatched(smbd: samba.SambaServer,
                                                     tmp_path: Path) -> None:
    """Samba refuses to rename a folder its own session holds open below, and keeps
    a removed folder that is still open (delete pending): Mosaic lets go first."""
    folder = fresh_folder(smbd)
    with serving(tmp_path, {"/watched": {"provider": provider(smbd, folder)}}) as (live, _):
        def dav(method: str, path: str, **headers: str) -> int:
            return requests.request(method, live.url + path, auth=LOGIN, headers=headers,
                                    timeout=30).status_code

        for path in ("/watched/a", "/watched/a/b", "/watched/gone", "/watched/gone/below"):
            assert dav("MKCOL", path) == 201
            assert listing(live, path + "/") == {}  # watched from here
        assert open_on_server(smbd, folder) >= {f"{folder}/a/b", f"{folder}/gone/below"}
        assert dav("MOVE", "/watched/a", Destination=live.url + "/watched/moved") == 201
        assert dav("DELETE", "/watched/gone") == 204
        assert listing(live, "/watched/") == {"moved": None}
        assert listing(live, "/watched/moved/") == {"b": None}


def test_watches_let_go_leave_nothing_behind_on_the_connection(
        smbd: samba.SambaServer, tmp_path: Path) -> None:
    """smbprotocol keeps every request until its answer is taken: a watch closed
    (evicted, removed) must take its request's last answer, or a mount browsing many
    folders grows without end."""
    folder = fresh_folder(smbd)
    module = providers.load("smb")
    spec = provider(smbd, folder, change_notify_folders=2)
    options = module.Options.model_validate({k: v for k, v in spec.items() if k != "type"})
    fs = module.build(options, BuildContext("acme", "/watched", tmp_path))
    try:
        for index in range(10):
            fs.mkdir(f"d{index}")
            assert fs.ls(f"d{index}") == []
        (connection,) = fs._cache.values()
        # the 2 watches listed last are outstanding; 8 evicted ones were taken
        assert seconds_until(lambda: len(connection.outstanding_requests) == 2, 5) < 5
        for index in range(10):
            fs.rmdir(f"d{index}")
        assert seconds_until(lambda: len(connection.outstanding_requests) == 0, 5) < 5
        assert open_on_server(smbd, folder) == set()
    finally:
        fs.close()


def test_a_server_without_notifications_keeps_the_listing_cache_lifetime(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Samba with ``change notify = no`` refuses every CHANGE_NOTIFY at once: the
    mount stops asking (one log line) and its listings live their lifetime, instead
    of each refused watch dropping the listing it was meant to keep fresh."""
    smbd = samba.SambaServer()
    smbd.conf.write_text(smbd.conf.read_text().replace("[global]\n",
                                                       "[global]\nchange notify = no\n", 1))
    smbd.start()
    try:
        folder = fresh_folder(smbd)
        spec = provider(smbd, folder, listing_cache_seconds=3)
        with caplog.at_level(logging.INFO), \
                serving(tmp_path, {"/watched": {"provider": spec}}) as (live, _):
            assert listing(live, "/watched/") == {}
            time.sleep(0.5)  # the refusal has come
            outside(smbd, f"cd {folder}; mkdir made-outside")
            started = time.monotonic()
            while time.monotonic() - started < 1.2:
                assert listing(live, "/watched/") == {}  # cached, not rescanned
                time.sleep(0.1)
            assert seconds_until(lambda: "made-outside" in listing(live, "/watched/")) < 3
            assert not [t for t in smb_threads(smbd) if "notify" in t]
        assert caplog.text.count("does not send change notifications") == 1
    finally:
        smbd.remove()
