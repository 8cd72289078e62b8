"""The s3 provider beyond the conformance suite: faults, errors, secrets, uploads.

The store going down answers 503 for that mount's subtree only, and the mount
recovers by itself once the store is back; PUTs cut off by the outage leave
no partial object, and the multipart uploads whose aborts failed are aborted
by the mount's next upload.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError

from mosaic import providers
from mosaic.config.loader import ConfigError, load_config
from mosaic.core.capabilities import BuildContext
from mosaic.core.errors import MountUnavailableError
from mosaic.providers.s3 import MultipartUpload, S3Store
from tests.support import moto, scenarios
from tests.support.moto import StoppableS3, stoppable_s3  # noqa: F401 (fixture)
from tests.support.scenarios import MIB, Outage, Traffic

#: every request goes through the store's call(method, ...): listings are ListObjectsV2
TRAFFIC = Traffic(scenarios.watch_store_calls,
                  lambda method, _target: method == "list_objects_v2")


def _build(spec: dict, tmp_path: Path):
    module = providers.load("s3")
    options = module.Options.model_validate({k: v for k, v in spec.items() if k != "type"})
    return module.build(options, BuildContext("acme", "/cloud", tmp_path))


@pytest.fixture
def cloud_server(stoppable_s3: StoppableS3, tmp_path: Path):  # noqa: F811
    """acme with /cloud on a moto server the test may stop."""
    bucket = moto.fresh_bucket(stoppable_s3.url)
    outage = Outage(stoppable_s3.stop, stoppable_s3.start)
    with scenarios.cloud_server(tmp_path, moto.provider(bucket, url=stoppable_s3.url), outage,
                                bucket) as cloud:
        yield cloud


def test_store_down_is_503_for_that_mount_only_and_recovers(cloud_server):
    scenarios.store_down_is_503_for_that_mount_only_and_recovers(cloud_server)


def test_puts_cut_off_by_the_outage_leave_nothing_once_the_store_is_back(
        cloud_server, stoppable_s3):  # noqa: F811
    def uploads() -> list[str]:
        listed = moto.client(stoppable_s3.url).list_multipart_uploads(
            Bucket=cloud_server.container)
        return sorted(upload["Key"] for upload in listed.get("Uploads", []))

    def both_uploads_started() -> bool:
        return uploads() == ["f.bin", "new.bin"]

    def uploads_the_aborts_could_not_abort() -> None:
        assert both_uploads_started()

    def aborted_by_the_next_upload() -> None:
        assert uploads() == []

    # a multipart upload of each PUT is open (its first 8 MiB part) before the store stops
    cut = scenarios.CutUpload(before_mib=10, after_mib=10, parts_stored=both_uploads_started,
                              leftovers=uploads_the_aborts_could_not_abort,
                              after_next_write=aborted_by_the_next_upload)
    scenarios.puts_cut_off_by_the_outage_leave_the_previous_version_and_no_new_file(
        cloud_server, cut)


def test_sized_put_is_one_streamed_request_and_a_cut_off_one_leaves_the_previous_version(
        cloud_server, stoppable_s3, monkeypatch):  # noqa: F811
    def no_multipart_upload() -> bool:
        listed = moto.client(stoppable_s3.url).list_multipart_uploads(
            Bucket=cloud_server.container)
        return not listed.get("Uploads")

    scenarios.sized_put_is_one_streamed_request_and_a_cut_off_one_leaves_the_previous_version(
        cloud_server, monkeypatch, no_multipart_upload)


def test_a_chunked_put_beyond_the_part_limit_is_413_and_leaves_nothing(
        cloud_server, stoppable_s3, monkeypatch):  # noqa: F811
    """S3 takes 10,000 parts; here 2 (of 8 MiB): a body of unknown size that
    needs a third is refused before the part is sent, the upload aborted."""
    monkeypatch.setattr(MultipartUpload, "max_parts", 2)
    alice = cloud_server.live.session(*scenarios.ALICE)
    assert alice.put(cloud_server.url("f.bin"), data=b"previous").status_code == 201

    def body():  # a generator: requests sends it chunked, no Content-Length
        for _ in range(17):
            yield os.urandom(MIB)

    answer = alice.put(cloud_server.url("f.bin"), data=body())
    assert answer.status_code == 413
    assert "more than 2 parts of 8 MiB" in answer.text and "f.bin" in answer.text
    assert alice.get(cloud_server.url("f.bin")).content == b"previous"
    listed = moto.client(stoppable_s3.url).list_multipart_uploads(Bucket=cloud_server.container)
    assert listed.get("Uploads", []) == []


def test_missing_bucket_and_wrong_credentials_name_tenant_and_mount(tmp_path):
    missing = _build(moto.provider("no-such-bucket-here"), tmp_path)
    with pytest.raises(MountUnavailableError, match="bucket") as caught:
        missing.ls("")
    assert "acme" in str(caught.value) and "/cloud" in str(caught.value)
    # moto accepts any credentials: S3's own refusal is raised by the client here
    spec = {**moto.provider(moto.fresh_bucket()), "secret": "wrong-secret-value"}
    wrong = _build(spec, tmp_path)
    refusal = ClientError({"Error": {"Code": "InvalidAccessKeyId", "Message": "no such key"}},
                          "ListObjectsV2")
    wrong._store.call = lambda *args, **kwargs: _raise(refusal)
    with pytest.raises(MountUnavailableError, match="credentials") as caught:
        wrong.ls("")
    assert "wrong-secret-value" not in str(caught.value)
    assert moto.endpoint() not in str(caught.value)


def _raise(exc: Exception) -> None:
    raise exc


def test_secrets_come_from_env_and_files_and_are_masked(tmp_path, monkeypatch):
    (tmp_path / "secret.txt").write_text("testing\n")
    monkeypatch.setenv("MOSAIC_TEST_S3_KEY", "testing")
    spec = moto.provider(moto.fresh_bucket())
    del spec["key"], spec["secret"]
    config_file = tmp_path / "mosaic.yaml"
    config_file.write_text(yaml.safe_dump({"tenants": {"acme": {
        "root": {"type": "memory"},
        "mounts": {"/cloud": {"provider": {**spec, "key": "${MOSAIC_TEST_S3_KEY}",
                                           "secret_file": str(tmp_path / "secret.txt")}}},
    }}}))
    config = load_config(config_file)
    options = config.tenants["acme"].mounts["/cloud"].provider.options()
    assert options.secret.get_secret_value() == "testing"
    assert "testing" not in repr(config.tenants["acme"].mounts["/cloud"].provider)
    fs = providers.load("s3").build(options, BuildContext("acme", "/cloud", tmp_path))
    fs.touch("works")
    assert fs.exists("works")


def test_large_upload_is_multipart_and_reads_back_in_ranges(tmp_path):
    fs = _build(moto.provider(moto.fresh_bucket()), tmp_path)
    data = os.urandom(17 * MIB + 5)
    with fs.open("big", "wb") as handle:
        for start in range(0, len(data), MIB):
            handle.write(data[start:start + MIB])
    assert "-" in fs.info("big")["etag"]  # a multipart ETag: md5-of-parts "-" count
    with fs.open("big", "rb") as handle:
        handle.seek(9 * MIB - 3)
        assert handle.read(7) == data[9 * MIB - 3:9 * MIB + 4]


def test_folders_other_tools_made_without_markers_are_listed_once(tmp_path):
    bucket = moto.fresh_bucket()
    scenarios.folders_other_tools_made_without_markers_are_listed_once(
        _build(moto.provider(bucket), tmp_path), _put_elsewhere(bucket))


def _put_elsewhere(bucket: str) -> scenarios.PutElsewhere:
    return lambda key, data: moto.client().put_object(Bucket=bucket, Key=key, Body=data)


def test_encryption_and_storage_class_apply_to_every_write(tmp_path):
    bucket = moto.fresh_bucket()
    spec = {**moto.provider(bucket), "server_side_encryption": "AES256",
            "storage_class": "STANDARD_IA", "part_size_mib": 5}
    fs = _build(spec, tmp_path)
    fs.mkdir("d")
    with fs.open("d/small", "wb") as handle:
        handle.write(b"x")
    with fs.open("d/big", "wb") as handle:
        handle.write(os.urandom(6 * MIB))
    fs.mv("d", "e")
    fs.cp_file("e/small", "e/copy")
    s3 = moto.client()
    for key in ("e/", "e/small", "e/big", "e/copy"):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256", key
        assert head["StorageClass"] == "STANDARD_IA", key


def test_outage_between_listing_pages_then_recovery(stoppable_s3, tmp_path):  # noqa: F811
    fs = _build(moto.provider(moto.fresh_bucket(stoppable_s3.url), url=stoppable_s3.url),
                tmp_path)
    outage = Outage(stoppable_s3.stop, stoppable_s3.start)
    scenarios.outage_between_listing_pages_then_recovery(fs, outage, TRAFFIC)


def test_folder_move_copies_everything_or_rolls_back(tmp_path):
    bucket = moto.fresh_bucket()
    scenarios.folder_move_copies_everything_or_rolls_back(
        _build(moto.provider(bucket), tmp_path), lambda: moto.object_names(bucket))


def test_every_mount_has_its_own_client_and_session(tmp_path):
    spec = moto.provider(moto.fresh_bucket())
    first, second = _build(spec, tmp_path), _build(spec, tmp_path)
    first.ls("")
    second.ls("")
    assert first._store._s3 is not second._store._s3
    assert first._store._s3.session is not second._store._s3.session
    assert first._store._s3._s3 is not second._store._s3._s3  # the botocore clients
    first.pipe_file("f", b"x")
    assert first.cat_file("f") == second.cat_file("f") == b"x"  # GETs: the blocking clients
    blocking = first._store._blocking(), second._store._blocking()
    assert blocking[0] is not blocking[1]
    assert blocking[0]._endpoint.http_session is not blocking[1]._endpoint.http_session


def test_multipart_uploads_a_killed_process_left_are_aborted(tmp_path):
    bucket = moto.fresh_bucket()
    fs = _build(moto.provider(bucket, prefix="mine"), tmp_path)
    s3 = moto.client()
    orphan = s3.create_multipart_upload(Bucket=bucket, Key="mine/f")["UploadId"]
    other = s3.create_multipart_upload(Bucket=bucket, Key="not-mine/f")["UploadId"]
    # moto's upload times are not comparable with ours: sweep "everything so far"
    assert fs._store.abort_stale_uploads(time.time() + 365 * 86400) == 1
    left = {u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]}
    assert orphan not in left and other in left  # other mounts' uploads are left alone


def test_discard_after_the_upload_was_swept_is_fine(tmp_path):
    # one part at a time: the part is sent before write() returns
    fs = _build({**moto.provider(moto.fresh_bucket()), "transfers": 1}, tmp_path)
    writer = fs.open("g", "wb", autocommit=False)
    writer.write(os.urandom(9 * MIB))  # one part sent: a multipart upload is open
    assert fs._store.abort_stale_uploads(time.time() + 365 * 86400) == 1
    writer.discard()
    assert not fs.exists("g")


def test_aborts_that_failed_are_retried_by_each_next_upload_until_done(
        stoppable_s3, tmp_path):  # noqa: F811
    bucket = moto.fresh_bucket(stoppable_s3.url)
    # one part at a time: the part is sent before write() returns
    fs = _build({**moto.provider(bucket, url=stoppable_s3.url), "transfers": 1}, tmp_path)
    s3 = moto.client(stoppable_s3.url)
    writers = [fs.open(name, "wb", autocommit=False) for name in ("g", "h")]
    for writer in writers:
        writer.write(os.urandom(9 * MIB))  # one part sent: a multipart upload is open
    stoppable_s3.stop()
    try:
        for writer in writers:
            with pytest.raises(MountUnavailableError):
                writer.discard()
        fs._store.start_upload("next")  # still down: retried, failed, kept for later
    finally:
        stoppable_s3.start()
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert sorted(upload["Key"] for upload in listed) == ["g", "h"]
    h = next(upload for upload in listed if upload["Key"] == "h")
    s3.abort_multipart_upload(Bucket=bucket, Key="h", UploadId=h["UploadId"])  # a sweep's
    methods = []
    call = fs._store.call
    fs._store.call = lambda method, **kw: methods.append(method) or call(method, **kw)
    fs.pipe_file("next", b"x")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert methods.count("abort_multipart_upload") == 2  # g's, and h's already gone: done
    fs.pipe_file("next", b"y")
    assert methods.count("abort_multipart_upload") == 2  # nothing left to retry


def test_objects_above_the_single_copy_limit_are_copied_in_parts(tmp_path):
    """S3 refuses CopyObject above 5 GiB: bigger objects go by UploadPartCopy.
    The limit is lowered here so a 12 MiB object takes that path on moto."""
    fs = _build({**moto.provider(moto.fresh_bucket()), "part_size_mib": 5}, tmp_path)
    fs._store.copy_limit, fs._store.copy_part_size = MIB, 5 * MIB
    data = os.urandom(12 * MIB + 1)
    fs.mkdir("d")
    with fs.open("d/big", "wb") as handle:
        handle.write(data)
    fs.set_mtime("d/big", 1_000_000_000.0)
    methods = []
    call = fs._store.call
    fs._store.call = lambda method, **kw: methods.append(method) or call(method, **kw)
    fs.mv("d", "moved")  # a folder move: every object copied server-side
    fs.cp_file("moved/big", "copy")
    assert methods.count("upload_part_copy") == 6  # 3 parts, twice
    assert methods.count("copy_object") == 1  # the folder's empty marker "d/"
    assert fs.cat_file("moved/big") == data and fs.cat_file("copy") == data
    assert fs.info("moved/big")["mtime"] == 1_000_000_000.0  # the set time moved along
    assert not fs.exists("d")


def test_warm_listing_costs_no_request_and_own_writes_show_at_once(tmp_path):
    bucket = moto.fresh_bucket()
    fs = _build({**moto.provider(bucket), "listing_cache_seconds": 1}, tmp_path)
    scenarios.warm_listing_costs_no_request_and_own_writes_show_at_once(
        fs, TRAFFIC, _put_elsewhere(bucket))


def test_get_serves_a_file_another_tool_replaced_whole_and_new(tmp_path, monkeypatch):
    bucket = moto.fresh_bucket()
    scenarios.get_serves_a_file_another_tool_replaced_whole_and_new(
        tmp_path, moto.provider(bucket), _put_elsewhere(bucket), S3Store, monkeypatch)


def test_a_write_through_another_worker_is_seen_at_once(tmp_path):
    """Two workers build the same mount on the same data directory."""
    spec = {**moto.provider(moto.fresh_bucket()), "listing_cache_seconds": 600}
    worker_a, worker_b = _build(spec, tmp_path), _build(spec, tmp_path)
    assert worker_b.ls("") == []
    worker_a.touch("new")
    assert worker_b.ls("", detail=False) == ["new"]
    worker_a.rm("new")
    assert not worker_b.exists("new")


def test_windows_set_modification_time_survives_in_metadata(cloud_server,
                                                           stoppable_s3):  # noqa: F811
    def stored_time(key: str) -> float:
        head = moto.client(stoppable_s3.url).head_object(Bucket=cloud_server.container, Key=key)
        return float(head["Metadata"]["mosaic-mtime"])

    # S3 listings carry no metadata: only a HEAD shows it
    scenarios.windows_set_modification_time_survives_in_metadata(
        cloud_server, stored_time, listings_carry_it=False)


def test_a_prefix_leaving_the_bucket_is_a_config_error_naming_the_line(tmp_path):
    config_file = tmp_path / "mosaic.yaml"
    config_file.write_text(yaml.safe_dump({"tenants": {"acme": {
        "root": {"type": "memory"},
        "mounts": {"/cloud": {"provider": {**moto.provider("bucket"), "prefix": "../up"}}},
    }}}))
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert "prefix" in str(caught.value) and "mosaic.yaml:" in str(caught.value)


def test_cold_folder_listing_is_one_head_and_the_listing_itself(tmp_path):
    """PROPFIND Depth 1 asks info, then ls: with the listing cache the folder's
    existence comes from the listing ls needs anyway (other tools' folders have
    no marker to HEAD)."""
    bucket = moto.fresh_bucket()
    for index in range(50):
        moto.client().put_object(Bucket=bucket, Key=f"made-elsewhere/f{index}", Body=b"1")
    fs = _build(moto.provider(bucket), tmp_path)
    methods = []
    call = fs._store.call
    fs._store.call = lambda method, **kw: methods.append(method) or call(method, **kw)
    assert fs.info("made-elsewhere")["type"] == "directory"
    assert len(fs.ls("made-elsewhere")) == 50
    assert sorted(methods) == ["head_object", "list_objects_v2"]
