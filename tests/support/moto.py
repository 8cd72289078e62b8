"""moto's S3 server on 127.0.0.1 for the tests.

:func:`endpoint` is one ``moto_server`` subprocess per test process, started
on first use (its own process: it gets a core of its own instead of sharing
the tests' GIL); every caller makes a fresh bucket on it. :class:`StoppableS3`
runs one in this process that a fault test may stop and start again (moto's
state lives in the process, so the buckets survive). A missing moto is a
failure, never a skip: it comes with the ``test`` extra.
"""

from __future__ import annotations

import atexit
import functools
import logging
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

KEY = SECRET = "testing"
REGION = "us-east-1"
READY_TIMEOUT_S = 30.0

_lock = threading.Lock()
_url: str | None = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            requests.get(url + "/moto-api/", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"moto_server not ready after {READY_TIMEOUT_S} s")


def _start() -> str:
    port = _free_port()
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(_stop, process)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, process)
    return url


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()


def endpoint() -> str:
    """The URL of this test process's moto server, started on first use."""
    global _url
    with _lock:
        if _url is None:
            _url = _start()
        return _url


@functools.cache
def client(url: str | None = None) -> Any:
    """A boto3 client of the server (cached: making one takes 0.2 s)."""
    return boto3.client("s3", endpoint_url=url or endpoint(), region_name=REGION,
                        aws_access_key_id=KEY, aws_secret_access_key=SECRET)


def fresh_bucket(url: str | None = None) -> str:
    name = f"mosaic-{secrets.token_hex(6)}"
    client(url).create_bucket(Bucket=name)
    return name


def object_names(bucket: str, url: str | None = None) -> list[str]:
    """Every key of the bucket (up to a page of 1,000), straight from the server."""
    listed = client(url).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def provider(bucket: str, prefix: str = "", url: str | None = None) -> dict[str, Any]:
    """The provider spec of an ``s3`` mount on ``bucket`` of a moto server."""
    return {"type": "s3", "bucket": bucket, "prefix": prefix, "endpoint_url": url or endpoint(),
            "region": REGION, "path_style": True, "key": KEY, "secret": SECRET}


class StoppableS3:
    """A moto server in this process, on a fixed port, that can be stopped and
    started again with its buckets intact."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port,
                                          verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    yield endpoint()


@pytest.fixture
def stoppable_s3() -> Iterator[StoppableS3]:
    server = StoppableS3()
    server.start()
    try:
        yield server
    finally:
        server.stop()
