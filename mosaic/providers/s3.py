"""``s3``: Amazon S3 and S3-compatible stores (MinIO, Ceph RGW, Wasabi, moto...).

A bucket, optionally below a key prefix, served as a folder tree by
:mod:`mosaic.providers.objectstore`; this module supplies the S3 primitives
on top of s3fs's async client, with a blocking botocore client beside it for
the requests whose body is streamed (a streamed PUT, a download's GET). Each
mount gets its own clients and sessions (``skip_instance_cache``): nothing is
shared between tenants. Credentials are
``key``/``secret`` (secrets: inline, ``${ENV}`` or ``<key>_file``) or, when
both are absent, the standard AWS credential chain (environment, profile,
instance role).

An upload whose size the client announced, up to 5 GiB (PutObject's limit),
is one PutObject streamed as the client sends it, with S3's UNSIGNED-PAYLOAD
(a body not yet received cannot be hashed); others are multipart in parts of
``part_size_mib``, ``transfers`` of them in flight. A read is one GET streamed
``read_ahead_mib`` ahead of the client. A discarded multipart upload is
aborted (if the store is down, the mount's next upload aborts it), and those
a killed process left (S3 keeps them, invisible but billed) are aborted after
a day by a sweep that runs at most hourly, on a write. A
copy is one CopyObject up to 5 GiB (S3's limit for it) and a multipart copy
(UploadPartCopy, ``transfers`` parts in flight) above.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import aiobotocore.session
import botocore.config
import botocore.loaders
import botocore.session
import s3fs
from pydantic import Field, SecretStr, model_validator

from mosaic.core.capabilities import BuildContext
from mosaic.providers.objectstore import CAPABILITIES as STORE_CAPABILITIES
from mosaic.providers.objectstore import ObjectStoreFileSystem
from mosaic.providers.primitives import (
    STREAM_CHUNK,
    Fault,
    Listing,
    ObjectStore,
    ObjectStoreOptions,
    ServiceUrl,
    StoredObject,
)
from mosaic.providers.transfers import BodyPipe, PartedUpload

__all__ = ["CAPABILITIES", "Options", "build"]

# delimiter listings carry no metadata and no time for a sub-folder
CAPABILITIES = dataclasses.replace(STORE_CAPABILITIES, listed_mtimes=False)

MIB = 1024 * 1024
#: A multipart upload untouched this long belongs to a killed process.
STALE_UPLOAD_S = 24 * 3600
SWEEP_EVERY_S = 3600
log = logging.getLogger(__name__)
_DELETE_BATCH = 1000  # DeleteObjects' limit
COPY_LIMIT = 5 * 1024 * MIB  # CopyObject's limit; larger objects are copied in parts
PUT_LIMIT = 5 * 1024 * MIB  # PutObject's limit; larger uploads go in parts
COPY_PART = 512 * MIB


class Options(ObjectStoreOptions):
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-_]{1,254}$", description="Bucket name")
    region: str | None = Field(None, description="Region, e.g. eu-west-1")
    endpoint_url: ServiceUrl | None = Field(None, description="Endpoint of an S3-compatible store")
    path_style: bool = Field(False, description="Path-style addressing (MinIO, Ceph, moto)")
    key: SecretStr | None = Field(None, description="Access key id; default: AWS chain")
    secret: SecretStr | None = Field(None, description="Secret access key")
    server_side_encryption: Literal["AES256", "aws:kms", "aws:kms:dsse"] | None = Field(
        None, description="Encryption at rest the store applies to every object written")
    sse_kms_key_id: str | None = Field(None, description="KMS key for aws:kms encryption")
    storage_class: str | None = Field(
        None, pattern=r"^[A-Z_]+$", description="Storage class of new objects, e.g. STANDARD_IA")

    @model_validator(mode="after")
    def _both_or_neither(self) -> Options:
        if (self.key is None) != (self.secret is None):
            raise ValueError("give both key and secret, or neither for the AWS credential chain")
        if self.sse_kms_key_id and not (self.server_side_encryption or "").startswith("aws:kms"):
            raise ValueError("sse_kms_key_id needs server_side_encryption aws:kms")
        return self

    def write_args(self) -> dict[str, str]:
        """Arguments of every call that creates an object (put, multipart, copy)."""
        args = {"ServerSideEncryption": self.server_side_encryption,
                "SSEKMSKeyId": self.sse_kms_key_id, "StorageClass": self.storage_class}
        return {name: value for name, value in args.items() if value}


def build(options: Options, context: BuildContext) -> ObjectStoreFileSystem:
    return ObjectStoreFileSystem(S3Store(options), options, context)


def _config(options: Options) -> dict[str, Any]:
    """botocore's client settings, the same for both of a mount's clients."""
    config: dict[str, Any] = {"connect_timeout": 5, "read_timeout": 60,
                              "retries": {"max_attempts": 2, "mode": "standard"},
                              # as many as the requests a worker serves at once (threads):
                              # botocore's 10 opened and dropped a connection per request
                              # beyond, or made it wait (aiohttp)
                              "max_pool_connections": 32,
                              # No CRC of every byte sent and read where S3 does not ask
                              # for one (TLS already guards the transfer): the CRC and
                              # its aws-chunked framing cost more CPU than the transfer.
                              "request_checksum_calculation": "when_required",
                              "response_checksum_validation": "when_required"}
    if options.path_style:
        config["s3"] = {"addressing_style": "path"}
    return config


def _client(options: Options) -> s3fs.S3FileSystem:
    config = _config(options)
    credentials: dict[str, Any] = {}
    if options.key is not None and options.secret is not None:
        credentials = {"key": options.key.get_secret_value(),
                       "secret": options.secret.get_secret_value()}
    session = aiobotocore.session.AioSession()
    # Only the parsed API descriptions are shared (0.1 s per session saved); the
    # session, client, connections and credentials stay this mount's own.
    session.register_component("data_loader", _api_loader())
    client = s3fs.S3FileSystem(
        **credentials,
        session=session,
        endpoint_url=options.endpoint_url,
        client_kwargs={"region_name": options.region} if options.region else {},
        config_kwargs=config,
        skip_instance_cache=True,  # one client and session per mount
        use_listings_cache=False,
    )
    client.retries = 2  # s3fs's own retries of transient failures, on top of botocore's
    return client


def _unsigned_streamed_payload(request: Any, **_: Any) -> None:
    """A streamed body cannot be hashed before it is sent: it goes as S3's
    UNSIGNED-PAYLOAD (the headers stay signed; TLS guards the content on https)."""
    if isinstance(request.body, _StreamedBody):
        config = request.context["client_config"]
        request.context["client_config"] = config.merge(botocore.config.Config(
            s3={**(config.s3 or {}), "payload_signing_enabled": False}))


class _StreamedBody(io.RawIOBase):
    """A :class:`BodyPipe` as the file botocore sends a body from. Unseekable:
    botocore cannot rewind it to retry, and fails instead (``UnseekableStreamError``:
    the store failed a request worth a retry)."""

    def __init__(self, pipe: BodyPipe) -> None:
        super().__init__()
        self._pipe = pipe

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._pipe.read(-1 if size is None else size)

    def readinto(self, buffer: Any) -> int:
        data = self._pipe.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def __len__(self) -> int:  # botocore's Content-Length
        return len(self._pipe)


def _streaming_client(options: Options) -> Any:
    """A blocking botocore client of the mount's own, for streamed PUTs and GETs:
    it reads a PUT's body, as the client sends it, in the uploading thread, and a
    GET's reply in the download's reader. Through s3fs, aiohttp would read a PUT's
    body in its event loop's default executor, a handful of threads every mount
    shares: a few stalled uploads of one tenant would hold up every tenant's
    (tests/test_isolation_objectstores.py)."""
    session = botocore.session.Session()
    session.register_component("data_loader", _api_loader())
    session.register("before-sign.s3.PutObject", _unsigned_streamed_payload)
    credentials: dict[str, Any] = {}
    if options.key is not None and options.secret is not None:
        credentials = {"aws_access_key_id": options.key.get_secret_value(),
                       "aws_secret_access_key": options.secret.get_secret_value()}
    return session.create_client("s3", region_name=options.region,
                                 endpoint_url=options.endpoint_url,
                                 config=botocore.config.Config(**_config(options)),
                                 **credentials)


@functools.cache
def _api_loader() -> botocore.loaders.Loader:
    return botocore.loaders.create_loader()


#: S3 error codes (and client-side failures by class name) -> what they mean
ERRORS: dict[str, Fault] = {
    **dict.fromkeys(["NoSuchKey", "404", "NotFound", "NoSuchUpload"], Fault.MISSING),
    **dict.fromkeys(["AccessDenied", "403", "AllAccessDisabled"], Fault.DENIED),
    **dict.fromkeys(["KeyTooLongError", "InvalidObjectName"], Fault.INVALID),
    **dict.fromkeys(["NoSuchBucket", "InvalidBucketName"], Fault.NO_BUCKET),
    **dict.fromkeys(["InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                     "InvalidToken", "NoCredentialsError", "PartialCredentialsError",
                     "CredentialRetrievalError"], Fault.CREDENTIALS),
    **dict.fromkeys(["500", "502", "503", "504", "InternalError", "ServiceUnavailable",
                     "SlowDown", "EndpointConnectionError", "ConnectTimeoutError",
                     "ReadTimeoutError", "ConnectionClosedError", "ConnectionError",
                     "ClientConnectorError", "ServerDisconnectedError", "ClientOSError",
                     "FSTimeoutError", "TimeoutError", "ConnectionRefusedError",
                     "UnseekableStreamError"],
                    Fault.UNREACHABLE),
}


class S3Store(ObjectStore):
    """One bucket through s3fs's client (its ``call_s3`` adds retries)."""

    ERRORS = ERRORS

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self._s3 = _client(options)
        self._options = options
        self._blocking_client: Any = None  # streamed PUTs and GETs, made on first use
        self._blocking_lock = threading.Lock()
        self._bucket = self.bucket = options.bucket
        self.copy_limit, self.copy_part_size = COPY_LIMIT, COPY_PART  # tests make them small
        self.write_args = options.write_args()
        self.page_size = 1000  # S3's maximum; tests make it small
        self._prefix = f"{options.prefix}/" if options.prefix else ""
        self._next_sweep = 0.0
        self._sweep_lock = threading.Lock()
        self._leftovers: set[tuple[str, str]] = set()  # (key, upload id) of failed aborts
        self._leftovers_lock = threading.Lock()

    def call(self, method: str, **kwargs: Any) -> Any:
        return self._s3.call_s3(method, Bucket=self._bucket, **kwargs)

    def put_stream(self, key: str, body: _StreamedBody, length: int,
                   metadata: Mapping[str, str]) -> None:
        """One PutObject whose body is read as it is sent, in this thread."""
        self._blocking().put_object(Bucket=self._bucket, Key=key, Body=body,
                                    ContentLength=length, Metadata=dict(metadata),
                                    **self.write_args)

    def _blocking(self) -> Any:
        with self._blocking_lock:
            if self._blocking_client is None:
                self._blocking_client = _streaming_client(self._options)
            return self._blocking_client

    def native_code(self, exc: BaseException) -> str | None:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            return str(code) if code else None
        return None

    def list(self, prefix: str, recursive: bool = False, limit: int | None = None) -> Listing:
        listing = Listing()
        args: dict[str, Any] = {"Prefix": prefix}
        if not recursive:
            args["Delimiter"] = "/"
        args["MaxKeys"] = self.page_size if limit is None else limit
        while True:
            page = self.call("list_objects_v2", **args)
            listing.objects += [_stored(item) for item in page.get("Contents", [])]
            listing.prefixes += [item["Prefix"] for item in page.get("CommonPrefixes", [])]
            token = page.get("NextContinuationToken")
            if limit is not None or not page.get("IsTruncated") or not token:
                return listing
            args["ContinuationToken"] = token

    def head(self, key: str) -> StoredObject | None:
        try:
            found = self.call("head_object", Key=key)
        except Exception as exc:
            if self.is_missing(exc):
                return None
            raise
        return StoredObject(key, found["ContentLength"], found["LastModified"].timestamp(),
                            found.get("ETag", ""), found.get("Metadata", {}))

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        self.call("put_object", Key=key, Body=data, Metadata=dict(metadata or {}),
                  **self.write_args)

    def copy(self, src: str, dst: str, metadata: Mapping[str, str] | None = None) -> None:
        args: dict[str, Any] = {"MetadataDirective": "COPY"}
        if metadata is not None:
            args = {"MetadataDirective": "REPLACE", "Metadata": dict(metadata)}
        self.call("copy_object", Key=dst, CopySource={"Bucket": self._bucket, "Key": src},
                  **args, **self.write_args)

    def copy_object(self, obj: StoredObject, dst: str,
                    metadata: Mapping[str, str] | None = None) -> None:
        if obj.size <= self.copy_limit:
            self.copy(obj.key, dst, metadata)
            return
        if metadata is None:  # a multipart copy does not carry the source's metadata
            source = obj if obj.metadata is not None else self.head(obj.key)
            metadata = source.metadata if source and source.metadata else {}
        upload = MultipartUpload(self, dst, metadata)
        step = self.copy_part_size
        ranges = [(start, min(start + step, obj.size)) for start in range(0, obj.size, step)]
        tokens: list[Any] = []
        try:
            with ThreadPoolExecutor(self.transfers) as pool:
                tokens = list(pool.map(
                    lambda item: upload.copy_part(item[0] + 1, obj.key, *item[1]),
                    enumerate(ranges)))
            upload.finish(tokens)
        except BaseException:
            upload.abort(tokens)
            raise

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start:start + _DELETE_BATCH]]
            answer = self.call("delete_objects", Delete={"Objects": batch, "Quiet": True})
            failed = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if failed:
                raise OSError(f"{len(failed)} objects could not be deleted "
                              f"({failed[0].get('Code')})")

    def stream(self, obj: StoredObject, start: int) -> Iterator[bytes]:
        """One GET read in the calling thread (the download's reader) through the
        mount's blocking client: through s3fs every chunk was a trip into the
        event loop's thread and back, which capped a download at about half of
        what one blocking read takes."""
        ranged = {"Range": f"bytes={start}-"} if start else {}
        # IfMatch: a file replaced between a read's HEAD and GET fails the read
        answer = self._blocking().get_object(Bucket=self._bucket, Key=obj.key,
                                             IfMatch=obj.etag, **ranged)
        body = answer["Body"]
        try:
            yield from body.iter_chunks(STREAM_CHUNK)
        finally:
            body.close()  # a download stopped early drops the rest of its reply

    def start_upload(self, key: str) -> PartedUpload:
        self._abort_leftovers()
        self._sweep_now_and_then()
        return MultipartUpload(self, key)

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; one already gone (a sweep, a retry) is fine."""
        try:
            self.call("abort_multipart_upload", Key=key, UploadId=upload_id)
        except Exception as exc:
            if not self.is_missing(exc):
                raise

    def leftover(self, key: str, upload_id: str) -> None:
        """An upload whose abort failed (the store was down): billed until aborted."""
        with self._leftovers_lock:
            self._leftovers.add((key, upload_id))

    def _abort_leftovers(self) -> None:
        """Retry the aborts that failed; housekeeping: never fails the upload itself."""
        with self._leftovers_lock:
            pending, self._leftovers = self._leftovers, set()
        for key, upload_id in pending:
            try:
                self.abort_upload(key, upload_id)
            except Exception as exc:
                log.warning("aborting a discarded multipart upload failed again: %s",
                            type(exc).__name__)
                self.leftover(key, upload_id)

    def _sweep_now_and_then(self) -> None:
        """At most once per ``SWEEP_EVERY_S``: abort the multipart uploads a killed
        process left below this mount (S3 keeps and bills them forever)."""
        with self._sweep_lock:
            if time.monotonic() < self._next_sweep:
                return
            self._next_sweep = time.monotonic() + SWEEP_EVERY_S
        try:
            self.abort_stale_uploads(time.time() - STALE_UPLOAD_S)
        except Exception as exc:  # housekeeping: never fails the upload itself
            log.warning("sweeping stale multipart uploads failed: %s", type(exc).__name__)

    def abort_stale_uploads(self, started_before: float) -> int:
        """Abort this mount's multipart uploads started before that time."""
        args: dict[str, Any] = {"Prefix": self._prefix}
        aborted = 0
        while True:
            page = self.call("list_multipart_uploads", **args)
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < started_before:
                    # another worker's sweep may abort it first: that is fine
                    self.abort_upload(upload["Key"], upload["UploadId"])
                    aborted += 1
            if not page.get("IsTruncated"):
                return aborted
            args.update(KeyMarker=page.get("NextKeyMarker"),
                        UploadIdMarker=page.get("NextUploadIdMarker"))


def _stored(item: dict[str, Any]) -> StoredObject:
    return StoredObject(item["Key"], item.get("Size", 0), item["LastModified"].timestamp(),
                        item.get("ETag", ""))


def _streamed(data: bytes) -> io.BufferedReader:
    """``data`` as a reader aiohttp sends 64 KiB at a time: given bytes, it joins
    the whole part to the request's headers and buffers what the socket did not
    take, two more copies of every part in flight."""
    return io.BufferedReader(io.BytesIO(data))  # BytesIO shares data until written to


class MultipartUpload(PartedUpload):
    """A multipart upload, started with the first part; a small file is one PUT.
    Nothing is visible before completion; abort drops the parts sent."""

    def __init__(self, store: S3Store, key: str,
                 metadata: Mapping[str, str] | None = None) -> None:
        self._store, self._key = store, key
        self._metadata = dict(metadata or {})
        self._upload_id: str | None = None
        self._starting = threading.Lock()

    stream_limit = PUT_LIMIT
    max_parts = 10_000  # S3's limit per multipart upload

    def put_whole(self, data: bytes) -> None:
        self._store.call("put_object", Key=self._key, Body=_streamed(data),
                         **self._store.write_args)

    def put_stream(self, body: BodyPipe, length: int) -> None:
        self._store.put_stream(self._key, _StreamedBody(body), length, self._metadata)

    def _id(self) -> str:
        with self._starting:
            if self._upload_id is None:
                started = self._store.call("create_multipart_upload", Key=self._key,
                                           Metadata=self._metadata, **self._store.write_args)
                self._upload_id = started["UploadId"]
            return self._upload_id

    def send_part(self, number: int, data: bytes) -> Any:
        sent = self._store.call("upload_part", Key=self._key, UploadId=self._id(),
                                PartNumber=number, Body=_streamed(data))
        return {"PartNumber": number, "ETag": sent["ETag"]}

    def copy_part(self, number: int, source: str, start: int, end: int) -> Any:
        """Part ``number`` is bytes [start, end) of ``source``, copied by the store."""
        sent = self._store.call("upload_part_copy", Key=self._key, UploadId=self._id(),
                                PartNumber=number, CopySourceRange=f"bytes={start}-{end - 1}",
                                CopySource={"Bucket": self._store.bucket, "Key": source})
        return {"PartNumber": number, "ETag": sent["CopyPartResult"]["ETag"]}

    def finish(self, tokens: list[Any]) -> None:
        self._store.call("complete_multipart_upload", Key=self._key, UploadId=self._id(),
                         MultipartUpload={"Parts": tokens})

    def abort(self, tokens: list[Any]) -> None:
        """If the store is down, the mount's next upload aborts it."""
        if self._upload_id is None:
            return
        try:
            self._store.abort_upload(self._key, self._upload_id)
        except Exception:
            self._store.leftover(self._key, self._upload_id)
            raise
