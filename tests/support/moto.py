"""moto's S3 server on 127.0.0.1 for the tests.

:func:`endpoint` is one ``moto_server`` subprocess per test process, started
on first use (its own process: it gets a core of its own instead of sharing
the tests' GIL); every caller makes a fresh bucket on it. :class:`StoppableS3`
runs one in this process that a fault test may stop and start again (moto's
state lives in the process, so the buckets survive). A missing moto is a
failure, never a skip: it comes with the ``test`` extra.
"""

from __future__ import annotations

import functools
import logging
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.support import emulator

KEY = SECRET = "testing"
REGION = "us-east-1"


class MotoServer(emulator.Emulator):
    """moto_server, the console script installed next to this Python."""

    name = "moto_server"

    def command(self) -> list[str]:
        server = Path(sys.executable).with_name("moto_server")
        return [str(server), "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        return emulator.answers(self.url + "/moto-api/")


_shared = emulator.OnePerProcess(lambda: MotoServer().start(), MotoServer.stop)


def endpoint() -> str:
    """The URL of this test process's moto server, started on first use."""
    return _shared().url


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
        self.port = emulator.free_port()
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
