"""The azure_blob provider beyond the conformance suite, against Azurite.

Each auth method Azurite accepts (account key, connection string, a SAS made
from the key; a service principal needs Entra ID and https, so only its
validation is tested), refused credentials and a missing container, the store
going down (503 for that mount only, recovery without a restart), an upload
cut off by a crash of the store, a move between an Azure and an S3 mount, and
litmus on an Azure tenant root and an Azure mount.
"""

from __future__ import annotations

import base64
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from pydantic import ValidationError

from mosaic import providers
from mosaic.config.loader import load_config
from mosaic.core.capabilities import BuildContext
from mosaic.core.errors import MountUnavailableError
from mosaic.providers.azure_blob import BlobStore, read_listing_page
from mosaic.providers.primitives import MTIME_KEY, Listing
from tests.support import azurite, scenarios, tenants
from tests.support.azurite import Azurite, stoppable_azurite  # noqa: F401 (fixture)
from tests.support.live import live_server
from tests.support.scenarios import ALICE, MIB, Outage, Traffic
from tests.test_isolation import DAVE, raw_request
from tests.test_isolation_objectstores import TRAVERSALS

WRONG_KEY = base64.b64encode(b"not the account key, 64 bytes long....." * 2)[:88].decode()


def _options(spec: dict[str, Any]) -> Any:
    module = providers.load("azure_blob")
    return module.Options.model_validate({k: v for k, v in spec.items() if k != "type"})


def _build(spec: dict[str, Any], tmp_path: Path) -> Any:
    return providers.load("azure_blob").build(_options(spec),
                                              BuildContext("acme", "/cloud", tmp_path))


def _sas(container: str) -> str:
    permissions = ContainerSasPermissions(read=True, add=True, create=True, write=True,
                                          delete=True, list=True)
    return generate_container_sas(azurite.ACCOUNT, container, account_key=azurite.KEY,
                                  permission=permissions,
                                  expiry=datetime.now(UTC) + timedelta(hours=1))


def _container(container: str, server: Azurite | None = None) -> Any:
    return (server or azurite.shared()).service().get_container_client(container)


def _watch_transport(fs: Any, hook: scenarios.RequestHook) -> None:
    """Every request of the mount's client, retries included, passes its transport."""
    transport = fs._store.client._pipeline._transport
    send = transport.send

    def watched(request: Any, **kwargs: Any) -> Any:
        hook(request.method, request.url)
        return send(request, **kwargs)

    transport.send = watched


#: listings are "List Blobs": ?restype=container&comp=list
TRAFFIC = Traffic(_watch_transport, lambda _method, url: "comp=list" in url)


def _settle() -> None:
    """Azurite writes its blob index to disk every few seconds: wait for it to save
    what was written, or a SIGKILL loses it with the emulator's memory."""
    time.sleep(azurite.AUTOSAVE_S + 1)


def _killing(server: Azurite) -> Outage:
    return Outage(lambda: server.stop(kill=True), server.start)


# -- auth ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["account_key", "connection_string", "sas_token"])
def test_each_auth_method_azurite_supports(method: str, tmp_path: Path) -> None:
    container = azurite.fresh_container()
    auth = {"account_key": {"account_key": azurite.KEY},
            "connection_string": {"connection_string": azurite.shared().connection_string()},
            "sas_token": {"sas_token": "?" + _sas(container)}}[method]
    fs = _build(azurite.provider(container, prefix="root", **auth), tmp_path)
    fs.makedirs("a/b")
    with fs.open("a/b/f", "wb") as handle:
        handle.write(b"content")
    fs.mv("a", "c")
    assert fs.cat_file("c/b/f") == b"content"
    assert [blob.name for blob in _container(container).list_blobs()] == [
        "root/c/", "root/c/b/", "root/c/b/f"]
    fs.rm("c", recursive=True)  # a blob batch: deletes under this auth too
    assert list(_container(container).list_blobs()) == []


def test_exactly_one_auth_method_is_required() -> None:
    base = {"container": "files", "account": "acct"}
    for auth, message in [
        ({}, "given: none"),
        ({"account_key": "k", "sas_token": "s"}, "given: account_key, sas_token"),
        ({"tenant_id": "t", "client_id": "c"}, "tenant_id, client_id and client_secret"),
        ({"account_key": "k", "tenant_id": "t", "client_id": "c", "client_secret": "s"},
         "given: account_key, service principal"),
    ]:
        with pytest.raises(ValidationError, match=message):
            _options({**base, **auth})
    with pytest.raises(ValidationError, match="drop account and account_url"):
        _options({**base, "connection_string": "AccountName=acct"})
    with pytest.raises(ValidationError, match="account is required"):
        _options({"container": "files", "sas_token": "sv=x"})
    with pytest.raises(ValidationError, match="container"):
        _options({**base, "container": "Not_Valid", "account_key": "k"})
    with pytest.raises(ValidationError, match="https"):
        _options({**base, "account_url": "http://127.0.0.1:10000/acct", "tenant_id": "t",
                  "client_id": "c", "client_secret": "s"})


def test_service_principal_is_validated_and_its_credential_is_per_mount(tmp_path: Path) -> None:
    """Validation only: a token needs Entra ID and an https endpoint (the SDK
    refuses bearer tokens over plain http), neither of which Azurite offers."""
    spec = {"type": "azure_blob", "container": "files", "account": "acct",
            "tenant_id": "00000000-0000-0000-0000-000000000001", "client_id": "app",
            "client_secret": "principal-secret", "authority_host": "login.microsoftonline.us"}
    options = _options(spec)
    assert "principal-secret" not in repr(options)
    assert options.endpoint() == "https://acct.blob.core.windows.net"
    first, second = _build(spec, tmp_path), _build(spec, tmp_path)
    credentials = [fs._store.client.credential for fs in (first, second)]
    assert type(credentials[0]).__name__ == "ClientSecretCredential"
    assert credentials[0] is not credentials[1]


@pytest.mark.parametrize("auth", [{"account_key": WRONG_KEY}, "forged sas"])
def test_refused_credentials_name_tenant_and_mount_never_the_secret(auth: Any,
                                                                   tmp_path: Path) -> None:
    container = azurite.fresh_container()
    if auth == "forged sas":
        sas = _sas(container)
        auth = {"sas_token": sas.replace("sig=", "sig=AAAA")}
    fs = _build(azurite.provider(container, **auth), tmp_path)
    for attempt in (lambda: fs.ls(""), lambda: fs.info("x"), lambda: fs.touch("x")):
        with pytest.raises(MountUnavailableError, match="credentials refused") as caught:
            attempt()
        message = str(caught.value)
        assert "'acme'" in message and "'/cloud'" in message
        secret = next(iter(auth.values()))
        assert secret not in message and secret[:20] not in message
        assert azurite.endpoint() not in message


def test_missing_container_names_tenant_and_mount(tmp_path: Path) -> None:
    fs = _build(azurite.provider("no-such-container"), tmp_path)
    for attempt in (lambda: fs.ls(""), lambda: fs.info("x"), lambda: fs.mkdir("d")):
        with pytest.raises(MountUnavailableError, match="container not found") as caught:
            attempt()
        assert "'acme'" in str(caught.value) and "'/cloud'" in str(caught.value)


def test_secrets_come_from_env_and_files_and_are_masked(tmp_path: Path, monkeypatch) -> None:
    container = azurite.fresh_container()
    (tmp_path / "connection.txt").write_text(azurite.shared().connection_string() + "\n")
    monkeypatch.setenv("MOSAIC_TEST_AZURE_KEY", azurite.KEY)
    mounts = {
        "/by-file": {"provider": {"type": "azure_blob", "container": container,
                                  "connection_string_file": str(tmp_path / "connection.txt")}},
        "/by-env": {"provider": {**azurite.provider(container),
                                 "account_key": "${MOSAIC_TEST_AZURE_KEY}"}},
    }
    config_file = tmp_path / "mosaic.yaml"
    config_file.write_text(yaml.safe_dump({"tenants": {"acme": {
        "root": {"type": "memory"}, "mounts": mounts}}}))
    config = load_config(config_file)
    for path in mounts:
        spec = config.tenants["acme"].mounts[path].provider
        assert azurite.KEY not in repr(spec) and azurite.KEY[:20] not in repr(spec)
        fs = providers.load("azure_blob").build(spec.options(),
                                                BuildContext("acme", path, tmp_path))
        fs.touch(f"written{path.replace('/', '-')}")
    assert len(list(_container(container).list_blobs())) == 2


# -- blobs --------------------------------------------------------------------------------

def test_large_upload_is_staged_blocks_committed_once(tmp_path: Path) -> None:
    container = azurite.fresh_container()
    fs = _build({**azurite.provider(container), "part_size_mib": 5}, tmp_path)
    data = os.urandom(17 * MIB + 5)
    with fs.open("big", "wb") as handle:
        for start in range(0, len(data), MIB):
            handle.write(data[start:start + MIB])
    committed, uncommitted = _container(container).get_blob_client("big").get_block_list("all")
    assert [block.size for block in committed] == [5 * MIB] * 3 + [2 * MIB + 5]
    assert uncommitted == []
    with fs.open("big", "rb") as handle:
        handle.seek(9 * MIB - 3)
        assert handle.read(7) == data[9 * MIB - 3:9 * MIB + 4]
        handle.seek(0)
        assert handle.read() == data


def test_discarded_upload_commits_nothing_and_keeps_the_previous_blob(tmp_path: Path) -> None:
    container = azurite.fresh_container()
    fs = _build({**azurite.provider(container), "part_size_mib": 5}, tmp_path)
    fs.pipe_file("f", b"previous")
    etag = fs.info("f")["etag"]
    upload = fs.open("f", "wb", autocommit=False)
    upload.write(os.urandom(12 * MIB))  # two blocks staged
    upload.discard()
    assert fs.cat_file("f") == b"previous" and fs.info("f")["etag"] == etag
    blob = _container(container).get_blob_client("f")
    assert blob.get_blob_properties().size == len(b"previous")
    # the staged blocks stay uncommitted (Azure drops them after 7 days), never visible
    assert len(blob.get_block_list("uncommitted")[1]) == 2


def test_a_blob_replaced_while_read_fails_the_read_instead_of_mixing(tmp_path: Path) -> None:
    fs = _build({**azurite.provider(azurite.fresh_container()), "read_ahead_mib": 1},
                tmp_path)
    old = os.urandom(3 * MIB)
    fs.pipe_file("f", old)
    with fs.open("f", "rb") as handle:
        assert handle.read(MIB) == old[:MIB]
        fs.pipe_file("f", os.urandom(3 * MIB))
        handle.seek(0)  # before the blocks fetched: a new ranged read
        with pytest.raises(OSError, match="ConditionNotMet"):
            handle.read(MIB)


def test_etags_are_the_stores_strong_and_unquoted(tmp_path: Path) -> None:
    container = azurite.fresh_container()
    fs = _build(azurite.provider(container), tmp_path)
    fs.pipe_file("f", b"x")
    native = _container(container).get_blob_client("f").get_blob_properties().etag
    assert native.startswith('"0x')
    assert fs.info("f")["etag"] == native.strip('"')
    assert fs.ls("")[0]["etag"] == native.strip('"')


def test_set_mtime_is_stored_as_an_identifier_and_listed(tmp_path: Path) -> None:
    container = azurite.fresh_container()
    fs = _build({**azurite.provider(container), "listing_cache_seconds": 0}, tmp_path)
    fs.pipe_file("f", b"content")
    fs.mkdir("d")
    fs.set_mtime("f", 1_600_000_000.5)
    fs.set_mtime("d", 1_500_000_000.0)
    blob = _container(container).get_blob_client("f").get_blob_properties()
    assert blob.metadata == {"mosaic_mtime": "1600000000.5"}  # "mosaic-mtime" is refused
    assert fs.cat_file("f") == b"content"  # set in place: content untouched
    assert fs.info("f")["mtime"] == 1_600_000_000.5
    assert fs.info("d")["mtime"] == 1_500_000_000.0
    assert {e["name"]: e["mtime"] for e in fs.ls("")}["f"] == 1_600_000_000.5  # one listing
    fs.mv("f", "g")  # a move keeps it; a copy is a new file
    fs.cp_file("g", "h")
    assert fs.info("g")["mtime"] == 1_600_000_000.5
    assert fs.info("h")["mtime"] > 1_700_000_000
    assert _container(container).get_blob_client("h").get_blob_properties().metadata == {}
    assert fs._store.head("g").metadata == {MTIME_KEY: "1600000000.5"}


def test_folders_other_tools_made_without_markers_are_listed_once(tmp_path: Path) -> None:
    container = azurite.fresh_container()
    scenarios.folders_other_tools_made_without_markers_are_listed_once(
        _build(azurite.provider(container), tmp_path), _container(container).upload_blob)


def test_get_serves_a_file_another_tool_replaced_whole_and_new(tmp_path: Path, monkeypatch) -> None:
    container = azurite.fresh_container()
    scenarios.get_serves_a_file_another_tool_replaced_whole_and_new(
        tmp_path, azurite.provider(container),
        lambda name, data: _container(container).upload_blob(name, data, overwrite=True),
        BlobStore, monkeypatch)


def test_warm_listing_costs_no_request_and_own_writes_show_at_once(tmp_path: Path) -> None:
    container = azurite.fresh_container()
    fs = _build({**azurite.provider(container), "listing_cache_seconds": 1}, tmp_path)
    scenarios.warm_listing_costs_no_request_and_own_writes_show_at_once(
        fs, TRAFFIC, _container(container).upload_blob)


def test_listing_pages_and_a_listing_is_one_request_per_page(tmp_path: Path) -> None:
    container = azurite.fresh_container()
    fs = _build({**azurite.provider(container), "listing_cache_seconds": 0}, tmp_path)
    fs.mkdir("d")
    for i in range(7):
        fs.touch(f"d/f{i}")
    fs.mkdir("d/sub")
    fs._store.page_size = 3
    requests_seen = scenarios.record_requests(fs, TRAFFIC)
    assert len(fs.ls("d")) == 8
    assert requests_seen == ["GET"] * 3  # 9 names (7 files, sub/ and the marker): 3 pages


def test_every_mount_has_its_own_client_session_and_pool(tmp_path: Path) -> None:
    spec = azurite.provider(azurite.fresh_container())
    first, second = _build(spec, tmp_path), _build(spec, tmp_path)
    first.ls("")
    second.ls("")
    clients = [fs._store.client for fs in (first, second)]
    assert clients[0] is not clients[1]
    transports = [client._pipeline._transport for client in clients]
    assert transports[0] is not transports[1]
    assert transports[0].session is not transports[1].session


def test_a_missing_azurite_is_a_clear_failure(monkeypatch) -> None:
    monkeypatch.setattr(azurite, "BINARY", Path("/nonexistent/azurite-blob"))
    with pytest.raises(RuntimeError, match="npm ci"):
        Azurite()


# -- faults -------------------------------------------------------------------------------

@pytest.fixture
def cloud_server(stoppable_azurite: Azurite, tmp_path: Path):  # noqa: F811
    """acme with /cloud on an Azurite the test may stop (SIGTERM) or kill."""
    container = stoppable_azurite.fresh_container()
    outage = Outage(stoppable_azurite.stop, stoppable_azurite.start)
    with scenarios.cloud_server(tmp_path, azurite.provider(container, server=stoppable_azurite),
                                outage, container) as cloud:
        yield cloud


def test_sized_put_is_one_streamed_request_and_a_cut_off_one_leaves_the_previous_version(
        cloud_server, stoppable_azurite, monkeypatch) -> None:  # noqa: F811
    blob = stoppable_azurite.service().get_container_client(
        cloud_server.container).get_blob_client("f.bin")
    scenarios.sized_put_is_one_streamed_request_and_a_cut_off_one_leaves_the_previous_version(
        cloud_server, monkeypatch, lambda: blob.get_block_list("all") == ([], []))


def test_store_down_is_503_for_that_mount_only_and_recovers(cloud_server) -> None:
    scenarios.store_down_is_503_for_that_mount_only_and_recovers(cloud_server)


def test_puts_cut_off_by_a_crash_of_the_store_leave_no_partial_blob(
        cloud_server, stoppable_azurite: Azurite) -> None:  # noqa: F811
    def only_the_previous_blob() -> None:
        blobs = _container(cloud_server.container, stoppable_azurite).list_blobs()
        assert [(blob.name, blob.size) for blob in blobs] == [("f.bin", len(b"previous"))]

    # more than two blocks before the crash: several are staged
    cut = scenarios.CutUpload(before_mib=20, after_mib=10, settle=_settle,
                              leftovers=only_the_previous_blob)
    crashing = replace(cloud_server, outage=_killing(stoppable_azurite))
    scenarios.puts_cut_off_by_the_outage_leave_the_previous_version_and_no_new_file(
        crashing, cut)


def test_store_killed_between_listing_pages_then_recovery(
        stoppable_azurite: Azurite, tmp_path: Path) -> None:  # noqa: F811
    spec = {**azurite.provider(stoppable_azurite.fresh_container(), server=stoppable_azurite),
            "listing_cache_seconds": 0}
    scenarios.outage_between_listing_pages_then_recovery(
        _build(spec, tmp_path), _killing(stoppable_azurite), TRAFFIC, settle=_settle)


# -- through WebDAV -----------------------------------------------------------------------

def test_moves_between_an_azure_mount_and_an_s3_mount(tmp_path: Path) -> None:
    scenarios.moves_between_a_mount_and_an_s3_mount(
        tmp_path, azurite.provider(azurite.fresh_container()))


@pytest.fixture(scope="module")
def azure_server(tmp_path_factory):
    """globex's root on Azure, and acme's /cloud mount on Azure."""
    with scenarios.litmus_server(
            tmp_path_factory.mktemp("azure-litmus"),
            lambda prefix: azurite.provider(azurite.fresh_container(), prefix=prefix)) as live:
        yield live


@pytest.mark.litmus
@pytest.mark.parametrize("where", scenarios.LITMUS_PLACES)
def test_litmus_passes_every_suite_on_azure(azure_server, where: str, tmp_path: Path) -> None:
    scenarios.litmus_passes(azure_server, where, tmp_path)


def test_windows_set_modification_time_is_kept_and_listed(
        cloud_server, stoppable_azurite: Azurite) -> None:  # noqa: F811
    def stored_time(name: str) -> float:
        blob = _container(cloud_server.container, stoppable_azurite).get_blob_client(name)
        return float(blob.get_blob_properties().metadata["mosaic_mtime"])

    # Azure listings carry metadata
    scenarios.windows_set_modification_time_survives_in_metadata(
        cloud_server, stored_time, listings_carry_it=True)


COUNT = 10_000


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
    """acme's /cloud on a container whose "big/" holds 10,000 blobs another tool wrote."""
    container = azurite.fresh_container()
    client = _container(container)
    names = [f"big/Quarterly report {index:05}.xlsx" for index in range(COUNT)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: client.upload_blob(name, b"x"), names))
    data = tenants.two_tenants(tmp_path_factory.mktemp("azure-listing"))
    data["tenants"]["acme"]["mounts"]["/cloud"] = {"provider": {
        **azurite.provider(container), "listing_cache_seconds": 0}}
    with live_server(tenants.build(data)) as live:
        yield live


def test_ten_thousand_blobs_are_listed_once_each_from_paged_listings(big_folder,
                                                                     monkeypatch) -> None:
    requests_seen: list[tuple[str, str]] = []
    send = RequestsTransport.send

    def counting(self: Any, request: Any, **kwargs: Any) -> Any:
        requests_seen.append((request.method, "list" if "comp=list" in request.url else ""))
        return send(self, request, **kwargs)

    monkeypatch.setattr(RequestsTransport, "send", counting)
    alice = big_folder.session(*ALICE)
    reply = alice.request("PROPFIND", big_folder.url + "/cloud/big/", headers={"Depth": "1"},
                          timeout=300)
    assert reply.status_code == 207
    hrefs = re.findall(r"<D:href>([^<]*)</D:href>", reply.text)
    assert len(hrefs) == COUNT + 1 == len(set(hrefs))
    # pages of 5,000 names, one probe finding the folder (it has no marker), and
    # a few HEADs for the folder itself: never a request per entry
    assert requests_seen.count(("GET", "list")) == COUNT // 5000 + 1
    assert len(requests_seen) <= COUNT // 5000 + 1 + 3


def test_folder_move_copies_everything_or_rolls_back(tmp_path: Path) -> None:
    container = azurite.fresh_container()
    scenarios.folder_move_copies_everything_or_rolls_back(
        _build(azurite.provider(container), tmp_path),
        lambda: sorted(blob.name for blob in _container(container).list_blobs()))


def test_two_tenants_on_one_container_under_adjacent_prefixes(tmp_path: Path) -> None:
    """acme below "acme", globex below "acme-evil": no path, listing or warm
    cache of globex shows anything of acme (the shared layer's rules, on Azure)."""
    sentinel = b"ACME-BLOB-SECRET-5e1f"
    container = azurite.fresh_container()
    _container(container).upload_blob("acme/secret.txt", sentinel)
    data = tenants.two_tenants(tmp_path)
    data["tenants"]["acme"]["root"] = azurite.provider(container, prefix="acme")
    data["tenants"]["globex"]["root"] = azurite.provider(container, prefix="acme-evil")
    with live_server(tenants.build(data)) as live:
        acme, dave = live.session(*ALICE), live.session("dave@globex.example", "dave-secret")
        for target in TRAVERSALS:
            for method in ("GET", "PROPFIND", "DELETE"):
                reply = raw_request(live.port, method, target, DAVE, {"Depth": "1"})
                assert sentinel not in reply and container.encode() not in reply, target
        assert dave.put(live.url + "/same-name.txt", data=b"globex's").status_code == 201
        assert acme.put(live.url + "/same-name.txt", data=b"acme's").status_code == 201
        for _ in range(2):  # cold, then warm from each mount's listing cache
            globex_list = dave.request("PROPFIND", live.url + "/", headers={"Depth": "1"}).text
            assert "secret.txt" not in globex_list
            assert dave.get(live.url + "/same-name.txt").content == b"globex's"
        assert dave.get(live.url + "/secret.txt").status_code == 404
    assert _container(container).download_blob("acme/secret.txt").readall() == sentinel


def test_a_listing_page_is_read_with_encoded_names_metadata_and_the_next_marker() -> None:
    """The raw List Blobs XML, as Azure documents it (Azurite never encodes a name)."""
    page = b"""<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://a.blob.core.windows.net/" ContainerName="c">
  <Prefix>d/</Prefix><MaxResults>2</MaxResults><Delimiter>/</Delimiter>
  <Blobs>
    <Blob><Name>d/plain.txt</Name><Properties>
      <Last-Modified>Wed, 02 Dec 2026 16:00:00 GMT</Last-Modified><Etag>0x8DC1</Etag>
      <Content-Length>1024</Content-Length></Properties>
      <Metadata><mosaic_mtime>1577872800.0</mosaic_mtime></Metadata></Blob>
    <Blob><Name Encoded="true">d/bell%07.txt</Name><Properties>
      <Last-Modified>Wed, 02 Dec 2026 16:00:01 GMT</Last-Modified><Etag>0x8DC2</Etag>
      <Content-Length>0</Content-Length></Properties><Metadata /></Blob>
    <BlobPrefix><Name>d/sub/</Name></BlobPrefix>
  </Blobs>
  <NextMarker>2!16!bWFya2Vy</NextMarker>
</EnumerationResults>"""
    listing = Listing()
    assert read_listing_page(page, listing) == "2!16!bWFya2Vy"
    plain, bell = listing.objects
    assert (plain.key, plain.size, plain.etag, plain.mtime) == (
        "d/plain.txt", 1024, "0x8DC1", 1796227200.0)
    assert plain.metadata == {MTIME_KEY: "1577872800.0"}
    assert (bell.key, bell.size, bell.metadata) == ("d/bell\x07.txt", 0, {})
    assert listing.prefixes == ["d/sub/"]
    assert read_listing_page(page.replace(b"<NextMarker>2!16!bWFya2Vy</NextMarker>",
                                          b"<NextMarker />"), Listing()) is None
