"""The object stores of ``bench/run_objectstores.py``: one :class:`Store` entry each.

An entry knows how to start its emulator on 127.0.0.1, make a bucket and fill
it fast (threads), how Mosaic mounts it (a provider spec), how ``rclone serve
webdav`` reaches it (an on-the-fly remote), and how the store's own Python
library reads, writes and lists it with its defaults (the third column). A new
store is one subclass plus one line in :data:`STORES`.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
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

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    @abstractmethod
    def start(self, stack: ExitStack) -> None:
        """Start the emulator (stopped when ``stack`` closes), then make the bucket."""

    @abstractmethod
    def provider(self) -> dict[str, Any]:
        """Mosaic's provider spec of a mount on the bucket."""

    @abstractmethod
    def rclone_remote(self) -> str:
        """An on-the-fly remote naming the bucket, for ``rclone serve webdav``."""

    def rclone_env(self, env: dict[str, str]) -> dict[str, str]:
        """rclone's environment (some variables change how it reaches a store)."""
        return env

    @abstractmethod
    def put_small(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put(self, key: str, body: Pattern) -> None:
        """The library's default upload of a whole object."""

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
        self._parallel(lambda key: self.put_small(key, data), keys)

    def _parallel(self, action: Callable[[str], None], keys: list[str]) -> None:
        with ThreadPoolExecutor(POPULATE_THREADS) as pool:
            list(pool.map(action, keys))


# --- S3 on moto --------------------------------------------------------------

class S3(Store):
    """moto's S3 server (one subprocess); boto3 is the library."""

    name = "s3"
    mount = "/s3"

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
        self.client.create_bucket(Bucket=self.bucket)
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


#: name -> entry; ``--stores`` picks from these
STORES: dict[str, type[Store]] = {"s3": S3}

