"""Azurite's Blob service on 127.0.0.1 for the tests.

:func:`endpoint` is one ``azurite-blob`` process per test process, started on
first use and keeping everything in memory; every caller makes a fresh
container on it. A fault test gets an :class:`Azurite` of its own with a data
folder (``--location``), which it may stop (SIGTERM), kill (SIGKILL) and start
again on the same port: containers and committed blobs survive a restart
(after a SIGKILL, only what Azurite had saved: it writes its blob index every
:data:`AUTOSAVE_S`). Azurite comes from npm (``npm ci`` at the repository
root, run by scripts/test.sh); a missing one is a failure, never a skip.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from tests.support import emulator

ACCOUNT = "devstoreaccount1"
#: Azurite's well-known development key (public, in Azure's documentation)
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BINARY = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "azurite-blob"
#: Azurite saves its blob index to disk this often: a SIGKILL loses younger changes
AUTOSAVE_S = 5.0


class Azurite(emulator.Emulator):
    """One azurite-blob process on a fixed port and data folder, restartable."""

    name = "azurite-blob"
    stop_timeout_s = 10.0  # SIGTERM: it saves its index first

    def __init__(self, location: Path | None = None) -> None:
        """``location``: the data folder; None keeps everything in memory (30%
        faster, lost when the process ends)."""
        if not BINARY.exists():
            raise RuntimeError(f"Azurite is not installed ({BINARY} is missing): run "
                               "scripts/test.sh, or `npm ci` at the repository root")
        super().__init__()
        self.location = location
        self.url = f"{self.url}/{ACCOUNT}"  # Azurite serves the account in the path

    def command(self) -> list[str]:
        storage = ["--location", str(self.location)] if self.location \
            else ["--inMemoryPersistence"]
        return [str(BINARY), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), *storage,
                "--skipApiVersionCheck", "--loose", "--silent",
                "--disableTelemetry"]  # with telemetry, an offline exit waits 100 s

    def ready(self) -> bool:
        return emulator.answers(self.url + "?comp=list")

    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={self.url};")

    def service(self) -> BlobServiceClient:
        return BlobServiceClient(self.url, credential={"account_name": ACCOUNT,
                                                       "account_key": KEY})

    def fresh_container(self) -> str:
        name = f"mosaic-{secrets.token_hex(6)}"
        self.service().create_container(name)
        return name


#: this test process's Azurite, started on first use
shared = emulator.OnePerProcess(lambda: Azurite().start(), Azurite.stop)


def endpoint() -> str:
    return shared().url


def fresh_container(server: Azurite | None = None) -> str:
    return (server or shared()).fresh_container()


def provider(container: str, prefix: str = "", server: Azurite | None = None,
             **auth: Any) -> dict[str, Any]:
    """The provider spec of an ``azure_blob`` mount on ``container`` (key auth by
    default; pass another auth method's options to replace it)."""
    url = (server or shared()).url
    spec = {"type": "azure_blob", "container": container, "prefix": prefix}
    if "connection_string" in auth:
        return {**spec, **auth}
    return {**spec, "account": ACCOUNT, "account_url": url, **(auth or {"account_key": KEY})}


@pytest.fixture(scope="session")
def azurite_url() -> Iterator[str]:
    yield endpoint()


@pytest.fixture
def stoppable_azurite(tmp_path: Path) -> Iterator[Azurite]:
    """An Azurite of this test's own, which it may stop, kill and restart."""
    server = Azurite(tmp_path / "azurite")
    server.start()
    try:
        yield server
    finally:
        server.stop()
