"""moto's S3 server on 127.0.0.1 for the tests: one per test process, started
on first use, a fresh bucket for every caller.

A missing moto is a failure, never a skip (it comes with the ``test`` extra).
"""

from __future__ import annotations

import atexit
import logging
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

KEY = SECRET = "testing"
REGION = "us-east-1"

_lock = threading.Lock()
_server: ThreadedMotoServer | None = None
_url: str | None = None


def endpoint() -> str:
    """The URL of this process's moto server, started on first use."""
    global _server, _url
    with _lock:
        if _url is None:
            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request
            _server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            _server.start()
            host, port = _server.get_host_and_port()
            _url = f"http://{host}:{port}"
            atexit.register(_server.stop)
        return _url


def client(url: str | None = None) -> Any:
    return boto3.client("s3", endpoint_url=url or endpoint(), region_name=REGION,
                        aws_access_key_id=KEY, aws_secret_access_key=SECRET)


def fresh_bucket(url: str | None = None) -> str:
    name = f"mosaic-{secrets.token_hex(6)}"
    client(url).create_bucket(Bucket=name)
    return name


def provider(bucket: str, prefix: str = "", url: str | None = None) -> dict[str, Any]:
    """The provider spec of an ``s3`` mount on ``bucket`` of the moto server."""
    return {"type": "s3", "bucket": bucket, "prefix": prefix, "endpoint_url": url or endpoint(),
            "region": REGION, "path_style": True, "key": KEY, "secret": SECRET}


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    yield endpoint()
