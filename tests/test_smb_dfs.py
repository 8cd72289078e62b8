"""DFS namespace paths as tenant mounts, served over WebDAV, against real smbds.

The test smbd's ``dfs`` share is a namespace root (tests/support/samba.py):
``projects`` links to ``dfsdata`` on the same server, ``replicated`` to
``replica`` on a second smbd (::1, the same port) and then on the first (both
serve one folder), ``remote`` to the second smbd only. A mount names a path of
the namespace; its referral is followed (and kept by the mount, never in
smbprotocol's process-wide cache), a target that is down fails over to the
next, and a link with every target down is a 503 for that mount only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import smbclient._pool
from pydantic import ValidationError

from mosaic import providers
from mosaic.core.capabilities import BuildContext
from tests.support import samba, tenants
from tests.support.live import Live, dav, listed, live_server, unique
from tests.test_litmus import SUITES, SUMMARY, run_litmus

ACME_LOGIN = ("alice@acme.example", "alice-secret")
GLOBEX_LOGIN = ("dave@globex.example", "dave-secret")
FAST_RETRY = {"retry_after_failure_s": 0.2, "timeout_s": 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = tenants.two_tenants(tmp_path_factory.mktemp("smb-dfs"))
    acme = data["tenants"]["acme"]["mounts"]
    acme["/projects"] = {"provider": samba.dfs_provider("projects")}
    # the same namespace named by host, share and a path below the link
    acme["/deep"] = {"provider": {**samba.provider("dfs", path="projects/deep")}}
    acme["/replicated"] = {"provider": samba.dfs_provider("replicated", **FAST_RETRY)}
    acme["/remote"] = {"provider": samba.dfs_provider("remote", **FAST_RETRY)}
    # a fresh folder below the two-target link (made on first use), for litmus
    acme["/litmus"] = {"provider": samba.dfs_provider(f"replicated/{unique('litmus')}")}
    data["tenants"]["globex"]["mounts"] = {
        "/smb": {"provider": samba.provider("globex", samba.GLOBEX)},
        # the same link with globex's own account: the namespace and target refuse it
        "/projects": {"provider": samba.dfs_provider("projects", samba.GLOBEX)}}
    with live_server(tenants.build(data)) as live:
        yield live





def test_list_read_write_through_a_dfs_link(server: Live) -> None:
    name, folder = unique("report") + ".txt", unique("folder")
    assert dav(server, ACME_LOGIN, "PUT", f"/projects/{name}", data=b"via dfs").status_code == 201
    assert dav(server, ACME_LOGIN, "MKCOL", f"/projects/{folder}").status_code == 201
    assert {name, folder} <= listed(server, ACME_LOGIN, "/projects/")
    assert dav(server, ACME_LOGIN, "GET", f"/projects/{name}").content == b"via dfs"
    moved = f"/projects/{folder}/{name}"
    reply = dav(server, ACME_LOGIN, "MOVE", f"/projects/{name}",
                headers={"Destination": server.url + moved})
    assert reply.status_code == 201
    # the data is on the link's target share, not in the namespace's own folder
    data = samba.server().share_dir("dfsdata")
    assert (data / folder / name).read_bytes() == b"via dfs"
    assert not (samba.server().share_dir("dfs") / folder).exists()
    # a mount named by host, share and a path below the link: the target's folder,
    # made on first use
    assert dav(server, ACME_LOGIN, "PUT", f"/deep/{name}", data=b"deeper").status_code == 201
    assert (data / "deep" / name).read_bytes() == b"deeper"
    assert dav(server, ACME_LOGIN, "DELETE", moved).status_code == 204
    assert name not in listed(server, ACME_LOGIN, f"/projects/{folder}/")
    # referrals stay with the mount: smbclient's process-wide cache and pool are unused
    assert smbclient._pool.ClientConfig()._referral_cache == []
    assert smbclient._pool._SMB_CONNECTIONS == {}


def test_another_tenants_account_gets_nothing_through_the_same_link(server: Live) -> None:
    name = unique("acme-only") + ".txt"
    assert dav(server, ACME_LOGIN, "PUT", f"/projects/{name}", data=b"acme's").status_code == 201
    for method, path in [("PROPFIND", "/projects/"), ("GET", f"/projects/{name}"),
                         ("PUT", "/projects/planted.txt"), ("DELETE", f"/projects/{name}")]:
        reply = dav(server, GLOBEX_LOGIN, method, path, data=b"x" if method == "PUT" else None)
        assert reply.status_code == 403, (method, path, reply.status_code)
        assert b"acme's" not in reply.content
    assert dav(server, ACME_LOGIN, "GET", f"/projects/{name}").content == b"acme's"
    assert "planted.txt" not in listed(server, ACME_LOGIN, "/projects/")


def test_failover_when_the_first_target_is_stopped(
        server: Live, caplog: pytest.LogCaptureFixture) -> None:
    name = unique("replicated") + ".txt"
    assert dav(server, ACME_LOGIN, "PUT", f"/replicated/{name}", data=b"both").status_code == 201
    second = samba.second_server()
    second.stop()
    try:
        with caplog.at_level(logging.INFO):
            assert dav(server, ACME_LOGIN, "GET", f"/replicated/{name}").content == b"both"
            later = unique("after") + ".txt"
            reply = dav(server, ACME_LOGIN, "PUT", f"/replicated/{later}", data=b"failed over")
            assert reply.status_code == 201
            assert {name, later} <= listed(server, ACME_LOGIN, "/replicated/")
    finally:
        second.start()
    assert "tenant acme: mount /replicated (smb): DFS target 2 of 2 answers" in caplog.text
    assert "mount /replicated (smb) unavailable" not in caplog.text
    assert samba.ACME.password not in caplog.text
    assert (samba.server().share_dir("replica") / later).read_bytes() == b"failed over"


def test_a_link_whose_targets_are_all_down_is_503_for_that_mount_only(
        server: Live, caplog: pytest.LogCaptureFixture) -> None:
    name = unique("remote") + ".txt"
    assert dav(server, ACME_LOGIN, "PUT", f"/remote/{name}", data=b"far").status_code == 201
    second = samba.second_server()
    second.stop()
    try:
        with caplog.at_level(logging.INFO):
            assert dav(server, ACME_LOGIN, "PROPFIND", "/remote/").status_code == 503
            assert dav(server, ACME_LOGIN, "GET", f"/remote/{name}").status_code == 503
            assert dav(server, ACME_LOGIN, "PUT", "/remote/new.txt", data=b"x").status_code == 503
            # everything else of the tenant, and the other tenant, answer as before
            assert dav(server, ACME_LOGIN, "PROPFIND", "/", headers={"Depth": "0"}).status_code \
                == 207
            assert dav(server, ACME_LOGIN, "PROPFIND", "/projects/").status_code == 207
            assert dav(server, GLOBEX_LOGIN, "PROPFIND", "/smb/").status_code == 207
    finally:
        second.start()
    # one line for the outage (its reason: no target answers, or the connection lost
    # when a request met the target's last moments)
    assert caplog.text.count("tenant acme: mount /remote (smb) unavailable") == 1
    assert samba.ACME.password not in caplog.text
    # back by itself once a target answers again (after retry_after_failure_s)
    time.sleep(FAST_RETRY["retry_after_failure_s"])
    assert dav(server, ACME_LOGIN, "GET", f"/remote/{name}").content == b"far"


def test_a_known_referral_serves_while_the_namespace_server_is_down(tmp_path: Path) -> None:
    module = providers.load("smb")
    spec = {k: v for k, v in samba.dfs_provider("remote").items() if k != "type"}
    fs = module.build(module.Options.model_validate(spec), BuildContext("acme", "/r", tmp_path))
    namespace = samba.server()
    try:
        name = unique("while-down") + ".txt"
        fs.pipe_file(name, b"served by ::1")
        assert fs._referral is not None
        fs._referral.expires = 0.0  # its lifetime over: the namespace would be asked again
        fs._drop_connection()
        namespace.stop()
        try:
            assert fs.cat_file(name) == b"served by ::1"
        finally:
            namespace.start()
    finally:
        fs.close()


@pytest.mark.litmus
def test_litmus_passes_every_suite_through_a_dfs_link(server: Live, tmp_path: Path) -> None:
    output = run_litmus(server.url + "/litmus/", *ACME_LOGIN, str(tmp_path))
    summaries = {m.group(1): m.groups()[1:] for m in SUMMARY.finditer(output)}
    assert set(summaries) == set(SUITES), output
    for suite, (run, passed, failed) in summaries.items():
        assert failed == "0" and run == passed, f"{suite}: {output}"


def test_unc_is_one_way_to_name_the_path(tmp_path: Path) -> None:
    options = providers.load("smb").Options
    spec = {k: v for k, v in samba.dfs_provider("projects/{user}").items() if k != "type"}
    named = options.model_validate(spec)
    assert (named.host, named.share, named.path) == ("127.0.0.1", "dfs", "projects/{user}")
    slashes = options.model_validate({**spec, "unc": "//corp.example/dfs/projects"})
    assert (slashes.host, slashes.share, slashes.path) == ("corp.example", "dfs", "projects")
    for wrong, why in [({**spec, "share": "dfs"}, "remove 'share'"),
                       ({**spec, "unc": "corp.example\\dfs"}, "must start with"),
                       ({**spec, "unc": "\\\\corp.example\\dfs\\..\\etc"}, ".."),
                       ({**spec, "unc": "\\\\corp.example"}, "share")]:
        with pytest.raises(ValidationError) as refused:
            options.model_validate(wrong)
        assert why in str(refused.value)
