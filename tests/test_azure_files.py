"""``azure_files`` mounts over WebDAV, against Samba configured like Azure Files.

No emulator of Azure Files exists: the test smbd's ``azurefiles`` share requires
encryption (so SMB 3), and its one account is named like a storage account with
an 88-character base64 key as password (tests/support/samba.py). What is not
tested: Azure itself (its endpoint names, port 445 through the internet,
Azure AD/Kerberos identities).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from smbprotocol.connection import Connection, Dialects
from smbprotocol.exceptions import SMBException
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from mosaic import providers
from mosaic.config.loader import ConfigError, load_config
from mosaic.core.capabilities import BuildContext
from tests.hostile.support import two_tenant_process
from tests.support import samba, tenants
from tests.support.live import Live, live_server
from tests.test_litmus import SUITES, SUMMARY, run_litmus

ACME_LOGIN = ("alice@acme.example", "alice-secret")
WRONG_KEY = "W" * 86 + "=="  # as long as a real key, not the account's


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = tenants.two_tenants(tmp_path_factory.mktemp("azure-files"))
    data["tenants"]["acme"]["mounts"]["/azure"] = {"provider": samba.azure_files_provider(
        path=samba.fresh_folder("azurefiles", samba.AZURE))}
    with live_server(tenants.build(data)) as live:
        yield live


def dav(live: Live, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if method == "PROPFIND":
        headers.setdefault("Depth", "1")
    return requests.request(method, live.url + path, auth=ACME_LOGIN, headers=headers,
                            timeout=30, **kwargs)


def test_webdav_round_trip_on_an_azure_like_share(server: Live, tmp_path: Path) -> None:
    body = secrets.token_bytes(5 * 1024 * 1024 + 7)  # more than one 4 MiB I/O block
    assert dav(server, "MKCOL", "/azure/reports").status_code == 201
    assert dav(server, "PUT", "/azure/reports/q1.bin", data=body).status_code == 201
    assert dav(server, "GET", "/azure/reports/q1.bin").content == body
    copy = dav(server, "COPY", "/azure/reports/q1.bin",
               headers={"Destination": server.url + "/azure/q1-copy.bin"})
    assert copy.status_code == 201
    moved = dav(server, "MOVE", "/azure/q1-copy.bin",
                headers={"Destination": server.url + "/azure/reports/Q1-final.bin"})
    assert moved.status_code == 201
    listing = dav(server, "PROPFIND", "/azure/reports/")
    assert listing.status_code == 207
    assert "q1.bin" in listing.text and "Q1-final.bin" in listing.text
    assert dav(server, "DELETE", "/azure/reports/q1.bin").status_code == 204
    assert dav(server, "GET", "/azure/reports/Q1-final.bin").content == body
    # what went over the wire: SMB 3, every message of the session encrypted
    module = providers.load("azure_files")
    spec = {k: v for k, v in samba.azure_files_provider().items() if k != "type"}
    fs = module.build(module.Options.model_validate(spec), BuildContext("acme", "/a", tmp_path))
    try:
        fs.ls("")
        connection = fs._cache[fs._key]
        assert connection.dialect >= Dialects.SMB_3_0_0
        assert all(s.encrypt_data for s in connection.session_table.values())
    finally:
        fs.close()


@pytest.mark.litmus
def test_litmus_passes_every_suite_on_azure_files(server: Live, tmp_path: Path) -> None:
    output = run_litmus(server.url + "/azure/", *ACME_LOGIN, str(tmp_path))
    summaries = {m.group(1): m.groups()[1:] for m in SUMMARY.finditer(output)}
    assert set(summaries) == set(SUITES), output
    for suite, (run, passed, failed) in summaries.items():
        assert failed == "0" and run == passed, f"{suite}: {output}"


def _config(tmp_path: Path, **provider: Any) -> Path:
    config = tmp_path / "mosaic.yaml"
    config.write_text(yaml.safe_dump({"tenants": {"acme": {
        "root": {"type": "local", "root": str(tmp_path / "root")},
        "mounts": {"/azure": {"provider": {**samba.azure_files_provider(), **provider}}}}}}))
    return config


def test_an_smb_2_1_client_setting_is_refused(tmp_path: Path) -> None:
    # the configuration cannot ask for less than Azure's SMB 3 or for no encryption
    for setting, named in [({"min_dialect": "2.1"}, "min_dialect"),
                           ({"encrypt": False}, "encrypt"),
                           ({"account": "Not_An_Account"}, "account")]:
        with pytest.raises(ConfigError) as refused:
            load_config(_config(tmp_path, **setting))
        assert named in str(refused.value)
        assert samba.AZURE.password not in str(refused.value)
    assert load_config(_config(tmp_path, min_dialect="3.1.1"))
    # and the share, like Azure's, turns an SMB 2.1 client away at the tree connect
    connection = Connection(uuid.uuid4(), "127.0.0.1", samba.server().port)
    connection.connect(Dialects.SMB_2_1_0)
    try:
        session = Session(connection, samba.AZURE.user, samba.AZURE.password,
                          require_encryption=False, auth_protocol="ntlm")
        session.connect()
        with pytest.raises(SMBException) as refused_client:
            TreeConnect(session, r"\\127.0.0.1\azurefiles").connect()
        assert "STATUS_ACCESS_DENIED" in str(refused_client.value)
    finally:
        connection.disconnect()


def test_a_wrong_key_is_503_and_no_key_is_logged(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "azure-key"
    key_file.write_text(samba.AZURE.password + "\n")
    monkeypatch.setenv("MOSAIC_TEST_WRONG_AZURE_KEY", WRONG_KEY)
    folder = samba.fresh_folder("azurefiles", samba.AZURE)
    process = two_tenant_process(tmp_path, log_level="debug",
                                 log_levels={"smbprotocol": "debug", "spnego": "debug"})
    right = samba.azure_files_provider(path=folder)
    del right["account_key"]
    wrong = {**right, "account_key": "${MOSAIC_TEST_WRONG_AZURE_KEY}"}
    process.config["tenants"]["acme"]["mounts"] = {
        "/azure": {"provider": {**right, "account_key_file": str(key_file)}},
        "/guessed": {"provider": wrong}}
    with process:
        url = f"http://127.0.0.1:{process.port}"
        put = requests.put(f"{url}/azure/kept.txt", data=b"kept", auth=ACME_LOGIN, timeout=30)
        assert put.status_code == 201
        for method in ("PROPFIND", "GET", "PUT"):
            reply = requests.request(method, f"{url}/guessed/kept.txt", auth=ACME_LOGIN,
                                     data=b"x" if method == "PUT" else None, timeout=30,
                                     headers={"Depth": "1"} if method == "PROPFIND" else {})
            assert reply.status_code == 503, (method, reply.status_code)
            assert b"kept" not in reply.content
        assert requests.get(f"{url}/azure/kept.txt", auth=ACME_LOGIN, timeout=30).content \
            == b"kept"
    log = process.log()
    assert "tenant acme: mount /guessed (azure_files) unavailable: the file server refused the " \
           "account" in log
    assert samba.AZURE.password not in log and WRONG_KEY not in log
    assert process.tracebacks() == 0
    assert (samba.server().share_dir("azurefiles") / folder / "kept.txt").read_bytes() == b"kept"
