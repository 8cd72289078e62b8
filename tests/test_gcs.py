"""The gcs provider beyond the conformance suite: credentials, faults, uploads, litmus.

Everything runs against fake-gcs-server on loopback. The fault tests kill the
emulator (SIGKILL) and start it again on the same port and storage: the
mount answers 503 meanwhile, for its own subtree only, and recovers by
itself; an upload cut off by the kill leaves the previous version and no
partial object.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from mosaic import providers
from mosaic.core.capabilities import BuildContext
from mosaic.core.errors import MountUnavailableError
from mosaic.providers import gcs
from tests.support import fakegcs, scenarios, tenants
from tests.support.fakegcs import StoppableGCS, stoppable_gcs  # noqa: F401 (fixture)
from tests.support.live import live_server
from tests.support.scenarios import ALICE, MIB, Outage, Traffic


def _watch_gcs(fs, hook) -> None:
    """Requests go through the store's call(method, url, ...), those carrying an
    object's content through its media_request(method, url, ...)."""
    scenarios.watch_store_calls(fs, hook)
    media_request = fs._store.media_request

    def watched(method, url, *args, **kwargs):
        hook(method, url)
        return media_request(method, url, *args, **kwargs)

    fs._store.media_request = watched


#: listings are GET .../o
TRAFFIC = Traffic(_watch_gcs, lambda method, url: method == "GET" and url.endswith("/o"))


def _options(spec: dict):
    return providers.load("gcs").Options.model_validate(
        {k: v for k, v in spec.items() if k != "type"})


def _build(spec: dict, tmp_path: Path):
    return providers.load("gcs").build(_options(spec), BuildContext("acme", "/cloud", tmp_path))


def _service_account(path: Path, token_uri: str) -> str:
    """A well-formed service-account key file (a fresh RSA key) for ``token_uri``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "test", "private_key_id": "k1",
        "private_key": pem, "client_email": "mosaic@test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_uri}))
    return pem


# -- options -------------------------------------------------------------------------


def test_credentials_file_is_checked_when_the_configuration_loads(tmp_path):
    spec = fakegcs.provider("some-bucket")
    del spec["anonymous"]
    cases = {
        str(tmp_path / "missing.json"): "No such file",
        "relative.json": "absolute path",
    }
    (tmp_path / "notjson.json").write_text("private-key-material{")
    cases[str(tmp_path / "notjson.json")] = "is not JSON"
    (tmp_path / "other.json").write_text(json.dumps({"type": "x", "secret": "hush-hush"}))
    cases[str(tmp_path / "other.json")] = "not a Google credentials file"
    for path, message in cases.items():
        with pytest.raises(ValidationError, match=message) as caught:
            _options({**spec, "credentials_file": path})
        assert "private-key-material" not in str(caught.value)
        assert "hush-hush" not in str(caught.value)
    _service_account(tmp_path / "sa.json", "http://127.0.0.1:1/token")
    assert _options({**spec, "credentials_file": str(tmp_path / "sa.json")}).credentials_file
    with pytest.raises(ValidationError, match="not both"):
        _options({**spec, "credentials_file": str(tmp_path / "sa.json"), "anonymous": True})
    with pytest.raises(ValidationError):
        _options({**spec, "bucket": "Not_A_Bucket!"})
    as_rclone_writes_it = _options({**spec, "endpoint_url": "http://127.0.0.1:9/storage/v1/"})
    assert as_rclone_writes_it.endpoint_url == "http://127.0.0.1:9"


def test_refused_service_account_names_tenant_and_mount_not_the_key(tmp_path):
    url = fakegcs.endpoint()
    pem = _service_account(tmp_path / "sa.json", f"{url}/no-token-endpoint-here")
    spec = {**fakegcs.provider(fakegcs.fresh_bucket()), "anonymous": False,
            "credentials_file": str(tmp_path / "sa.json")}
    fs = _build(spec, tmp_path)
    with pytest.raises(MountUnavailableError, match="credentials") as caught:
        fs.ls("")
    message = str(caught.value)
    assert "acme" in message and "/cloud" in message
    assert pem.splitlines()[1] not in message and url not in message


class _TokenEndpoint(ThreadingHTTPServer):
    """A loopback OAuth token endpoint granting every signed assertion a token."""

    def __init__(self) -> None:
        self.assertions: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                endpoint.assertions.append(form["assertion"][0])
                body = json.dumps({"access_token": f"token-{len(endpoint.assertions)}",
                                   "expires_in": 3600, "token_type": "Bearer"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/token"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_service_account_signs_in_once_per_mount(tmp_path):
    tokens = _TokenEndpoint()
    try:
        _service_account(tmp_path / "sa.json", tokens.url)
        spec = {**fakegcs.provider(fakegcs.fresh_bucket()), "anonymous": False,
                "credentials_file": str(tmp_path / "sa.json")}
        first, second = _build(spec, tmp_path), _build(spec, tmp_path)
        first.touch("a")
        assert first.ls("", detail=False) == ["a"] and second.exists("a")
        assert len(tokens.assertions) == 2  # a token per mount, reused for its requests
        assert first._store.client()._get_headers(None)["authorization"] == "Bearer token-1"
    finally:
        tokens.shutdown()


def test_default_credentials_come_from_the_environment(tmp_path, monkeypatch):
    _service_account(tmp_path / "sa.json", f"{fakegcs.endpoint()}/no-token-endpoint-here")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
    spec = {**fakegcs.provider(fakegcs.fresh_bucket()), "anonymous": False}
    fs = _build(spec, tmp_path)  # nothing is looked up before the first request
    with pytest.raises(MountUnavailableError, match="credentials"):
        fs.ls("")  # google.auth.default found the file; its token endpoint refuses


def test_anonymous_on_the_emulator_with_the_stores_etags(tmp_path):
    fs = _build(fakegcs.provider(fakegcs.fresh_bucket()), tmp_path)
    fs.mkdir("empty")
    with fs.open("f.txt", "wb") as handle:
        handle.write(b"hello")
    assert sorted((e["name"], e["type"]) for e in fs.ls("")) == [
        ("empty", "directory"), ("f.txt", "file")]
    assert fs.cat_file("f.txt") == b"hello"
    # the store's own ETag: the content's md5, base64, strong and unquoted
    assert fs.info("f.txt")["etag"] == base64.b64encode(hashlib.md5(b"hello").digest()).decode()


def test_missing_bucket_names_tenant_and_mount(tmp_path):
    fs = _build(fakegcs.provider("no-such-bucket-here"), tmp_path)
    with pytest.raises(MountUnavailableError, match="bucket") as caught:
        fs.ls("")
    assert "acme" in str(caught.value) and "/cloud" in str(caught.value)
    assert fakegcs.endpoint() not in str(caught.value)


def test_every_mount_has_its_own_client_and_session(tmp_path):
    spec = fakegcs.provider(fakegcs.fresh_bucket())
    first, second = _build(spec, tmp_path), _build(spec, tmp_path)
    first.ls("")
    second.ls("")
    one, two = first._store.client(), second._store.client()
    assert one is not two
    assert one.session is not two.session and one.credentials is not two.credentials


# -- uploads and reads ------------------------------------------------------------------


def test_large_upload_is_resumable_and_reads_back_in_ranges(tmp_path):
    bucket = fakegcs.fresh_bucket()
    fs = _build({**fakegcs.provider(bucket), "part_size_mib": 1}, tmp_path)
    data = os.urandom(5 * MIB + 5)
    sent = []
    media_request = fs._store.media_request  # every request carrying content

    def recording(method, url, **kwargs):
        sent.append((method, (kwargs.get("headers") or {}).get("Content-Range")))
        return media_request(method, url, **kwargs)

    fs._store.media_request = recording
    with fs.open("big", "wb") as handle:
        for start in range(0, len(data), 300_000):
            handle.write(data[start:start + 300_000])
    spans = [span for method, span in sent if method == "PUT"]
    assert spans[0] == f"bytes 0-{MIB - 1}/*"  # chunks in order, the last one with the size
    assert spans[-1] == f"bytes {5 * MIB}-{len(data) - 1}/{len(data)}"
    assert fs.info("big")["size"] == len(data)
    with fs.open("big", "rb") as handle:
        handle.seek(3 * MIB - 3)
        assert handle.read(7) == data[3 * MIB - 3:3 * MIB + 4]
    assert fs.cat_file("big") == data
    sent.clear()
    with fs.open("whole-parts", "wb") as handle:  # the last part is whole: an empty final
        handle.write(data[:2 * MIB])
    assert [span for method, span in sent if method == "PUT"][-1] == f"bytes */{2 * MIB}"
    assert fs.cat_file("whole-parts") == data[:2 * MIB]


def test_discarded_upload_cancels_the_session_and_leaves_the_previous_version(tmp_path):
    bucket = fakegcs.fresh_bucket()
    fs = _build({**fakegcs.provider(bucket), "part_size_mib": 1}, tmp_path)
    fs.pipe_file("g", b"previous")
    writer = fs.open("g", "wb", autocommit=False)
    writer.write(os.urandom(3 * MIB))  # two chunks sent: a session is open
    deleted = []
    call = fs._store.call
    fs._store.call = lambda method, url, **kw: deleted.append(method) or call(method, url, **kw)
    writer.discard()
    assert "DELETE" in deleted  # the session was cancelled
    fs._store.call = call
    assert fs.cat_file("g") == b"previous"
    assert fakegcs.object_names(bucket) == ["g"]


def test_a_listing_is_one_request_and_shows_folder_times(tmp_path):
    fs = _build({**fakegcs.provider(fakegcs.fresh_bucket()), "listing_cache_seconds": 0},
                tmp_path)
    fs.makedirs("d/sub")
    for i in range(30):
        fs.touch(f"d/f{i}")
    fs.set_mtime("d/sub", 1_500_000_000.0)
    calls = []
    call = fs._store.call
    fs._store.call = lambda method, url, **kw: calls.append((method, url)) or call(
        method, url, **kw)
    entries = {e["name"]: e for e in fs.ls("d")}
    assert calls == [("GET", fs._store.url("o"))]  # one listing, no request per entry
    assert len(entries) == 31 and entries["d/sub"]["type"] == "directory"
    assert entries["d/sub"]["mtime"] == 1_500_000_000.0  # the marker came with the listing


def test_folders_other_tools_made_without_markers_are_listed_once(tmp_path):
    bucket = fakegcs.fresh_bucket()
    scenarios.folders_other_tools_made_without_markers_are_listed_once(
        _build(fakegcs.provider(bucket), tmp_path), _put_elsewhere(bucket))


def _put_elsewhere(bucket: str) -> scenarios.PutElsewhere:
    return lambda name, data: fakegcs.put_object(bucket, name, data)


def test_get_serves_a_file_another_tool_replaced_whole_and_new(tmp_path, monkeypatch):
    bucket = fakegcs.fresh_bucket()
    scenarios.get_serves_a_file_another_tool_replaced_whole_and_new(
        tmp_path, fakegcs.provider(bucket), _put_elsewhere(bucket), gcs.GCSStore, monkeypatch)


def test_warm_listing_costs_no_request_and_own_writes_show_at_once(tmp_path):
    bucket = fakegcs.fresh_bucket()
    fs = _build({**fakegcs.provider(bucket), "listing_cache_seconds": 1}, tmp_path)
    scenarios.warm_listing_costs_no_request_and_own_writes_show_at_once(
        fs, TRAFFIC, _put_elsewhere(bucket))


def test_copy_repeats_rewrite_until_done(tmp_path):
    fs = _build(fakegcs.provider(fakegcs.fresh_bucket()), tmp_path)
    fs.pipe_file("src", b"content")
    fs.set_mtime("src", 1_000_000_000.0)
    rewrites = []
    call_json = fs._store.call_json

    def first_call_not_done(method, url, **kwargs):
        if "/rewriteTo/" in url:
            rewrites.append(dict(kwargs.get("params", {})))
            if len(rewrites) == 1:  # the way GCS answers for a big object
                return {"done": False, "rewriteToken": "more-to-come"}
        return call_json(method, url, **kwargs)

    fs._store.call_json = first_call_not_done
    fs.mv("src", "dst")
    assert [r.get("rewriteToken") for r in rewrites] == [None, "more-to-come"]
    assert fs.cat_file("dst") == b"content" and not fs.exists("src")
    assert fs.info("dst")["mtime"] == 1_000_000_000.0  # the set time moved along
    fs.cp_file("dst", "copy")  # a copy is a new file: its own time
    assert abs(fs.info("copy")["mtime"] - time.time()) < 60


def test_folder_move_copies_everything_or_rolls_back(tmp_path):
    bucket = fakegcs.fresh_bucket()
    scenarios.folder_move_copies_everything_or_rolls_back(
        _build(fakegcs.provider(bucket), tmp_path), lambda: fakegcs.object_names(bucket))


# -- faults ----------------------------------------------------------------------------


@pytest.fixture
def cloud_server(stoppable_gcs: StoppableGCS, tmp_path: Path):  # noqa: F811
    """acme with /cloud on a fake-gcs-server the test may kill and restart."""
    bucket = fakegcs.fresh_bucket(stoppable_gcs.url)
    spec = {**fakegcs.provider(bucket, url=stoppable_gcs.url), "part_size_mib": 1}
    outage = Outage(stoppable_gcs.kill, stoppable_gcs.start)
    with scenarios.cloud_server(tmp_path, spec, outage, bucket) as cloud:
        yield cloud


def test_sized_put_is_one_streamed_request_and_a_cut_off_one_leaves_the_previous_version(
        cloud_server, stoppable_gcs, monkeypatch):  # noqa: F811
    scenarios.sized_put_is_one_streamed_request_and_a_cut_off_one_leaves_the_previous_version(
        cloud_server, monkeypatch,
        lambda: fakegcs.object_names(cloud_server.container, stoppable_gcs.url) == ["f.bin"])


def test_store_down_is_503_for_that_mount_only_and_recovers(cloud_server):
    scenarios.store_down_is_503_for_that_mount_only_and_recovers(cloud_server)


def test_puts_cut_off_by_a_kill_leave_the_previous_version_and_no_partial_object(
        cloud_server, stoppable_gcs):  # noqa: F811
    def no_partial_object() -> None:
        assert fakegcs.object_names(cloud_server.container, stoppable_gcs.url) == ["f.bin"]

    # more than one chunk before the kill: a resumable session is open
    cut = scenarios.CutUpload(before_mib=3, after_mib=3, leftovers=no_partial_object)
    scenarios.puts_cut_off_by_the_outage_leave_the_previous_version_and_no_new_file(
        cloud_server, cut)


def test_kill_between_listing_pages_then_recovery(stoppable_gcs, tmp_path):  # noqa: F811
    bucket = fakegcs.fresh_bucket(stoppable_gcs.url)
    spec = {**fakegcs.provider(bucket, url=stoppable_gcs.url), "listing_cache_seconds": 0}
    outage = Outage(stoppable_gcs.kill, stoppable_gcs.start)
    scenarios.outage_between_listing_pages_then_recovery(_build(spec, tmp_path), outage,
                                                         TRAFFIC)


# -- through WebDAV ----------------------------------------------------------------------


def test_cross_mount_moves_between_gcs_and_s3(tmp_path):
    scenarios.moves_between_a_mount_and_an_s3_mount(
        tmp_path, fakegcs.provider(fakegcs.fresh_bucket()))


@pytest.fixture(scope="module")
def litmus_server(tmp_path_factory):
    """globex's ROOT on a bucket, and acme's /cloud MOUNT on another."""
    with scenarios.litmus_server(
            tmp_path_factory.mktemp("litmus-gcs"),
            lambda prefix: fakegcs.provider(fakegcs.fresh_bucket(), prefix=prefix)) as live:
        yield live


@pytest.mark.litmus
@pytest.mark.parametrize("where", scenarios.LITMUS_PLACES)
def test_litmus_passes_on_a_gcs_root_and_a_gcs_mount(litmus_server, where, tmp_path):
    scenarios.litmus_passes(litmus_server, where, tmp_path)


def test_windows_set_modification_time_survives_in_metadata_and_listings(
        cloud_server, stoppable_gcs):  # noqa: F811
    def stored_time(name: str) -> float:
        return float(fakegcs.metadata(cloud_server.container, name, stoppable_gcs.url)[
            "mosaic-mtime"])

    # GCS listings carry metadata
    scenarios.windows_set_modification_time_survives_in_metadata(
        cloud_server, stored_time, listings_carry_it=True)


#: fake-gcs-server's memory backend slows down with every object added (10,000
#: take 110 s to write, or 52 s to preload): 3,000 still make several pages
COUNT = 3_000


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
    """acme's /cloud on a bucket whose "big/" holds COUNT objects another tool wrote."""
    bucket = fakegcs.fresh_bucket()
    upload = f"{fakegcs.endpoint()}/upload/storage/v1/b/{bucket}/o"
    with requests.Session() as http, ThreadPoolExecutor(16) as pool:
        def put(index: int) -> None:
            http.post(upload, params={"uploadType": "media", "name": f"big/f{index:05}"},
                      data=b"x", timeout=30).raise_for_status()
        list(pool.map(put, range(COUNT)))
    data = tenants.two_tenants(tmp_path_factory.mktemp("gcs-listing"))
    data["tenants"]["acme"]["mounts"]["/cloud"] = {"provider": {
        **fakegcs.provider(bucket), "listing_cache_seconds": 0}}
    with live_server(tenants.build(data)) as live:
        yield live


def test_thousands_of_objects_are_listed_once_each_from_paged_listings(big_folder, monkeypatch):
    calls: list[tuple[str, str]] = []
    call = gcs.GCSStore.call

    def counting(self, method, url, **kwargs):
        kind = "list" if url.endswith("/o") else "media" if (
            kwargs.get("params") or {}).get("alt") else "object"
        calls.append((method, kind))
        return call(self, method, url, **kwargs)

    monkeypatch.setattr(gcs.GCSStore, "call", counting)
    reply = big_folder.session(*ALICE).request("PROPFIND", big_folder.url + "/cloud/big/",
                                               headers={"Depth": "1"}, timeout=300)
    assert reply.status_code == 207
    hrefs = re.findall(r"<D:href>([^<]*)</D:href>", reply.text)
    assert len(hrefs) == COUNT + 1 == len(set(hrefs))
    # pages of 1,000 objects, and one probe finding the folder (it has no marker)
    assert calls.count(("GET", "list")) == COUNT // 1000 + 1
    assert calls.count(("GET", "object")) <= 3  # the folder itself, never one per entry
    assert ("GET", "media") not in calls  # a listing reads no content
