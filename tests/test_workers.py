"""Several worker processes on one port agree on locks (one shared socket + SQL locks)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests
import yaml

from tests.support import tenants

LOCK_BODY = ('<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
             '<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>'
             '<D:owner>worker-test</D:owner></D:lockinfo>')
ALICE = ("alice@acme.example", "alice-secret")
BOB = ("bob@acme.example", "bob-secret")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    base = tmp_path_factory.mktemp("workers")
    config = tenants.two_tenants(base)
    port = free_port()
    # Every client here is alice at 127.0.0.1: the address's and the tenant's shares of
    # the threads would refuse some of the 16 parallel LOCKs that land on one worker,
    # which is not what these tests are about (tests/hostile/test_fair_share.py is).
    config["server"].update(listen=f"127.0.0.1:{port}", workers=2,
                            fair_share={"per_address": 0, "per_tenant": 0})
    path = base / "mosaic.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (base / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "mosaic", "serve", "--config", str(path)],
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, base / "server.log")
        workers = psutil.Process(process.pid).children()
        assert len(workers) == 2, workers
        yield url
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, (base / "server.log").read_text()
        log.close()


def _wait_until_up(url: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if requests.options(url + "/", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError("mosaic did not start")


def fresh(method: str, url: str, auth: tuple[str, str], **kwargs) -> requests.Response:
    # A new connection each time, so the kernel spreads requests over workers.
    return requests.request(method, url, auth=auth, headers={"Connection": "close",
                                                             **kwargs.pop("headers", {})},
                            **kwargs)


def test_concurrent_locks_through_different_workers_grant_exactly_one(farm):
    for round_number in range(3):
        url = f"{farm}/contended-{round_number}.txt"
        assert fresh("PUT", url, ALICE, data=b"x").status_code == 201
        with ThreadPoolExecutor(max_workers=16) as pool:
            replies = list(pool.map(lambda target: fresh(
                "LOCK", target, ALICE, data=LOCK_BODY,
                headers={"Content-Type": "application/xml"}).status_code, [url] * 16))
        assert replies.count(200) == 1, replies
        assert set(replies) == {200, 423}, replies


def test_a_lock_taken_in_one_worker_is_honoured_by_all(farm):
    url = f"{farm}/held.txt"
    fresh("PUT", url, ALICE, data=b"x")
    token = fresh("LOCK", url, ALICE, data=LOCK_BODY,
                  headers={"Content-Type": "application/xml"}).headers["Lock-Token"]
    statuses = {fresh("PUT", url, BOB, data=b"y").status_code for _ in range(12)}
    assert statuses == {423}
    assert fresh("PUT", url, ALICE, data=b"z", headers={"If": f"({token})"}).status_code == 204
    assert fresh("UNLOCK", url, ALICE, headers={"Lock-Token": token}).status_code == 204
    assert fresh("PUT", url, BOB, data=b"y").status_code == 204
