"""Two tenants on one bucket, under adjacent prefixes ("acme" and "acme-evil"):
nothing of acme may reach globex through paths, listings, caches or errors."""

from __future__ import annotations

import base64
import os
import re
import socket
import time
from contextlib import ExitStack

import pytest

from tests.support import moto, tenants
from tests.support.live import live_server
from tests.test_isolation import DAVE, raw_request

MIB = 1024 * 1024
SENTINEL = b"ACME-OBJECT-SECRET-91c2"
ACME_ALICE = ("alice@acme.example", "alice-secret")
HREF = re.compile(r"<D:href>([^<]*)</D:href>")
TRAVERSALS = [
    "/../acme/secret.txt",
    "/%2e%2e/acme/secret.txt",
    "/..%2facme%2fsecret.txt",
    "/..%5cacme%5csecret.txt",
    "/%252e%252e/acme/secret.txt",
    "/./../../acme/secret.txt",
    "//../acme/secret.txt",
    "/%00/../acme/secret.txt",
    "/../acme-evil/../acme/secret.txt",
]


@pytest.fixture(scope="module")
def shared_bucket(tmp_path_factory):
    bucket = moto.fresh_bucket()
    moto.client().put_object(Bucket=bucket, Key="acme/secret.txt", Body=SENTINEL)
    data = tenants.two_tenants(tmp_path_factory.mktemp("objects"))
    data["tenants"]["acme"]["root"] = moto.provider(bucket, prefix="acme")
    data["tenants"]["globex"]["root"] = moto.provider(bucket, prefix="acme-evil")
    with live_server(tenants.build(data)) as live:
        yield live, bucket


def _acme_keys(bucket: str) -> dict[str, bytes]:
    s3 = moto.client()
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="acme/").get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            for o in listed}


@pytest.mark.parametrize("target", TRAVERSALS)
@pytest.mark.parametrize("method", ["GET", "PROPFIND", "DELETE", "PUT"])
def test_paths_never_leave_the_tenants_prefix(shared_bucket, target, method):
    live, bucket = shared_bucket
    before = _acme_keys(bucket)
    reply = raw_request(live.port, method, target, DAVE, {"Depth": "1"})
    assert SENTINEL not in reply
    assert bucket.encode() not in reply and b"acme-evil" not in reply  # no store names
    assert _acme_keys(bucket) == before


def test_adjacent_prefix_and_warm_caches_show_nothing_of_the_other(shared_bucket):
    live, _bucket = shared_bucket
    acme = live.session(*ACME_ALICE)
    dave = live.session(*DAVE)
    assert acme.put(live.url + "/same-name.txt", data=b"acme's").status_code == 201
    assert dave.put(live.url + "/same-name.txt",
                    data=b"globex's").status_code == 201
    for _ in range(2):  # cold, then warm from each mount's listing cache
        acme_list = acme.request("PROPFIND", live.url + "/", headers={"Depth": "1"}).text
        globex_list = dave.request("PROPFIND", live.url + "/", headers={"Depth": "1"}).text
        assert "<D:href>/secret.txt</D:href>" in acme_list
        assert "<D:href>/secret.txt</D:href>" not in globex_list, HREF.findall(globex_list)
        assert acme.get(live.url + "/same-name.txt").content == b"acme's"
        assert dave.get(live.url + "/same-name.txt").content == b"globex's"
    assert dave.get(live.url + "/secret.txt").status_code == 404


def test_stalled_uploads_of_one_tenant_never_hold_up_another_tenants(tmp_path):
    """acme's clients open more sized uploads than any shared pool has threads
    and stop sending mid-body; globex's uploads and reads on its own bucket go
    on meanwhile (a streamed body read in a pool shared by every mount would
    starve them: an attacker's stalled PUTs would be a denial of service)."""
    acme_bucket, globex_bucket = moto.fresh_bucket(), moto.fresh_bucket()
    data = tenants.two_tenants(tmp_path)
    data["tenants"]["acme"]["mounts"]["/cloud"] = {"provider": moto.provider(acme_bucket)}
    data["tenants"]["globex"]["root"] = moto.provider(globex_bucket)
    auth = base64.b64encode(":".join(ACME_ALICE).encode()).decode()
    with live_server(tenants.build(data)) as live, ExitStack() as stalled:
        for index in range(12):
            # From an address of their own: from dave's, the address's share of
            # the threads (mosaic.front.admission) would refuse dave before any store.
            raw = stalled.enter_context(socket.create_connection(
                ("127.0.0.1", live.port), source_address=("127.0.0.2", 0)))
            raw.sendall(f"PUT /cloud/stalled-{index}.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Authorization: Basic {auth}\r\nContent-Length: {40 * MIB}\r\n\r\n"
                        .encode() + bytes(9 * MIB))  # more than a part, then nothing
        time.sleep(1)  # every stalled upload has reached the store
        dave = live.session(*DAVE)
        data = os.urandom(12 * MIB)  # a sized upload of its own: streamed too
        started = time.monotonic()
        assert dave.put(f"{live.url}/mine.bin", data=data, timeout=30).status_code == 201
        assert dave.get(f"{live.url}/mine.bin", timeout=30).content == data
        assert time.monotonic() - started < 10
