"""SMB shares as tenant mounts, served over WebDAV, against a real smbd.

The test smbd (tests/support/samba.py) has one account per tenant; its share
ACLs differ: ``acme`` and ``globex`` admit only their own account, ``common``
lets globex read only. What a user sees through WebDAV must follow those
ACLs exactly, sessions must never leak between tenants, and a change made on
the file server by someone else (Samba's own ``smbclient``) must show.
"""

from __future__ import annotations

import gc
import logging
import os
import pwd
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import smbclient
import smbclient._pool
from smbprotocol.header import Commands

from mosaic import providers
from mosaic.config.loader import ConfigError, load_config
from mosaic.core.capabilities import BuildContext
from mosaic.core.errors import InvalidPathError
from mosaic.providers import smb_streams
from mosaic.vfs.storage import StorageRegistry
from tests.conformance import compositions
from tests.support import emulator, samba, tenants
from tests.support.live import Live, dav, listed, live_server, unique
from tests.test_litmus import SUITES, SUMMARY, run_litmus

ACME_LOGIN = ("alice@acme.example", "alice-secret")
GLOBEX_LOGIN = ("dave@globex.example", "dave-secret")
WRONG = samba.Account(samba.ACME.user, "not-" + samba.ACME.password)
MIB = 1024 * 1024
LISTING_CACHE_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = tenants.two_tenants(tmp_path_factory.mktemp("smb"))
    acme, globex = data["tenants"]["acme"]["mounts"], data["tenants"]["globex"]
    acme["/smb"] = {"provider": samba.provider("acme", samba.ACME,
                                               listing_cache_seconds=LISTING_CACHE_S)}
    acme["/common"] = {"provider": samba.provider("common", samba.ACME)}
    # a server without change notifications: the listing cache's lifetime alone
    acme["/unwatched"] = {"provider": samba.provider(
        "acme", samba.ACME, listing_cache_seconds=LISTING_CACHE_S, change_notify_folders=0)}
    # every user's own folder, made on first use
    acme["/home"] = {"provider": samba.provider("acme", samba.ACME, path="homes/{user}")}
    globex["mounts"] = {
        "/smb": {"provider": samba.provider("globex", samba.GLOBEX)},
        "/common": {"provider": samba.provider("common", samba.GLOBEX)},
        # acme's share with globex's own account: the share's ACL refuses it
        "/acme-share": {"provider": samba.provider("acme", samba.GLOBEX)},
        # acme's account with a wrong password, in the process where acme's session lives
        "/guessed": {"provider": samba.provider("acme", WRONG)},
        # nothing listens there
        "/down": {"provider": {**samba.provider("acme", samba.GLOBEX),
                               "port": emulator.free_port()}},
    }
    with live_server(tenants.build(data)) as live:
        yield live





def test_each_tenant_sees_its_own_share_only(server: Live) -> None:
    mine, theirs = unique("acme") + ".txt", unique("globex") + ".txt"
    samba.smbclient_command("acme", samba.ACME, f"mkdir {mine}")
    samba.smbclient_command("globex", samba.GLOBEX, f"mkdir {theirs}")
    acme_sees = listed(server, ACME_LOGIN, "/smb/")
    globex_sees = listed(server, GLOBEX_LOGIN, "/smb/")
    assert mine in acme_sees and theirs not in acme_sees
    assert theirs in globex_sees and mine not in globex_sees
    # acme's share under globex's own account: refused by the share's ACL, for every method
    for method, path in [("PROPFIND", "/acme-share/"), ("PROPFIND", f"/acme-share/{mine}"),
                         ("GET", f"/acme-share/{mine}"), ("PUT", "/acme-share/planted.txt"),
                         ("DELETE", f"/acme-share/{mine}")]:
        reply = dav(server, GLOBEX_LOGIN, method, path, data=b"x" if method == "PUT" else None)
        assert reply.status_code == 403, (method, path, reply.status_code)
    assert mine in listed(server, ACME_LOGIN, "/smb/")
    assert "planted.txt" not in listed(server, ACME_LOGIN, "/smb/")


def test_tenants_listing_at_once_each_see_their_own_share(server: Live) -> None:
    mine, theirs = unique("acme-marker"), unique("globex-marker")
    assert dav(server, ACME_LOGIN, "MKCOL", f"/smb/{mine}").status_code == 201
    assert dav(server, GLOBEX_LOGIN, "MKCOL", f"/smb/{theirs}").status_code == 201
    logins = [ACME_LOGIN, GLOBEX_LOGIN] * 12

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(lambda login: (login, listed(server, login, "/smb/")), logins))
    for login, names in seen:
        own, other = (mine, theirs) if login is ACME_LOGIN else (theirs, mine)
        assert own in names and other not in names


def test_wrong_password_is_refused_while_the_right_session_is_pooled(
        server: Live, caplog: pytest.LogCaptureFixture) -> None:
    name = unique("pooled") + ".txt"
    assert dav(server, ACME_LOGIN, "PUT", f"/smb/{name}", data=b"acme's").status_code == 201
    with caplog.at_level(logging.INFO):
        for method in ("PROPFIND", "GET"):  # the session of acme's account is open meanwhile
            reply = dav(server, GLOBEX_LOGIN, method, f"/guessed/{name}")
            assert reply.status_code == 503, (method, reply.status_code)
            assert b"acme's" not in reply.content
    assert WRONG.password not in caplog.text and samba.ACME.password not in caplog.text
    # one line naming tenant and mount; the server is not asked again at once (lockouts)
    assert caplog.text.count("tenant globex: mount /guessed (smb) unavailable") == 1
    assert dav(server, ACME_LOGIN, "GET", f"/smb/{name}").content == b"acme's"
    # smbclient's process-wide pool was never used: every mount keeps its own
    assert smbclient._pool._SMB_CONNECTIONS == {}


def test_change_made_on_the_file_server_shows_once_the_listing_cache_expires(
        server: Live) -> None:
    folder = unique("outside")
    assert dav(server, ACME_LOGIN, "MKCOL", f"/unwatched/{folder}").status_code == 201
    assert dav(server, ACME_LOGIN, "PUT", f"/unwatched/{folder}/old.txt", data=b"old") \
        .status_code == 201
    assert listed(server, ACME_LOGIN, f"/unwatched/{folder}/") == {"old.txt"}  # cached from here
    outside = f"cd {folder}; mkdir new-folder; del old.txt; rename new-folder renamed"
    samba.smbclient_command("acme", samba.ACME, outside)
    assert listed(server, ACME_LOGIN, f"/unwatched/{folder}/") == {"old.txt"}  # a warm listing
    time.sleep(LISTING_CACHE_S + 0.1)
    assert listed(server, ACME_LOGIN, f"/unwatched/{folder}/") == {"renamed"}
    assert dav(server, ACME_LOGIN, "GET", f"/unwatched/{folder}/old.txt").status_code == 404
    # a change made through Mosaic shows at once
    assert dav(server, ACME_LOGIN, "PUT", f"/unwatched/{folder}/mine.txt", data=b"m") \
        .status_code == 201
    assert listed(server, ACME_LOGIN, f"/unwatched/{folder}/") == {"renamed", "mine.txt"}


def test_access_denied_by_the_share_is_403_never_500(server: Live) -> None:
    name = unique("common") + ".txt"
    assert dav(server, ACME_LOGIN, "PUT", f"/common/{name}", data=b"from acme").status_code == 201
    # globex may read the common share, not write it (the share's read list)
    assert dav(server, GLOBEX_LOGIN, "GET", f"/common/{name}").content == b"from acme"
    denied = [("PUT", f"/common/{name}"), ("PUT", "/common/new.txt"), ("DELETE", f"/common/{name}"),
              ("MKCOL", "/common/folder")]
    for method, path in denied:
        reply = dav(server, GLOBEX_LOGIN, method, path, data=b"globex" if method == "PUT" else None)
        assert reply.status_code == 403, (method, path, reply.status_code)
    reply = dav(server, GLOBEX_LOGIN, "MOVE", f"/common/{name}",
                headers={"Destination": server.url + "/common/moved.txt"})
    assert reply.status_code == 403
    assert listed(server, ACME_LOGIN, "/common/") >= {name}
    assert not {"new.txt", "folder", "moved.txt"} & listed(server, ACME_LOGIN, "/common/")
    assert dav(server, ACME_LOGIN, "GET", f"/common/{name}").content == b"from acme"


def test_a_file_held_open_elsewhere_is_locked_423(server: Live) -> None:
    name = unique("held") + ".txt"
    assert dav(server, ACME_LOGIN, "PUT", f"/smb/{name}", data=b"before").status_code == 201
    other_program: dict[str, Any] = {}  # another client of the file server, its own session
    path = f"\\\\127.0.0.1\\acme\\{name}"
    try:
        with smbclient.open_file(path, "r+b", share_access=None, port=samba.server().port,
                                 username=samba.ACME.user, password=samba.ACME.password,
                                 connection_cache=other_program):
            for method in ("GET", "PUT", "DELETE"):
                reply = dav(server, ACME_LOGIN, method, f"/smb/{name}",
                            data=b"after" if method == "PUT" else None)
                assert reply.status_code == 423, (method, reply.status_code)
    finally:
        smbclient.reset_connection_cache(connection_cache=other_program)
    assert dav(server, ACME_LOGIN, "GET", f"/smb/{name}").content == b"before"
    assert listed(server, ACME_LOGIN, "/smb/") >= {name}


def test_moves_between_a_share_and_a_local_mount(server: Live) -> None:
    folder = unique("travel")
    assert dav(server, ACME_LOGIN, "MKCOL", f"/smb/{folder}").status_code == 201
    for name, body in (("a.txt", b"A" * 3000), ("b.bin", os.urandom(MIB + 5))):
        assert dav(server, ACME_LOGIN, "PUT", f"/smb/{folder}/{name}", data=body).status_code \
            == 201
    there = dav(server, ACME_LOGIN, "MOVE", f"/smb/{folder}",
                headers={"Destination": f"{server.url}/projects/{folder}"})
    assert there.status_code == 201
    assert not dav(server, ACME_LOGIN, "PROPFIND", "/smb/").text.count(folder)
    assert listed(server, ACME_LOGIN, f"/projects/{folder}/") == {"a.txt", "b.bin"}
    back = dav(server, ACME_LOGIN, "MOVE", f"/projects/{folder}/a.txt",
               headers={"Destination": f"{server.url}/smb/a-{folder}.txt"})
    assert back.status_code == 201
    assert dav(server, ACME_LOGIN, "GET", f"/smb/a-{folder}.txt").content == b"A" * 3000
    assert dav(server, ACME_LOGIN, "GET", f"/projects/{folder}/a.txt").status_code == 404


def test_concurrent_transfers_share_the_mounts_connection(server: Live) -> None:
    bodies = {f"{unique('many')}-{i}.bin": os.urandom(MIB // 2 + i) for i in range(8)}

    def round_trip(name: str) -> bytes:
        assert dav(server, ACME_LOGIN, "PUT", f"/smb/{name}", data=bodies[name]).status_code \
            == 201
        return dav(server, ACME_LOGIN, "GET", f"/smb/{name}").content

    with ThreadPoolExecutor(8) as pool:
        results = dict(zip(bodies, pool.map(round_trip, bodies), strict=True))
    assert results == bodies
    assert set(bodies) <= listed(server, ACME_LOGIN, "/smb/")


def test_a_case_only_rename_keeps_the_file(server: Live) -> None:
    """Explorer's rename of report.txt to Report.txt: a MOVE whose destination is the
    source itself on a case-insensitive share (it was deleted as "the existing target")."""
    folder = unique("case")
    assert dav(server, ACME_LOGIN, "MKCOL", f"/smb/{folder}").status_code == 201
    assert dav(server, ACME_LOGIN, "PUT", f"/smb/{folder}/report.txt", data=b"precious") \
        .status_code == 201
    for source, target in [("report.txt", "Report.txt"), ("Report.txt", "REPORT.TXT")]:
        reply = dav(server, ACME_LOGIN, "MOVE", f"/smb/{folder}/{source}",
                    headers={"Destination": f"{server.url}/smb/{folder}/{target}"})
        assert reply.status_code in (201, 204), reply.status_code
        assert listed(server, ACME_LOGIN, f"/smb/{folder}/") == {target}
        assert dav(server, ACME_LOGIN, "GET", f"/smb/{folder}/{target}").content == b"precious"
    # a COPY onto another case of its own name is a copy onto itself: refused, kept
    reply = dav(server, ACME_LOGIN, "COPY", f"/smb/{folder}/REPORT.TXT",
                headers={"Destination": f"{server.url}/smb/{folder}/report.txt"})
    assert reply.status_code == 403
    assert dav(server, ACME_LOGIN, "GET", f"/smb/{folder}/REPORT.TXT").content == b"precious"
    # a PUT of another case of an existing name overwrites it: one entry, new content
    assert dav(server, ACME_LOGIN, "PUT", f"/smb/{folder}/report.txt", data=b"v2") \
        .status_code == 204
    assert listed(server, ACME_LOGIN, f"/smb/{folder}/") == {"REPORT.TXT"}
    assert dav(server, ACME_LOGIN, "GET", f"/smb/{folder}/REPORT.TXT").content == b"v2"
    reply = dav(server, ACME_LOGIN, "MOVE", f"/smb/{folder}",
                headers={"Destination": f"{server.url}/smb/{folder.upper()}"})
    assert reply.status_code in (201, 204), reply.status_code
    assert folder.upper() in listed(server, ACME_LOGIN, "/smb/")
    assert dav(server, ACME_LOGIN, "GET", f"/smb/{folder.upper()}/REPORT.TXT").content \
        == b"v2"


def test_per_user_folders_on_a_share(server: Live) -> None:
    bob = ("bob@acme.example", "bob-secret")
    name = unique("alices") + ".txt"
    assert dav(server, ACME_LOGIN, "PUT", f"/home/{name}", data=b"alice's").status_code == 201
    assert name in listed(server, ACME_LOGIN, "/home/")
    assert name not in listed(server, bob, "/home/")
    assert dav(server, bob, "GET", f"/home/{name}").status_code == 404
    on_disk = samba.server().share_dir("acme") / "homes" / "alice" / name
    assert on_disk.read_bytes() == b"alice's"


def test_users_of_a_per_user_mount_never_see_each_others_files(tmp_path: Path) -> None:
    """Two users of the `{user}` SMB mount the conformance suite runs in: each works in
    a folder of their own on the share, and nothing of one reaches the other (listing,
    lookup, read, overwrite, delete, rename, a cached listing, a path that climbs)."""
    config = compositions.smb_homes(tmp_path)
    registry = StorageRegistry(tmp_path)  # one per server: both users' mounts come from it
    alice, bob = (compositions.user_fs(registry, config, user) for user in ("alice", "bob"))
    with alice.open("home/secret.txt", "wb") as upload:
        upload.write(b"alice's")
    alice.mkdir("home/folder")
    assert set(alice.ls("home", detail=False)) == {"home/secret.txt", "home/folder"}
    assert bob.ls("home", detail=False) == []  # not alice's listing, cached a moment ago
    for name, attempt in [("info", bob.info), ("cat_file", bob.cat_file), ("ls", bob.ls),
                          ("rm_file", bob.rm_file),
                          ("mv", lambda path: bob.mv(path, "home/taken.txt"))]:
        for path in ("home/secret.txt", "home/folder"):
            with pytest.raises(FileNotFoundError):
                attempt(path)
                pytest.fail(f"bob's {name} of alice's {path}")
    for climbing in ("home/../alice/secret.txt", "home/..\\alice\\secret.txt"):
        with pytest.raises(InvalidPathError):  # SMB's separator is "\\": never passed on
            bob.cat_file(climbing)
    with bob.open("home/secret.txt", "wb") as upload:  # the same name: his own file
        upload.write(b"bob's")
    assert bob.ls("home", detail=False) == ["home/secret.txt"]
    assert alice.cat_file("home/secret.txt") == b"alice's"
    bob.rm_file("home/secret.txt")
    assert alice.cat_file("home/secret.txt") == b"alice's"
    homes = samba.server().share_dir("conformance") / \
        config.tenants["t"].mounts["/home"].provider.model_extra["path"].split("/")[0]
    assert {p.name for p in homes.iterdir()} == {"alice", "bob"}
    assert (homes / "alice" / "secret.txt").read_bytes() == b"alice's"
    assert not any((homes / "bob").iterdir())


def test_unreachable_file_server_is_503_for_that_mount_only(server: Live) -> None:
    assert dav(server, GLOBEX_LOGIN, "PROPFIND", "/down/").status_code == 503
    assert dav(server, GLOBEX_LOGIN, "PUT", "/down/x.txt", data=b"x").status_code == 503
    assert dav(server, GLOBEX_LOGIN, "PROPFIND", "/", headers={"Depth": "0"}).status_code == 207
    assert dav(server, GLOBEX_LOGIN, "PROPFIND", "/smb/").status_code == 207


@pytest.fixture(scope="module")
def smb_rooted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """globex's root on a folder of the share; acme's /smb mount on another, and its
    /home on a third, a folder of its own below it for each user."""
    data = tenants.two_tenants(tmp_path_factory.mktemp("smb-root"))
    data["tenants"]["globex"]["root"] = samba.provider("conformance",
                                                       path=samba.fresh_folder())
    acme = data["tenants"]["acme"]["mounts"]
    acme["/smb"] = {"provider": samba.provider("conformance", path=samba.fresh_folder())}
    acme["/home"] = {"provider": samba.provider("conformance",
                                                path=samba.fresh_folder() + "/{user}")}
    with live_server(tenants.build(data)) as live:
        yield live


@pytest.mark.litmus
@pytest.mark.parametrize(("folder", "login"), [("/", GLOBEX_LOGIN), ("/smb/", ACME_LOGIN),
                                               ("/home/", ACME_LOGIN)],
                         ids=["smb-root", "smb-mount", "smb-per-user-mount"])
def test_litmus_passes_every_suite_on_smb(smb_rooted: Live, folder: str,
                                          login: tuple[str, str], tmp_path: Path) -> None:
    output = run_litmus(smb_rooted.url + folder, *login, str(tmp_path))
    summaries = {m.group(1): m.groups()[1:] for m in SUMMARY.finditer(output)}
    assert set(summaries) == set(SUITES), output
    for suite, (run, passed, failed) in summaries.items():
        assert failed == "0" and run == passed, f"{suite}: {output}"
    assert "WARNING" not in output, output


# -- efficiency, counted on the wire of the provider's own connection ----------


class Wire:
    """Counts the SMB messages this thread sends on one filesystem's connection, and
    the bytes both ways. The change watcher's messages (it re-arms a folder's watch
    on its own thread whenever a notification comes) are not counted."""

    def __init__(self, fs: Any) -> None:
        fs.info("")  # connected and signed in
        transport = fs._cache[fs._key].transport  # the mount's own pool holds it
        self.sent = self.bytes = 0
        send, recv = transport.send, transport.recv
        caller = threading.get_ident()

        def counted_send(message: bytes) -> None:
            self.sent += threading.get_ident() == caller
            self.bytes += len(message)
            send(message)

        def counted_recv(timeout: Any) -> bytes:
            message = recv(timeout)
            self.bytes += len(message)
            return message

        transport.send, transport.recv = counted_send, counted_recv

    def delta(self) -> tuple[int, int]:
        """(messages sent, bytes both ways) since the last call."""
        now = (self.sent, self.bytes)
        self.sent = self.bytes = 0
        return now


def _smb_fs(data_dir: Path, folder: str) -> Any:
    module = providers.load("smb")
    spec = samba.provider("conformance", path=folder)
    options = module.Options.model_validate({k: v for k, v in spec.items() if k != "type"})
    return module.build(options, BuildContext("acme", "/smb", data_dir))


@pytest.fixture
def smb_fs(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """A provider filesystem on a fresh folder of the share, and that folder on disk."""
    folder = samba.fresh_folder()
    fs = _smb_fs(tmp_path, folder)
    yield fs, samba.server().share_dir("conformance") / folder
    fs.close()


def _files_on_disk(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        (folder / f"f{i:04}.txt").write_bytes(b"x" * i)
    for path in (folder, *folder.iterdir()):
        os.chown(path, pwd.getpwnam(samba.ACME.user).pw_uid, -1)


def test_a_listing_is_one_enumeration_whatever_its_size(smb_fs: tuple[Any, Path]) -> None:
    fs, disk = smb_fs
    _files_on_disk(disk / "few", 3)
    _files_on_disk(disk / "many", 300)
    wire = Wire(fs)
    assert len(fs.ls("few")) == 3
    few, _ = wire.delta()
    listing = fs.ls("many")
    many, _ = wire.delta()
    assert len(listing) == 300 and {e["size"] for e in listing} == set(range(300))
    # the folder's watch (open, CHANGE_NOTIFY), then open, enumerate (until no more
    # files), close: never a stat each
    assert many == few <= 6
    assert fs.ls("many") == listing and wire.delta()[0] == 0  # warm: no request at all
    fs.touch("many/new")  # a change through the mount: the next listing is fresh
    wire.delta()
    assert len(fs.ls("many")) == 301
    assert wire.delta()[0] <= 4  # watched already: the enumeration alone


def test_io_in_large_blocks_and_server_side_copy(smb_fs: tuple[Any, Path]) -> None:
    fs, disk = smb_fs
    data = os.urandom(8 * MIB)
    wire = Wire(fs)
    with fs.open("big", "wb") as upload:
        for start in range(0, len(data), 64 * 1024):  # a client's small writes
            upload.write(data[start:start + 64 * 1024])
    written, _ = wire.delta()
    with fs.open("big", "rb") as reader:
        assert reader.read() == data
    read, _ = wire.delta()
    assert written <= 12 and read <= 8  # 2 MiB requests: 64 KiB ones would be 128 each way
    fs.cp_file("big", "copy")
    _messages, moved_bytes = wire.delta()
    assert moved_bytes < MIB  # copy-chunk: the 8 MiB never cross the wire
    assert (disk / "copy").read_bytes() == data


def test_an_upload_to_a_new_name_sends_no_more_than_it_needs(smb_fs: tuple[Any, Path]) -> None:
    fs, disk = smb_fs
    fs.mkdir("sub")
    data = os.urandom(8 * MIB)
    wire = Wire(fs)
    with fs.open("sub/new.bin", "wb") as upload:
        upload.write(data)
    # the target's lookup (not a folder?), the temp file's open, its writes, its close,
    # the target's open (held elsewhere?), the rename compound. Not: a look at the
    # parent because the name was missing, a rename in four messages, or a delete of
    # the temp file once it was renamed.
    assert wire.delta()[0] <= 5 + len(data) // fs._block
    assert (disk / "sub" / "new.bin").read_bytes() == data
    assert [p.name for p in (disk / "sub").iterdir()] == ["new.bin"]


def test_transfers_keep_a_bounded_number_of_requests_in_flight(
        smb_fs: tuple[Any, Path]) -> None:
    """Read ahead and write behind: the file server works while Mosaic serves its client,
    and a transfer never has more than its few blocks out (memory per transfer)."""
    fs, disk = smb_fs
    data = os.urandom(12 * fs._block + 12345)
    fs.info("")
    connection = fs._cache[fs._key]
    send = connection.send
    most: dict[int, int] = {}  # command -> READs or WRITEs out at once, this one included

    def counting_send(message: Any, *args: Any, **kwargs: Any) -> Any:
        request = send(message, *args, **kwargs)
        command = message.COMMAND
        out = sum(1 for other in list(connection.outstanding_requests.values())
                  if other.message["command"].get_value() == command)
        most[command] = max(most.get(command, 0), out)
        return request

    connection.send = counting_send
    try:
        with fs.open("pipelined", "wb") as upload:
            for start in range(0, len(data), 256 * 1024):
                upload.write(data[start:start + 256 * 1024])
        with fs.open("pipelined", "rb") as reader:
            pieces = iter(lambda: reader.read(256 * 1024), b"")
            assert b"".join(pieces) == data
    finally:
        del connection.send
    assert most[Commands.SMB2_WRITE] == smb_streams.WRITES_IN_FLIGHT == 2
    assert most[Commands.SMB2_READ] == smb_streams.READS_AHEAD + 1 == 2
    assert (disk / "pipelined").read_bytes() == data


def test_a_read_seeks_within_and_beyond_what_it_read_ahead(smb_fs: tuple[Any, Path]) -> None:
    fs, disk = smb_fs
    data = os.urandom(3 * fs._block + 7)
    (disk / "seek").write_bytes(data)
    with fs.open("seek", "rb") as reader:
        assert reader.read(10) == data[:10]
        assert reader.seek(100) == 100 and reader.read(5) == data[100:105]  # same block
        reader.seek(2 * fs._block + 3)  # a block read ahead, then dropped
        assert reader.read() == data[2 * fs._block + 3:]
        assert reader.read(1) == b""
        reader.seek(-7, 2)
        assert reader.tell() == len(data) - 7 and reader.read(100) == data[-7:]
        reader.seek(len(data) + 5)
        assert reader.read(10) == b""


def test_a_dropped_filesystem_logs_off(tmp_path: Path) -> None:
    """A config reload drops the mounts' filesystems: their connections must end too."""
    fs = _smb_fs(tmp_path, samba.fresh_folder())
    fs.ls("")
    (connection,) = fs._cache.values()
    assert connection.transport.connected
    del fs
    gc.collect()
    assert not connection.transport.connected


def test_mtime_set_through_the_mount_persists_on_the_server(smb_fs: tuple[Any, Path]) -> None:
    fs, disk = smb_fs
    with fs.open("f", "wb") as upload:
        upload.write(b"f")
    fs.mkdir("d")
    for name in ("f", "d"):
        fs.set_mtime(name, 1_500_000_000.5)
        assert os.stat(disk / name).st_mtime == 1_500_000_000.5


# -- configuration ----------


def test_password_from_a_file_or_the_environment_and_never_shown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "smb-password").write_text(samba.ACME.password + "\n")
    monkeypatch.setenv("MOSAIC_TEST_SMB_USER", samba.ACME.user)
    config = tmp_path / "mosaic.yaml"
    config.write_text(f"""
tenants:
  acme:
    root: {{type: local, root: {tmp_path / "root"}}}
    mounts:
      /smb:
        provider:
          type: smb
          host: 127.0.0.1
          port: {samba.server().port}
          share: acme
          encrypt: true
          min_dialect: "3.1.1"
          credentials:
            username: ${{MOSAIC_TEST_SMB_USER}}
            password_file: smb-password
""")
    loaded = load_config(config)
    assert samba.ACME.password not in repr(loaded)
    options = loaded.tenants["acme"].mounts["/smb"].provider.options()
    fs = providers.load("smb").build(options, BuildContext("acme", "/smb", tmp_path))
    try:
        name = unique("encrypted")
        with fs.open(name, "wb") as upload:
            upload.write(b"sealed")
        assert fs.info(name)["size"] == 6
        connection = fs._cache[fs._key]
        assert connection.dialect == 0x0311
        assert all(s.encrypt_data for s in connection.session_table.values())
    finally:
        fs.close()
    typo = config.read_text().replace("credentials:", "credentials:\n            domain_typo: x")
    config.write_text(typo)
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert "domain_typo" in str(refused.value) and samba.ACME.password not in str(refused.value)
