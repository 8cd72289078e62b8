"""The swift and rackspace providers beyond the conformance suite.

Each auth (v1 tempauth, Keystone v3 and Rackspace through the fixture's
identity endpoint), refusals naming tenant and mount only, the store going
down (503 for that mount only, recovery by itself), cut-off uploads leaving
nothing behind, Static Large Objects beyond the store's single-object limit,
and litmus through WebDAV on a Swift tenant root and a Swift mount.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from mosaic import providers
from mosaic.core.capabilities import BuildContext
from mosaic.core.errors import MountUnavailableError
from mosaic.providers.swift import POOL_IDLE, SwiftStore, _utc_seconds
from tests.support import scenarios, swift, tenants
from tests.support.live import live_server
from tests.support.scenarios import ALICE, MIB, Outage, Traffic, eventually
from tests.support.swift import (  # noqa: F401 (identity, swift_cluster: fixtures)
    MAX_FILE_SIZE,
    Identity,
    SwiftCluster,
    identity,
    swift_cluster,
)

#: every request goes through the store's call(method, ...): listings are GET container
TRAFFIC = Traffic(scenarios.watch_store_calls,
                  lambda method, _target: method == "get_container")


def _build(spec: dict[str, Any], tmp_path: Path, name: str = "swift") -> Any:
    module = providers.load(spec.get("type", name))
    options = module.Options.model_validate({k: v for k, v in spec.items() if k != "type"})
    return module.build(options, BuildContext("acme", "/cloud", tmp_path))


def _keystone(identity: Identity, container: str, **extra: Any) -> dict[str, Any]:  # noqa: F811
    return {"type": "swift", "auth_url": identity.url + "/v3", "username": identity.username,
            "password": identity.password, "project_name": identity.project,
            "region": identity.region, "container": container, **extra}


def _rackspace(identity: Identity, container: str, **extra: Any) -> dict[str, Any]:  # noqa: F811
    return {"type": "rackspace", "identity_url": identity.url + "/v2.0",
            "username": identity.username, "api_key": identity.api_key,
            "region": identity.region, "container": container, **extra}


def _round_trip(fs: Any) -> None:
    fs.mkdir("d")
    with fs.open("d/f.txt", "wb") as handle:
        handle.write(b"hello swift")
    assert fs.cat_file("d/f.txt") == b"hello swift"
    assert [e["name"] for e in fs.ls("d")] == ["d/f.txt"]


# -- auth ---------------------------------------------------------------------------------


def test_auth_v1_keystone_v3_and_rackspace_reach_the_same_account(identity, tmp_path):  # noqa: F811
    container = swift.fresh_container()
    _round_trip(_build(swift.provider(container, prefix="v1"), tmp_path))
    _round_trip(_build(_keystone(identity, container, prefix="v3"), tmp_path))
    _round_trip(_build(_rackspace(identity, container, prefix="rax"), tmp_path))
    assert identity.requests == ["/v3/auth/tokens", "/v2.0/tokens"]  # once per mount
    assert {n.split("/")[0] for n in swift.cluster().names(container)} == {"v1", "v3", "rax"}


@pytest.mark.parametrize("interface", ["public", "internal", "admin"])
def test_keystone_picks_the_endpoint_of_the_region_and_interface(identity, tmp_path,  # noqa: F811
                                                                 interface):
    fs = _build(_keystone(identity, swift.fresh_container(), interface=interface), tmp_path)
    _round_trip(fs)
    other = _build(_keystone(identity, swift.fresh_container(), region="Nowhere"), tmp_path)
    with pytest.raises(MountUnavailableError, match="unreachable"):
        other.ls("")


@pytest.mark.parametrize("kind", ["v1", "v3", "rackspace"])
def test_wrong_credentials_name_tenant_and_mount_never_the_secret(identity, tmp_path,  # noqa: F811
                                                                   kind):
    container = swift.fresh_container()
    spec = {"v1": {**swift.provider(container), "key": "wrong-secret-value"},
            "v3": {**_keystone(identity, container), "password": "wrong-secret-value"},
            "rackspace": {**_rackspace(identity, container), "api_key": "wrong-secret-value"},
            }[kind]
    with pytest.raises(MountUnavailableError, match="credentials") as caught:
        _build(spec, tmp_path).ls("")
    message = str(caught.value)
    assert "acme" in message and "/cloud" in message
    assert "wrong-secret-value" not in message and "127.0.0.1" not in message


def test_missing_container_names_tenant_and_mount(tmp_path):
    fs = _build(swift.provider("no-such-container-here"), tmp_path)
    with pytest.raises(MountUnavailableError, match="container") as caught:
        fs.ls("")
    assert "acme" in str(caught.value) and "/cloud" in str(caught.value)


def test_an_expired_token_is_renewed_once_for_the_whole_mount(tmp_path):
    fs = _build(swift.provider(swift.fresh_container()), tmp_path)
    fs.touch("f")
    store = fs._store
    store._auth = (store._auth[0], "AUTH_tk-expired")
    while not store._idle.empty():  # connections made with the old token
        store._idle.get_nowait().close()
    store._idle.put(swift_connection(store))
    assert fs.exists("f")
    assert store._auth[1] != "AUTH_tk-expired"


def swift_connection(store: Any) -> Any:
    from mosaic.providers.swift import _Connection
    return _Connection(store, *store._auth)


def test_every_mount_has_its_own_connections_and_token(identity, tmp_path):  # noqa: F811
    spec = _keystone(identity, swift.fresh_container())
    first, second = _build(spec, tmp_path), _build(spec, tmp_path)
    first.ls("")
    second.ls("")
    one, two = first._store, second._store
    assert one._idle is not two._idle
    assert {id(c) for c in one._idle.queue}.isdisjoint({id(c) for c in two._idle.queue})
    assert all(c._store is one for c in one._idle.queue)
    assert identity.requests == ["/v3/auth/tokens"] * 2  # each mount authenticated itself


def test_connections_are_never_used_by_two_threads_at_once(tmp_path):
    fs = _build(swift.provider(swift.fresh_container()), tmp_path)
    fs.mkdir("d")
    store, in_use, clashes = fs._store, set(), []
    connection = store.connection

    @contextmanager
    def watched():
        with connection() as conn:
            if id(conn) in in_use:
                clashes.append(conn)
            in_use.add(id(conn))
            try:
                yield conn
            finally:
                in_use.discard(id(conn))

    store.connection = watched
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: fs.pipe_file(f"d/f{i}", b"x" * i), range(40)))
    assert clashes == [] and len(fs.ls("d")) == 40
    assert store._idle.qsize() <= POOL_IDLE


# -- large objects ------------------------------------------------------------------------


def test_a_file_beyond_the_single_object_limit_is_a_static_large_object(swift_cluster,  # noqa: F811
                                                                         tmp_path):
    container = swift_cluster.fresh_container()
    too_big = os.urandom(MAX_FILE_SIZE + 3 * MIB + 7)
    refused = swift_cluster.request("PUT", f"{container}/direct", data=too_big)
    assert refused.status_code == 413  # the store's own limit, without segments
    fs = _build(swift.provider(container), tmp_path)
    with fs.open("big.bin", "wb") as handle:
        for start in range(0, len(too_big), MIB):
            handle.write(too_big[start:start + MIB])
    assert fs.cat_file("big.bin") == too_big
    head = swift_cluster.request("HEAD", f"{container}/big.bin")
    assert head.headers["X-Static-Large-Object"].lower() == "true"
    assert fs.info("big.bin")["size"] == len(too_big)
    assert '"' not in fs.info("big.bin")["etag"]  # SLO ETags come quoted
    assert len(swift_cluster.names(container + "_segments")) == 3  # 8 MiB parts
    with fs.open("big.bin", "rb") as handle:
        handle.seek(MAX_FILE_SIZE - 5)
        assert handle.read(10) == too_big[MAX_FILE_SIZE - 5:MAX_FILE_SIZE + 5]


def test_overwriting_or_deleting_a_large_file_deletes_its_segments(swift_cluster,  # noqa: F811
                                                                   tmp_path):
    container = swift_cluster.fresh_container()
    fs = _build(swift.provider(container, segments_container=f"{container}-parts"), tmp_path)
    fs.pipe_file("big", os.urandom(20 * MIB))
    first = swift_cluster.names(f"{container}-parts")
    assert len(first) == 3
    fs.pipe_file("big", os.urandom(17 * MIB))  # large again: new segments, old ones gone
    second = swift_cluster.names(f"{container}-parts")
    assert len(second) == 3 and not set(first) & set(second)
    fs.pipe_file("big", b"small now")
    assert swift_cluster.names(f"{container}-parts") == []
    fs.pipe_file("big", os.urandom(20 * MIB))
    fs.rm_file("big")
    assert swift_cluster.names(f"{container}-parts") == []
    assert swift_cluster.names(container) == []


def test_a_sized_upload_beyond_the_segment_limit_grows_its_parts(swift_cluster,  # noqa: F811
                                                                  tmp_path):
    """A cluster allowing 2 segments per manifest: a 20 MiB upload of announced
    size (over the 16 MiB max_file_size: in segments) goes in 2 parts of 10 MiB,
    one at a time (the memory of 4 parts of 8 MiB is not exceeded)."""
    container = swift_cluster.fresh_container()
    fs = _build(swift.provider(container), tmp_path)
    fs._store._info = {"swift": {"max_file_size": MAX_FILE_SIZE},
                       "slo": {"max_manifest_segments": 2}}
    data = os.urandom(20 * MIB)
    with fs.open("big", "wb", size=len(data)) as upload:
        for start in range(0, len(data), MIB):
            upload.write(data[start:start + MIB])
    segments = swift_cluster.request("GET", container + "_segments",
                                     params={"format": "json"}).json()
    assert [item["bytes"] for item in segments] == [10 * MIB] * 2
    assert fs.cat_file("big") == data


def test_an_unsized_upload_beyond_the_segment_limit_nests_its_manifests(
        swift_cluster, tmp_path):  # noqa: F811
    """A cluster allowing 2 segments per manifest: an upload of unknown size sends
    5 parts as they come; its manifest then lists 2 manifests of 2 (levels: 3, 2)."""
    container = swift_cluster.fresh_container()
    fs = _build(swift.provider(container, part_size_mib=5), tmp_path)
    fs._store._info = {"swift": {"max_file_size": MAX_FILE_SIZE},
                       "slo": {"max_manifest_segments": 2}}
    data = os.urandom(23 * MIB)
    with fs.open("big", "wb") as upload:
        for start in range(0, len(data), MIB):
            upload.write(data[start:start + MIB])
    assert fs.cat_file("big") == data
    with fs.open("big", "rb") as handle:
        handle.seek(12 * MIB - 3)
        assert handle.read(6) == data[12 * MIB - 3:12 * MIB + 3]
    names = swift_cluster.names(container + "_segments")
    assert sorted(name.rsplit("/", 1)[1][:2] for name in names) == \
        ["00"] * 5 + ["1-"] * 3 + ["2-"] * 2
    top = swift_cluster.request("GET", f"{container}/big", params={"multipart-manifest": "get"})
    assert len(top.json()) == 2
    assert fs._store.sweep_stale_segments(time.time() + 365 * 86400) == 0  # all in use
    fs.copy("big", "copy")
    fs.rm_file("big")
    assert fs.cat_file("copy") == data
    fs.rm_file("copy")
    assert swift_cluster.names(container + "_segments") == []


def test_copying_a_large_file_copies_its_content(swift_cluster, tmp_path):  # noqa: F811
    """Swift's COPY of a manifest alone would share the segments (deleting one
    file would break the other); of the content, it fails above the limit."""
    container = swift_cluster.fresh_container()
    fs = _build(swift.provider(container), tmp_path)
    data = os.urandom(MAX_FILE_SIZE + MIB)
    fs.mkdir("a")
    fs.pipe_file("a/big", data)
    fs.cp_file("a/big", "a/copy")
    fs.mv("a", "b")  # a folder move copies both again
    fs.rm_file("b/big")
    assert fs.cat_file("b/copy") == data
    assert fs.info("b/copy")["size"] == len(data)
    assert all(n.startswith("b/copy/") for n in swift_cluster.names(container + "_segments"))
    fs.set_mtime("b/copy", 1234567.0)  # a POST of the metadata: nothing is copied
    assert fs.info("b/copy")["mtime"] == 1234567.0
    assert fs.cat_file("b/copy") == data


def test_deleting_a_folder_deletes_its_large_files_segments_only(swift_cluster,  # noqa: F811
                                                                 tmp_path):
    container = swift_cluster.fresh_container()
    fs = _build(swift.provider(container), tmp_path)
    fs.mkdir("gone")
    fs.mkdir("gone-not")
    fs.pipe_file("gone/big", os.urandom(9 * MIB))
    fs.pipe_file("gone-not/big", os.urandom(9 * MIB))
    fs.rm("gone", recursive=True)
    assert {n.split("/")[0] for n in swift_cluster.names(container + "_segments")} == {
        "gone-not"}


def test_large_files_with_unusual_names_keep_and_lose_their_segments(swift_cluster,  # noqa: F811
                                                                     tmp_path):
    container = swift_cluster.fresh_container()
    fs = _build(swift.provider(container, prefix="Überall 100%"), tmp_path)
    fs.mkdir("dir #1")
    name = "dir #1/b\u00e4r ?&+;=@ x.bin"
    data = os.urandom(9 * MIB)
    fs.pipe_file(name, data)
    assert fs.cat_file(name) == data
    fs.cp_file(name, "dir #1/copy")
    fs.rm("dir #1", recursive=True)
    assert swift_cluster.names(container + "_segments") == []
    assert swift_cluster.names(container) == []


def test_without_bulk_delete_objects_are_deleted_one_by_one(tmp_path):
    fs = _build(swift.provider(swift.fresh_container()), tmp_path)
    fs._store._info = {}  # as on a cluster whose /info offers no bulk delete
    fs.mkdir("d")
    for i in range(12):
        fs.touch(f"d/f{i}")
    fs.rm("d", recursive=True)
    assert not fs.exists("d")


@pytest.mark.parametrize("text", ["2026-12-04T11:20:33.500000", "2026-12-04T11:20:33.5Z",
                                  "2026-12-04T12:20:33.500+01:00"])
def test_listing_times_are_utc_unless_they_name_a_zone(text):
    assert _utc_seconds(text) == 1796383233.5


def test_listings_page_by_marker(tmp_path):
    fs = _build(swift.provider(swift.fresh_container()), tmp_path)
    fs.mkdir("sub")
    for name in "abcdefg":
        fs.touch(name)
    fs._store.page_size = 3
    assert sorted(fs.ls("", detail=False)) == [*"abcdefg", "sub"]


def test_outage_between_listing_pages_then_recovery(swift_cluster, tmp_path):  # noqa: F811
    fs = _build(swift.provider(swift_cluster.fresh_container(), listing_cache_seconds=0),
                tmp_path)
    scenarios.outage_between_listing_pages_then_recovery(fs, _proxy_outage(swift_cluster),
                                                         TRAFFIC)


def _proxy_outage(cluster: SwiftCluster) -> Outage:
    """The proxy alone goes down: data and tokens (in memcached) survive."""
    return Outage(cluster.stop_proxy, cluster.start_proxy)


def test_folders_other_tools_made_without_markers_are_listed_once(swift_cluster,  # noqa: F811
                                                                  tmp_path):
    container = swift_cluster.fresh_container()
    scenarios.folders_other_tools_made_without_markers_are_listed_once(
        _build(swift.provider(container), tmp_path), _put_elsewhere(swift_cluster, container))


def _put_elsewhere(cluster: SwiftCluster, container: str) -> scenarios.PutElsewhere:
    def put(name: str, data: bytes) -> None:
        cluster.request("PUT", f"{container}/{name}", data=data).raise_for_status()
    return put


def test_get_serves_a_file_another_tool_replaced_whole_and_new(swift_cluster,  # noqa: F811
                                                               tmp_path, monkeypatch):
    container = swift_cluster.fresh_container()
    scenarios.get_serves_a_file_another_tool_replaced_whole_and_new(
        tmp_path, swift.provider(container), _put_elsewhere(swift_cluster, container),
        SwiftStore, monkeypatch)


def test_warm_listing_costs_no_request_and_own_writes_show_at_once(swift_cluster,  # noqa: F811
                                                                   tmp_path):
    container = swift_cluster.fresh_container()
    fs = _build(swift.provider(container, listing_cache_seconds=1), tmp_path)
    scenarios.warm_listing_costs_no_request_and_own_writes_show_at_once(
        fs, TRAFFIC, _put_elsewhere(swift_cluster, container))


def test_folder_move_copies_everything_or_rolls_back(swift_cluster, tmp_path):  # noqa: F811
    container = swift_cluster.fresh_container()
    scenarios.folder_move_copies_everything_or_rolls_back(
        _build(swift.provider(container), tmp_path),
        lambda: sorted(swift_cluster.names(container)))


def test_secrets_come_from_files_and_the_environment(identity, tmp_path,  # noqa: F811
                                                     monkeypatch):
    from mosaic.config.loader import load_config
    (tmp_path / "password").write_text(identity.password + "\n")
    monkeypatch.setenv("MOSAIC_TEST_RAX_KEY", identity.api_key)
    keystone = _keystone(identity, swift.fresh_container())
    del keystone["password"]
    rackspace = {**_rackspace(identity, swift.fresh_container()),
                 "api_key": "${MOSAIC_TEST_RAX_KEY}"}
    config_file = tmp_path / "mosaic.yaml"
    config_file.write_text(yaml.safe_dump({"tenants": {"acme": {
        "root": {"type": "memory"},
        "mounts": {"/ks": {"provider": {**keystone,
                                        "password_file": str(tmp_path / "password")}},
                   "/rax": {"provider": rackspace}}}}}))
    mounts = load_config(config_file).tenants["acme"].mounts
    for path in ("/ks", "/rax"):
        assert identity.password not in repr(mounts[path].provider)
        assert identity.api_key not in repr(mounts[path].provider)
        options = mounts[path].provider.options()
        module = providers.load(mounts[path].provider.type)
        _round_trip(module.build(options, BuildContext("acme", path, tmp_path)))


def test_rackspace_internal_interface_uses_the_servicenet_url(identity, tmp_path):  # noqa: F811
    fs = _build(_rackspace(identity, swift.fresh_container(), interface="internal"), tmp_path)
    _round_trip(fs)
    with pytest.raises(MountUnavailableError, match="unreachable"):
        _build(_rackspace(identity, swift.fresh_container(), region="ORD"), tmp_path).ls("")


# -- outages and cut-off uploads through WebDAV -------------------------------------------


@pytest.fixture
def cloud_server(swift_cluster: SwiftCluster, tmp_path: Path):  # noqa: F811
    """acme with /cloud on a Swift container (the test may stop the proxy)."""
    container = swift_cluster.fresh_container()
    with scenarios.cloud_server(tmp_path, swift.provider(container),
                                _proxy_outage(swift_cluster), container) as cloud:
        yield cloud


def test_store_down_is_503_for_that_mount_only_and_recovers(cloud_server):
    scenarios.store_down_is_503_for_that_mount_only_and_recovers(cloud_server)


def test_chunked_put_cut_off_by_the_client_leaves_the_previous_version_and_no_segments(
        cloud_server, swift_cluster, monkeypatch):  # noqa: F811
    """No size announced: the body goes in segments, dropped when it is cut off."""
    live, cluster, container = cloud_server.live, swift_cluster, cloud_server.container
    alice = live.session(*ALICE)
    assert alice.put(live.url + "/cloud/f.bin", data=b"previous").status_code == 201
    dropped: list[int] = []
    drop = SwiftStore.drop_upload

    def counting(self, prefix, tokens=()):
        tokens = list(tokens)
        drop(self, prefix, tokens)
        dropped.append(len(tokens))

    monkeypatch.setattr(SwiftStore, "drop_upload", counting)
    chunk = os.urandom(25 * MIB)  # three parts sent, then the client is gone
    scenarios.cut_off_put(cloud_server, "f.bin", "Transfer-Encoding: chunked\r\n",
                 f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    eventually(lambda: dropped)  # the server saw the cut and aborted the upload
    assert dropped == [3]
    assert cluster.names(container + "_segments") == []
    assert alice.get(live.url + "/cloud/f.bin").content == b"previous"
    assert cluster.names(container) == ["f.bin"]


def test_sized_put_is_one_streamed_request_and_a_cut_off_one_leaves_the_previous_version(
        cloud_server, swift_cluster, monkeypatch):  # noqa: F811
    # 12 MiB: more than a part, within the test cluster's max_file_size (16 MiB)
    segments = cloud_server.container + "_segments"
    scenarios.sized_put_is_one_streamed_request_and_a_cut_off_one_leaves_the_previous_version(
        cloud_server, monkeypatch, lambda: swift_cluster.names(segments) == [])


def test_puts_cut_off_by_the_outage_leave_nothing_once_the_store_is_back(
        cloud_server, swift_cluster):  # noqa: F811
    segments = cloud_server.container + "_segments"

    def two_segments_each() -> bool:
        return len(swift_cluster.names(segments)) == 4

    def segments_the_aborts_could_not_delete() -> None:
        assert two_segments_each()

    def swept_by_the_next_upload() -> None:
        assert swift_cluster.names(segments) == []
        assert swift_cluster.names(cloud_server.container) == ["f.bin"]

    # two 8 MiB segments of each upload stored before the proxy stops
    cut = scenarios.CutUpload(before_mib=18, after_mib=10, parts_stored=two_segments_each,
                              leftovers=segments_the_aborts_could_not_delete,
                              after_next_write=swept_by_the_next_upload)
    scenarios.puts_cut_off_by_the_outage_leave_the_previous_version_and_no_new_file(
        cloud_server, cut)


def test_move_between_a_swift_mount_and_an_s3_mount(swift_cluster, tmp_path):  # noqa: F811
    scenarios.moves_between_a_mount_and_an_s3_mount(
        tmp_path, swift.provider(swift_cluster.fresh_container()))


# -- litmus -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litmus_server(tmp_path_factory):
    """globex's root on a Swift container, and acme's /cloud mount on another."""
    with scenarios.litmus_server(
            tmp_path_factory.mktemp("litmus-swift"),
            lambda prefix: swift.provider(swift.fresh_container(), prefix=prefix)) as live:
        yield live


@pytest.mark.litmus
@pytest.mark.parametrize("where", scenarios.LITMUS_PLACES)
def test_litmus_on_a_swift_root_and_a_swift_mount(litmus_server, where, tmp_path):
    scenarios.litmus_passes(litmus_server, where, tmp_path)


# -- what a file browser sees -------------------------------------------------------------


def test_windows_set_modification_time_survives_in_metadata(cloud_server,
                                                           swift_cluster):  # noqa: F811
    def stored_time(name: str) -> float:
        head = swift_cluster.request("HEAD", f"{cloud_server.container}/{name}")
        return float(head.headers["X-Object-Meta-Mosaic-Mtime"])

    # a large object too: a POST of the metadata keeps its segments
    files = {"dated.txt": b"d", "dated.bin": os.urandom(MAX_FILE_SIZE + MIB)}
    scenarios.windows_set_modification_time_survives_in_metadata(
        cloud_server, stored_time, listings_carry_it=False, files=files)


def test_a_big_folder_is_listed_from_paged_listings_only(swift_cluster, tmp_path,  # noqa: F811
                                                        monkeypatch):
    """400 objects in pages of 100 (10,000 take minutes to create on a loaded
    2-core machine: Swift writes each object through four Python servers)."""
    container = swift_cluster.fresh_container()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:  # one request: bulk extract-archive
        for index in range(400):
            entry = tarfile.TarInfo(f"big/Quarterly report {index:05}.xlsx")
            entry.size = 1
            tar.addfile(entry, io.BytesIO(b"x"))
    created = swift_cluster.request("PUT", container, params={"extract-archive": "tar"},
                                    data=archive.getvalue(), headers={"Accept": "application/json"},
                                    timeout=300)
    assert created.json()["Number Files Created"] == 400
    calls: Counter[str] = Counter()
    call = SwiftStore.call

    def counting(self, method, *args, **kwargs):
        calls[method] += 1
        return call(self, method, *args, **kwargs)

    monkeypatch.setattr(SwiftStore, "call", counting)
    monkeypatch.setattr(SwiftStore, "page_size", 100)
    data = tenants.two_tenants(tmp_path)
    data["tenants"]["acme"]["mounts"]["/cloud"] = {
        "provider": swift.provider(container, listing_cache_seconds=0)}
    with live_server(tenants.build(data)) as live:
        reply = live.session(*ALICE).request("PROPFIND", live.url + "/cloud/big/",
                                             headers={"Depth": "1"}, timeout=300)
    assert reply.status_code == 207
    hrefs = re.findall(r"<D:href>([^<]*)</D:href>", reply.text)
    assert len(hrefs) == 401 == len(set(hrefs))
    # four full pages, an empty last one, and probes finding the folder (no marker)
    assert calls["get_container"] <= 7, calls
    assert calls["head_object"] <= 3 and "get_object" not in calls, calls


def test_segments_a_killed_process_left_are_swept(swift_cluster, tmp_path):  # noqa: F811
    container = swift_cluster.fresh_container()
    fs = _build(swift.provider(container, prefix="mine"), tmp_path)
    fs.pipe_file("live.bin", os.urandom(9 * MIB))  # a large file: its segments stay
    segments = container + "_segments"
    dead, gone = "de" * 16, "ca" * 16
    for name in (f"mine/live.bin/{dead}/00000001", f"mine/gone.bin/{gone}/00000001",
                 f"mine/gone.bin/{gone}/00000002", f"theirs/x/{'fe' * 16}/00000001",
                 "mine/cli.bin/slo/1700000000.000000/9437184/1048576/00000000"):  # swift CLI's
        swift_cluster.request("PUT", f"{segments}/{name}", data=b"orphan").raise_for_status()
    kept = {n for n in swift_cluster.names(segments) if dead not in n and gone not in n}
    # the segments' times are not comparable with ours: sweep "everything so far"
    assert fs._store.sweep_stale_segments(time.time() + 365 * 86400) == 3
    assert set(swift_cluster.names(segments)) == kept  # live.bin's, other mounts' and tools'
    assert len(kept) == 4  # two of live.bin
    assert fs.cat_file("live.bin")[:1]
    fresh = f"mine/new.bin/{'be' * 16}/00000001"  # an upload of another process, just begun
    swift_cluster.request("PUT", f"{segments}/{fresh}", data=b"x").raise_for_status()
    assert fs._store.sweep_stale_segments(time.time() - 3600) == 0
    assert fresh in swift_cluster.names(segments)


@pytest.mark.parametrize(("spec", "message"), [
    ({"user": "a:b"}, "auth v1 needs both user and key"),
    ({"user": "a:b", "key": "k", "username": "u"}, "give user and key"),
    ({"username": "u", "password": "p"}, "Keystone v3 needs username, password and project"),
    ({}, "give user and key"),
    ({"user": "a:b", "key": "k", "auth_url": "ftp://x"}, "http"),
    ({"user": "a:b", "key": "k", "container": "a/b"}, "container"),
    ({"user": "a:b", "key": "k", "prefix": "../up"}, "'..'"),
])
def test_options_refuse_a_half_or_double_auth(spec, message):
    module = providers.load("swift")
    base = {"auth_url": "http://127.0.0.1:1/auth/v1.0", "container": "c"}
    with pytest.raises(ValueError, match=message):
        module.Options.model_validate({**base, **spec})


def test_mounts_on_adjacent_prefixes_never_touch_each_others_segments(swift_cluster,  # noqa: F811
                                                                     tmp_path):
    """Every mount of a container shares its segments container: names, listings,
    deletes and sweeps stay below the mount's own prefix."""
    container = swift_cluster.fresh_container()
    acme = _build(swift.provider(container, prefix="acme"), tmp_path)
    evil = _build(swift.provider(container, prefix="acme-evil"), tmp_path)
    data = os.urandom(9 * MIB)
    acme.pipe_file("big", data)
    evil.pipe_file("big", os.urandom(9 * MIB))
    evil.rm_file("big")
    evil.pipe_file("big", b"small")  # an overwrite sweeps the old segments of its key
    assert evil._store.sweep_stale_segments(time.time() + 365 * 86400) == 0
    assert evil.ls("", detail=False) == ["big"]
    assert acme.cat_file("big") == data
    assert {n.split("/")[0] for n in swift_cluster.names(container + "_segments")} == {"acme"}
