"""The object stores of ``bench/run_objectstores.py``: one :class:`Store` entry each.

An entry knows how to start its emulator on 127.0.0.1, make a bucket and fill
it fast (threads), how Mosaic mounts it (a provider spec), how ``rclone serve
webdav`` reaches it (an on-the-fly remote), and how the store's own Python
library reads, writes and lists it with its defaults (the third column). A new
store is one subclass plus one line in :data:`STORES`.
"""

from __future__ import annotations

import importlib.util
import io
import os
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from .settings import MIB

POPULATE_THREADS = 16  # the emulators answer small PUTs faster in parallel


class Pattern(io.RawIOBase):
    """``size`` bytes of one repeated block, readable and seekable, never held whole.

    SDKs that sign or checksum a body read it more than once, so it must seek.
    """

    def __init__(self, block: bytes, size: int) -> None:
        super().__init__()
        self._block, self._size, self._pos = memoryview(block), size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            start = self._pos % len(self._block)
            count = min(len(view) - done, len(self._block) - start, self._size - self._pos)
            view[done:done + count] = self._block[start:start + count]
            done += count
            self._pos += count
        return done

    def __len__(self) -> int:
        return self._size


class Store(ABC):
    """One object store on its emulator, for one benchmark run."""

    name: str = ""
    mount = "/store"  # where Mosaic mounts the bucket in the tenant's tree
    needs: tuple[str, ...] = ()  # modules without which this store cannot run here
    bucket = ""

    @classmethod
    def missing(cls) -> list[str]:
        """The modules of :attr:`needs` this checkout or environment lacks."""
        return [name for name in cls.needs if importlib.util.find_spec(name) is None]

    @abstractmethod
    def start(self, stack: ExitStack) -> None:
        """Start the emulator (or reuse this process's), make :attr:`bucket`, and
        register on ``stack`` what frees the emulator's memory afterwards."""

    @abstractmethod
    def provider(self) -> dict[str, Any]:
        """Mosaic's provider spec of a mount on the bucket."""

    @abstractmethod
    def rclone_remote(self) -> str:
        """An on-the-fly remote naming the bucket, for ``rclone serve webdav``.
        Values holding ":" or "," are quoted: they would end the parameter."""

    def rclone_env(self, env: dict[str, str]) -> dict[str, str]:
        """rclone's environment (some variables change how it reaches a store)."""
        return env

    @abstractmethod
    def put_small(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put(self, key: str, body: Pattern) -> None:
        """The library's default upload of a whole object, streamed from ``body``."""

    @abstractmethod
    def get(self, key: str) -> int:
        """The library's default download, read in 1 MiB pieces: bytes received."""

    @abstractmethod
    def list(self, prefix: str) -> int:
        """The library's paged listing of one folder: how many entries."""

    @abstractmethod
    def purge(self, key: str) -> None:
        """Delete ``key`` for good (every version, where the store keeps them)."""

    def populate(self, prefix: str, count: int, data: bytes) -> None:
        """``count`` objects ``prefix/file-NNNNN.txt``, several PUTs in flight."""
        keys = [f"{prefix}/file-{index:05d}.txt" for index in range(count)]
        with ThreadPoolExecutor(POPULATE_THREADS) as pool:
            list(pool.map(lambda key: self.put_small(key, data), keys))


# --- S3 on moto --------------------------------------------------------------

class S3(Store):
    """moto's S3 server (one subprocess); boto3 is the library."""

    name = "s3"
    mount = "/s3"
    needs = ("moto", "boto3", "mosaic.providers.s3")

    def start(self, stack: ExitStack) -> None:
        import boto3
        from botocore.config import Config

        from tests.support import moto

        self.url = moto.endpoint()  # stopped at exit; its state is reset below
        stack.callback(self._reset)
        self.client = boto3.client(
            "s3", endpoint_url=self.url, region_name=moto.REGION,
            aws_access_key_id=moto.KEY, aws_secret_access_key=moto.SECRET,
            config=Config(max_pool_connections=POPULATE_THREADS * 2))
        self.bucket = moto.fresh_bucket(self.url)
        # rclone's streamed PUT fails on an unversioned moto bucket (see the notes).
        self.client.put_bucket_versioning(Bucket=self.bucket,
                                          VersioningConfiguration={"Status": "Enabled"})

    def _reset(self) -> None:
        """Drop every object: moto holds them in memory."""
        import requests

        requests.post(self.url + "/moto-api/reset", timeout=30)

    def provider(self) -> dict[str, Any]:
        from tests.support import moto

        return moto.provider(self.bucket, url=self.url)

    def rclone_remote(self) -> str:
        from tests.support import moto

        # Quoted: the URL's ":" would end the remote's parameters.
        return (f":s3,provider=Other,endpoint='{self.url}',access_key_id={moto.KEY},"
                f"secret_access_key={moto.SECRET},region={moto.REGION}:{self.bucket}")

    def rclone_env(self, env: dict[str, str]) -> dict[str, str]:
        # With a CA bundle set, rclone 1.60 refuses a plain-http endpoint.
        return {name: value for name, value in env.items() if name != "AWS_CA_BUNDLE"}

    def put_small(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def put(self, key: str, body: Pattern) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def get(self, key: str) -> int:
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        return sum(len(chunk) for chunk in body.iter_chunks(MIB))

    def list(self, prefix: str) -> int:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix.rstrip("/") + "/", Delimiter="/")
        return sum(len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
                   for page in pages)

    def purge(self, key: str) -> None:
        found = self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
        versions = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                    for kind in ("Versions", "DeleteMarkers") for v in found.get(kind, [])
                    if v["Key"] == key]
        if versions:
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": versions})


# --- Azure Blob on Azurite ---------------------------------------------------

class AzureBlob(Store):
    """Azurite (npm); azure-storage-blob is the library."""

    name = "azure"
    mount = "/azure"
    needs = ("azure.storage.blob", "tests.support.azurite", "mosaic.providers.azure_blob")

    def start(self, stack: ExitStack) -> None:
        from tests.support import azurite

        self.server = azurite.shared()  # stopped at exit
        self.bucket = azurite.fresh_container(self.server)
        self.container = self.server.service().get_container_client(self.bucket)
        stack.callback(self.container.delete_container)  # Azurite keeps blobs in memory too

    def provider(self) -> dict[str, Any]:
        from tests.support import azurite

        return azurite.provider(self.bucket, server=self.server)

    def rclone_remote(self) -> str:
        # rclone 1.60 reaches Azurite only through a SAS URL (endpoint= and
        # use_emulator= fail): one for the container, made with Azurite's key.
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        from tests.support import azurite

        sas = generate_container_sas(
            azurite.ACCOUNT, self.bucket, account_key=azurite.KEY,
            permission=ContainerSasPermissions(read=True, add=True, create=True, write=True,
                                               delete=True, list=True),
            expiry=datetime.now(UTC) + timedelta(days=1))
        return f":azureblob,sas_url='{self.server.url}/{self.bucket}?{sas}':{self.bucket}"

    def put_small(self, key: str, data: bytes) -> None:
        self.container.upload_blob(key, data, overwrite=True)

    def put(self, key: str, body: Pattern) -> None:
        self.container.upload_blob(key, body, length=len(body), overwrite=True)

    def get(self, key: str) -> int:
        return sum(len(chunk) for chunk in self.container.download_blob(key).chunks())

    def list(self, prefix: str) -> int:
        return sum(1 for _ in self.container.walk_blobs(name_starts_with=prefix + "/",
                                                         delimiter="/"))

    def purge(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with suppress(ResourceNotFoundError):
            self.container.delete_blob(key)


# --- Google Cloud Storage on fake-gcs-server -------------------------------------

class GCS(Store):
    """fake-gcs-server (memory backend); gcsfs is the library (google-cloud-storage
    is not a dependency of Mosaic)."""

    name = "gcs"
    mount = "/gcs"
    needs = ("gcsfs", "tests.support.fakegcs", "mosaic.providers.gcs")

    def start(self, stack: ExitStack) -> None:
        # Before gcsfs is imported: else every call first tries a TLS gRPC endpoint.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        import gcsfs

        from tests.support import fakegcs

        self.url = fakegcs.endpoint()  # stopped at exit
        self.bucket = fakegcs.fresh_bucket(self.url)
        self.fs = gcsfs.GCSFileSystem(endpoint_url=self.url, token="anon",
                                      project=fakegcs.PROJECT, skip_instance_cache=True)
        stack.callback(lambda: self.fs.rm(self.bucket, recursive=True))

    def provider(self) -> dict[str, Any]:
        from tests.support import fakegcs

        return fakegcs.provider(self.bucket, url=self.url)

    def rclone_remote(self) -> str:
        return f":gcs,endpoint='{self.url}/storage/v1/',anonymous=true:{self.bucket}"

    def _path(self, key: str) -> str:
        return f"{self.bucket}/{key}"

    def put_small(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    def put(self, key: str, body: Pattern) -> None:
        with self.fs.open(self._path(key), "wb") as out:
            while chunk := body.read(MIB):
                out.write(chunk)

    def get(self, key: str) -> int:
        received = 0
        with self.fs.open(self._path(key), "rb") as source:
            while chunk := source.read(MIB):
                received += len(chunk)
        return received

    def list(self, prefix: str) -> int:
        return len(self.fs.ls(self._path(prefix), refresh=True))  # gcsfs caches listings

    def purge(self, key: str) -> None:
        with suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))


# --- OpenStack Swift: a Debian single-node cluster --------------------------------

class Swift(Store):
    """Debian's Swift with tempauth; python-swiftclient is the library (one
    connection per thread: a Connection is not thread-safe)."""

    name = "swift"
    mount = "/swift"
    needs = ("swiftclient", "tests.support.swift", "mosaic.providers.swift")

    def start(self, stack: ExitStack) -> None:
        from tests.support import swift

        # The tests cap objects at 16 MiB to exercise SLO; the benchmark wants
        # Swift's own limit, so that the library can PUT 256 MiB in one request.
        swift.MAX_FILE_SIZE = 5 * 1024 * MIB
        self.cluster = swift.cluster()  # stopped at exit
        self.bucket = self.cluster.fresh_container()
        self._local = threading.local()

    def _conn(self) -> Any:
        from swiftclient.client import Connection

        from tests.support import swift

        if not hasattr(self._local, "conn"):
            self._local.conn = Connection(authurl=self.cluster.auth_url, user=swift.USER,
                                          key=swift.KEY, retries=0)
        return self._local.conn

    def provider(self) -> dict[str, Any]:
        from tests.support import swift

        return swift.provider(self.bucket)

    def rclone_remote(self) -> str:
        from tests.support import swift

        return (f":swift,auth='{self.cluster.auth_url}',user='{swift.USER}',"
                f"key={swift.KEY}:{self.bucket}")

    def put_small(self, key: str, data: bytes) -> None:
        self._conn().put_object(self.bucket, key, contents=data)

    def put(self, key: str, body: Pattern) -> None:
        self._conn().put_object(self.bucket, key, contents=body, content_length=len(body),
                                chunk_size=MIB)

    def get(self, key: str) -> int:
        _, body = self._conn().get_object(self.bucket, key, resp_chunk_size=MIB)
        return sum(len(chunk) for chunk in body)

    def list(self, prefix: str) -> int:
        _, entries = self._conn().get_container(self.bucket, prefix=prefix + "/",
                                                delimiter="/", full_listing=True)
        return len(entries)

    def purge(self, key: str) -> None:
        from swiftclient.exceptions import ClientException

        try:
            self._conn().delete_object(self.bucket, key)
        except ClientException as exc:
            if exc.http_status != 404:
                raise


# --- SMB on Samba ---------------------------------------------------------------

class SMB(Store):
    """A private smbd (tests/support/samba.py), share ``conformance``, one fresh folder
    as the "bucket"; smbprotocol's smbclient is the library, with its own connection
    cache and the same request size as Mosaic's default ``io_block_size`` (its 64 KiB
    default would measure the block size, not the library), one request at a time as
    its file objects send them."""

    name = "smb"
    mount = "/smb"
    needs = ("smbclient", "tests.support.samba", "mosaic.providers.smb")
    share = "conformance"
    block = 0  # start() sets it: Mosaic's default io_block_size

    def start(self, stack: ExitStack) -> None:
        import smbclient

        from mosaic.providers.smb_options import Options
        from tests.support import samba

        self.block = Options.model_fields["io_block_size"].default
        self.server = samba.SambaServer().start()
        stack.callback(self.server.remove)
        self.bucket = f"bench-{os.urandom(4).hex()}"
        self.root = self.server.share_dir(self.share) / self.bucket
        self._mkdir(self.root)
        self.cache: dict[str, Any] = {}  # never smbclient's global pool
        self.call = {"username": samba.ACME.user, "password": samba.ACME.password,
                     "port": self.server.port, "connection_cache": self.cache,
                     "auth_protocol": "ntlm"}
        # signed in before anything is timed: a cold listing is an enumeration only
        smbclient.register_session("127.0.0.1", **self.call)
        stack.callback(lambda: smbclient.reset_connection_cache(connection_cache=self.cache))

    def _mkdir(self, path: Any) -> None:
        import shutil

        from tests.support import samba

        path.mkdir(parents=True, exist_ok=True)
        shutil.chown(path, user=samba.ACME.user)

    def _unc(self, key: str) -> str:
        parts = (self.share, self.bucket, *key.strip("/").split("/"))
        return "\\\\127.0.0.1\\" + "\\".join(parts)

    def provider(self) -> dict[str, Any]:
        from tests.support import samba

        return {**samba.provider(self.share, samba.ACME, path=self.bucket),
                "port": self.server.port}

    def rclone_remote(self) -> str:
        import subprocess

        from tests.support import samba

        obscured = subprocess.run(["rclone", "obscure", samba.ACME.password], check=True,
                                  capture_output=True, text=True).stdout.strip()
        return (f":smb,host=127.0.0.1,port={self.server.port},user={samba.ACME.user},"
                f"pass={obscured}:{self.share}/{self.bucket}")

    def populate(self, prefix: str, count: int, data: bytes) -> None:
        """Written on the server's disk (10,000 SMB creates would only time Samba)."""
        folder = self.root / prefix
        self._mkdir(folder)
        for index in range(count):
            (folder / f"file-{index:05d}.txt").write_bytes(data)

    def put_small(self, key: str, data: bytes) -> None:
        if key.endswith("/"):
            self._mkdir(self.root / key)
        else:
            (self.root / key).write_bytes(data)

    def put(self, key: str, body: Pattern) -> None:
        import smbclient

        self._mkdir((self.root / key).parent)
        with smbclient.open_file(self._unc(key), "wb", buffering=0, **self.call) as out:
            while chunk := body.read(self.block):
                view = memoryview(chunk)
                while view:  # a raw write may take less than it is given
                    view = view[out.write(view):]

    def get(self, key: str) -> int:
        import smbclient

        received, buffer = 0, bytearray(self.block)
        with smbclient.open_file(self._unc(key), "rb", buffering=0, **self.call) as source:
            while count := source.readinto(buffer):
                received += count
        return received

    def list(self, prefix: str) -> int:
        import smbclient

        with smbclient.scandir(self._unc(prefix), **self.call) as entries:
            return sum(1 for _ in entries)

    def purge(self, key: str) -> None:
        with suppress(FileNotFoundError):
            (self.root / key).unlink()


#: name -> entry; ``--stores`` picks from these
STORES: dict[str, type[Store]] = {"s3": S3, "azure": AzureBlob, "gcs": GCS, "swift": Swift,
                                  "smb": SMB}
