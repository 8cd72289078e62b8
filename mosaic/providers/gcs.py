"""``gcs``: Google Cloud Storage (and emulators such as fake-gcs-server).

A bucket, optionally below a key prefix, served as a folder tree by
:mod:`mosaic.providers.objectstore`; this module supplies the GCS primitives
as JSON API calls made through gcsfs's HTTP session and credentials. Each
mount gets its own ``GCSFileSystem`` (``skip_instance_cache``): its own
aiohttp session and credentials, nothing shared between tenants.

Credentials: a service-account key or authorized-user JSON file
(``credentials_file``), else ``anonymous`` (emulators, public buckets), else
Google's default credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, the
metadata server), looked up on first use.

Uploads: a small file is one multipart upload; a bigger one is a resumable
upload session fed in order in chunks of ``part_size_mib`` and published only
by its last chunk, so nothing is visible before; a discarded upload cancels
the session (DELETE of the session URI). Reads are ranged ``alt=media`` GETs;
a copy is ``rewriteTo`` repeated until done (objects of any size).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import requests
from fsspec.asyn import sync
from pydantic import Field, field_validator, model_validator

from mosaic.core.capabilities import BuildContext
from mosaic.providers.common import Parts
from mosaic.providers.objectstore import CAPABILITIES, MARKER, ObjectStoreFileSystem
from mosaic.providers.primitives import (
    MTIME_KEY,
    STREAM_CHUNK,
    Fault,
    Listing,
    ObjectStore,
    ObjectStoreOptions,
    ServiceUrl,
    StoredObject,
)
from mosaic.providers.transfers import BodyPipe, PartedUpload

# gcsfs >= 2026.x imports an "experimental zonal/HNS bucket" layer unless this
# is false; that layer makes a gRPC call per operation which, off Google's
# network (emulators, loopback), only fails after 30-60 s. It must be set
# before gcsfs is first imported, hence before the import below.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import gcsfs  # after the variable above
import google.auth
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

__all__ = ["CAPABILITIES", "Options", "build"]

SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
GOOGLE_ENDPOINT = "https://storage.googleapis.com"
#: credentials_file types, by the google-auth loader of each (a type-specific
#: loader: google-auth warns that its generic one runs whatever a file says)
CREDENTIAL_TYPES = {
    "service_account": service_account.Credentials.from_service_account_file,
    "authorized_user": user_credentials.Credentials.from_authorized_user_file,
}
ATTEMPTS = 3  # of an idempotent request that met a transient failure
DELETES_IN_FLIGHT = 16
LIST_PAGE = 1000  # the JSON API's maximum
MAX_OBJECT_SIZE = 5 * 1024**4  # 5 TiB: GCS's object size limit, one request or not
#: only what a StoredObject needs: keeps a 10,000-object listing small
OBJECT_FIELDS = "name,size,updated,md5Hash,generation,metadata"
log = logging.getLogger(__name__)


class Options(ObjectStoreOptions):
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]$",
                        description="Bucket name")
    project: str | None = Field(None, description="Project id (billing of requests)")
    endpoint_url: ServiceUrl | None = Field(
        None, description="JSON API endpoint, e.g. of an emulator; "
        "default https://storage.googleapis.com")
    credentials_file: str | None = Field(
        None, description="Service-account key or authorized-user JSON file; "
        "default: Google's default credentials")
    anonymous: bool = Field(False, description="No credentials (emulators, public buckets)")
    # No 5 MiB minimum (S3's): any whole MiB is a multiple of 256 KiB. 16 MiB, as
    # Google's own clients: fewer chunks per session (fake-gcs-server copies the
    # whole upload per chunk: PUT 256 MiB at 16/32/53 MB/s with 8/16/64 MiB).
    part_size_mib: int = Field(16, ge=1, le=1024,
                               description="Resumable upload chunk size (one in memory)")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        # the API root; rclone's and gcsfs's users may write its /storage/v1/ too
        return value.rstrip("/").removesuffix("/storage/v1").rstrip("/") if value else value

    @field_validator("credentials_file")
    @classmethod
    def _credentials_file(cls, value: str | None) -> str | None:
        if value is not None:
            _check_credentials_file(Path(value))
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Options:
        if self.anonymous and self.credentials_file:
            raise ValueError("give credentials_file or anonymous, not both")
        return self


def _check_credentials_file(path: Path) -> None:
    """Readable JSON of a google-auth type; the messages never quote its content."""
    if not path.is_absolute():
        raise ValueError(f"credentials_file must be an absolute path: {path}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"credentials_file {path}: {exc.strerror}") from None
    except ValueError:
        raise ValueError(f"credentials_file {path} is not JSON") from None
    kind = content.get("type") if isinstance(content, dict) else None
    if kind not in CREDENTIAL_TYPES:
        raise ValueError(f"credentials_file {path} is not a Google credentials file "
                         f"(type {kind!r}; expected one of {sorted(CREDENTIAL_TYPES)})")


def build(options: Options, context: BuildContext) -> ObjectStoreFileSystem:
    return FolderTimesFileSystem(GCSStore(options), options, context)


class FolderTimesFileSystem(ObjectStoreFileSystem):
    """Listings show a sub-folder's time too: GCS returns its marker object
    with the prefix (``includeTrailingDelimiter``), metadata included, so a
    folder is listed with the time :meth:`info` gives it."""

    def _entries(self, parts: Parts, prefix: str, listing: Listing) -> list[dict[str, Any]]:
        entries = super()._entries(parts, prefix, listing)
        markers = {obj.key: obj for obj in listing.objects if obj.key.endswith(MARKER)}
        for entry in entries:
            marker = markers.get(f"{prefix}{entry['name'].rsplit('/', 1)[-1]}{MARKER}")
            if entry["type"] == "directory" and marker is not None:
                entry["mtime"] = marker.effective_mtime
        return entries


#: HTTP statuses, JSON API reasons and client-side failures -> what they mean
ERRORS: dict[str, Fault] = {
    **dict.fromkeys(["404", "notFound"], Fault.MISSING),
    **dict.fromkeys(["403", "forbidden"], Fault.DENIED),
    **dict.fromkeys(["400", "invalid", "invalidArgument"], Fault.INVALID),
    "noSuchBucket": Fault.NO_BUCKET,  # a 404 on a listing: the bucket is gone
    **dict.fromkeys(["401", "authError", "RefreshError", "DefaultCredentialsError",
                     "NonRetryableError"], Fault.CREDENTIALS),
    **dict.fromkeys(["408", "429", "500", "502", "503", "504", "TransportError",
                     "ClientConnectorError", "ClientConnectionError", "ServerDisconnectedError",
                     "ClientOSError", "ClientPayloadError", "ServerTimeoutError",
                     "ConnectionRefusedError", "ConnectionResetError", "TimeoutError",
                     "FSTimeoutError", "ConnectionError", "ChunkedEncodingError",
                     "ConnectTimeout", "ReadTimeout"], Fault.UNREACHABLE),
}
_TRANSIENT = {code for code, fault in ERRORS.items() if fault is Fault.UNREACHABLE}


class GCSError(Exception):
    """A JSON API error answer: its HTTP status and GCS's reason."""

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}"[:300])
        self.status, self.reason = status, reason

    @classmethod
    def from_answer(cls, status: int, body: bytes) -> GCSError:
        reason = message = ""
        try:
            error = json.loads(body)["error"]
            message = str(error.get("message", ""))
            reason = str((error.get("errors") or [{}])[0].get("reason", ""))
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            message = body[:200].decode("utf-8", "replace")
        return cls(status, reason, message)

    @property
    def code(self) -> str:
        return self.reason if self.reason in ERRORS else str(self.status)


def _credentials(options: Options) -> Any:
    """What gcsfs takes as ``token``: "anon" or a google-auth Credentials."""
    if options.anonymous:
        return "anon"
    if options.credentials_file:
        path = Path(options.credentials_file)
        kind = json.loads(path.read_text(encoding="utf-8"))["type"]
        return CREDENTIAL_TYPES[kind](str(path), scopes=[SCOPE])
    credentials, _ = google.auth.default(scopes=[SCOPE])
    return credentials


class GCSStore(ObjectStore):
    """One bucket through the JSON API, on gcsfs's session and credentials."""

    ERRORS = ERRORS

    def __init__(self, options: Options) -> None:
        super().__init__(options)  # part_size (a multiple of 256 KiB), read_ahead, transfers
        self._options = options
        self._bucket = options.bucket
        self._endpoint = options.endpoint_url or GOOGLE_ENDPOINT
        self.page_size = LIST_PAGE  # tests make it small
        self._gcs: gcsfs.GCSFileSystem | None = None
        self._media = _media_session()  # downloads: this mount's own connections
        self._lock = threading.Lock()
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)

    # -- the HTTP layer -----------------------------------------------------------

    def client(self) -> gcsfs.GCSFileSystem:
        """This mount's GCSFileSystem, made on first use (default credentials
        may ask a metadata server: not while the configuration loads)."""
        with self._lock:
            if self._gcs is None:
                self._gcs = gcsfs.GCSFileSystem(
                    project=self._options.project or "", token=_credentials(self._options),
                    endpoint_url=self._endpoint, skip_instance_cache=True,
                    use_listings_cache=False)
            return self._gcs

    def url(self, path: str, upload: bool = False) -> str:
        return f"{self._endpoint}/{'upload/' if upload else ''}storage/v1/b/" \
               f"{quote(self._bucket, safe='')}/{path}"

    def object_url(self, key: str) -> str:
        return self.url(f"o/{quote(key, safe='')}")

    def call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Mapping[str, str], bytes]:
        """One request without content (retried if transient): status, headers, body.
        Requests carrying an object's content go through :meth:`media_request`."""
        gcs = self.client()
        # A token refresh is a blocking request: made here, in the caller's
        # thread, not in the event loop every mount shares.
        gcs.credentials.maybe_refresh()
        return sync(gcs.loop, self._request, method, url, **kwargs)

    def call_json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        _, _, body = self.call(method, url, **kwargs)
        return json.loads(body) if body else {}

    async def _request(self, method: str, url: str,
                       **kwargs: Any) -> tuple[int, Mapping[str, str], bytes]:
        for attempt in range(ATTEMPTS):
            try:
                return await self._request_once(method, url, **kwargs)
            except Exception as exc:
                if attempt == ATTEMPTS - 1 or self.error_code(exc) not in _TRANSIENT:
                    raise
            await asyncio.sleep(0.1 * 3 ** attempt)
        raise AssertionError("unreachable")

    async def _request_once(self, method: str, url: str, params: dict[str, Any] | None = None,
                            headers: dict[str, str] | None = None, json: Any = None,
                            data: bytes | None = None) -> tuple[int, Mapping[str, str], bytes]:
        gcs = self._gcs
        assert gcs is not None  # call() made it
        session = await gcs._set_session()
        async with session.request(method, url, params=params, json=json, data=data,
                                   headers=gcs._get_headers(headers),
                                   timeout=self._timeout) as answer:
            body = await answer.read()
        if answer.status >= 400 and answer.status != 499:  # 499: a cancelled upload
            raise GCSError.from_answer(answer.status, body)
        return answer.status, answer.headers, body

    def native_code(self, exc: BaseException) -> str | None:
        if isinstance(exc, GCSError):
            return exc.code
        if isinstance(exc, gcsfs.retry.HttpError) and exc.code:
            return str(exc.code)
        return None

    # -- the primitives -----------------------------------------------------------

    def list(self, prefix: str, recursive: bool = False, limit: int | None = None) -> Listing:
        listing = Listing()
        params: dict[str, Any] = {
            "prefix": prefix, "maxResults": self.page_size if limit is None else limit,
            "fields": f"items({OBJECT_FIELDS}),prefixes,nextPageToken"}
        if not recursive:  # sub-folders' markers come as items too (their times)
            params.update(delimiter="/", includeTrailingDelimiter="true")
        while True:
            page = self._list_page(params)
            listing.objects += [_stored(item) for item in page.get("items", [])]
            listing.prefixes += page.get("prefixes", [])
            token = page.get("nextPageToken")
            if limit is not None or not token:
                return listing
            params["pageToken"] = token

    def _list_page(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.call_json("GET", self.url("o"), params=params)
        except GCSError as exc:
            if exc.status == 404:  # a listing of a bucket that exists is never 404
                raise GCSError(404, "noSuchBucket", "bucket not found") from None
            raise

    def head(self, key: str) -> StoredObject | None:
        try:
            item = self.call_json("GET", self.object_url(key), params={"fields": OBJECT_FIELDS})
        except Exception as exc:
            if self.is_missing(exc):
                return None
            raise
        return _stored(item)

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        """One multipart (metadata + content) upload."""
        resource: dict[str, Any] = {"name": key}
        if metadata:
            resource["metadata"] = dict(metadata)
        boundary = "mosaic-part-boundary"
        body = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                f"{json.dumps(resource)}\r\n--{boundary}\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() \
            + data + f"\r\n--{boundary}--".encode()
        self.call("POST", self.url("o", upload=True), params={"uploadType": "multipart"},
                  headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
                  data=body)

    def copy(self, src: str, dst: str, metadata: Mapping[str, str] | None = None) -> None:
        """``rewriteTo``, repeated with its token until done (big objects take
        several calls). Given metadata replaces the source's. Empty metadata is
        sent as a null set mtime: an empty ``metadata`` in the body keeps the
        source's on fake-gcs-server (which stores the null as "", no time)."""
        body = None if metadata is None else {"metadata": dict(metadata) or {MTIME_KEY: None}}
        url = self.object_url(src) + "/rewriteTo/b/" + \
            f"{quote(self._bucket, safe='')}/o/{quote(dst, safe='')}"
        params: dict[str, Any] = {"fields": "done,rewriteToken"}
        while True:
            answer = self.call_json("POST", url, params=params, json=body)
            if answer.get("done"):
                return
            params["rewriteToken"] = answer["rewriteToken"]

    def delete(self, keys: Iterable[str]) -> None:
        """Concurrent DELETEs, ``DELETES_IN_FLIGHT`` at a time; absent ones are fine."""
        keys = list(keys)
        if keys:
            gcs = self.client()
            gcs.credentials.maybe_refresh()
            sync(gcs.loop, self._delete_all, keys)

    async def _delete_all(self, keys: list[str]) -> None:
        gate = asyncio.Semaphore(DELETES_IN_FLIGHT)

        async def delete(key: str) -> None:
            async with gate:
                try:
                    await self._request("DELETE", self.object_url(key))
                except Exception as exc:
                    if not self.is_missing(exc):
                        raise

        await asyncio.gather(*(delete(key) for key in keys))

    def stream(self, obj: StoredObject, start: int) -> Iterator[bytes]:
        answer = self.media_request("GET", self.object_url(obj.key), params={"alt": "media"},
                                    headers={"Range": f"bytes={start}-"} if start else None)
        try:
            yield from answer.iter_content(STREAM_CHUNK)
        finally:
            answer.close()  # an unread rest is dropped with its connection

    def media_request(self, method: str, url: str, data: bytes | None = None,
                      **kwargs: Any) -> requests.Response:
        """A request carrying an object's content: blocking, in the caller's
        thread, its reply body unread. Through aiohttp's event loop a download
        reached a third of rclone's speed, and an upload's chunk was copied
        whole, joined to the headers, before it was sent."""
        gcs = self.client()
        gcs.credentials.maybe_refresh()
        answer = self._media.request(method, url, data=data,
                                     headers=gcs._get_headers(kwargs.pop("headers", None)),
                                     stream=True, timeout=(5, 60), allow_redirects=False,
                                     **kwargs)
        if answer.status_code >= 400 and answer.status_code != 499:  # 499: a cancelled upload
            body = answer.content
            answer.close()
            raise GCSError.from_answer(answer.status_code, body)
        return answer

    def start_upload(self, key: str) -> ResumableUpload:
        return ResumableUpload(self, key)


def _media_session() -> requests.Session:
    session = requests.Session()
    pool = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=32)
    session.mount("http://", pool)
    session.mount("https://", pool)
    return session


def _stored(item: dict[str, Any]) -> StoredObject:
    # md5Hash: the content's, strong; composite objects have none: their generation
    etag = item.get("md5Hash") or str(item.get("generation", ""))
    updated = datetime.fromisoformat(item["updated"]).timestamp() if "updated" in item else 0.0
    return StoredObject(item["name"], int(item.get("size", 0)), updated, etag,
                        item.get("metadata") or {})


class ResumableUpload(PartedUpload):
    """One object through a resumable upload session, fed in order.

    The session is opened by the first part and every part goes out as it
    comes, one part in memory. GCS wants every chunk but the final one a
    multiple of 256 KiB (a whole part is) and publishes the object with the
    final chunk, the one that states the total size: a part shorter than
    ``part_size`` is the last one and goes out as final; if the last part was
    whole, :meth:`finish` sends an empty final chunk. :meth:`abort` cancels the
    session: nothing was published.
    """

    concurrent = False  # a session takes its chunks in order, one at a time
    stream_limit = MAX_OBJECT_SIZE

    def __init__(self, store: GCSStore, key: str) -> None:
        self._store, self._key = store, key
        self._session: str | None = None
        self._offset = 0  # bytes the session has taken
        self._finished = False

    def put_whole(self, data: bytes) -> None:
        self._store.put(self._key, data)

    def put_stream(self, body: BodyPipe, length: int) -> None:
        """One simple (``uploadType=media``) upload whose body is sent as it is
        read: no session, no chunks."""
        self._store.media_request("POST", self._store.url("o", upload=True), data=body,
                                  params={"uploadType": "media", "name": self._key}).close()

    def send_part(self, number: int, data: bytes) -> int:
        if self._finished:
            raise ValueError("a part after the last one")  # parts are whole but the last
        self._send(data, final=len(data) < self._store.part_size)
        return number

    def _open_session(self) -> str:
        _, headers, _ = self._store.call(
            "POST", self._store.url("o", upload=True),
            params={"uploadType": "resumable", "name": self._key}, json={"name": self._key})
        return headers["Location"]

    def _send(self, chunk: bytes, final: bool) -> None:
        if self._session is None:
            self._session = self._open_session()
        last = self._offset + len(chunk) - 1
        total = str(self._offset + len(chunk)) if final else "*"
        span = f"bytes {self._offset}-{last}/{total}" if chunk else f"bytes */{total}"
        # not retried: a chunk re-sent after a cut-off answer may be taken twice
        answer = self._store.media_request("PUT", self._session, data=chunk,
                                           headers={"Content-Range": span})
        answer.close()
        status, headers = answer.status_code, answer.headers
        if not final and (status != 308 or headers.get("Range") != f"bytes=0-{last}"):
            raise GCSError(500, "", f"chunk not taken whole ({status} {headers.get('Range')})")
        self._offset += len(chunk)
        self._finished = final

    def finish(self, tokens: list[Any]) -> None:
        if not self._finished:
            self._send(b"", final=True)

    def abort(self, tokens: list[Any]) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            self._store.call("DELETE", session)  # answers 499 on success
        except Exception as exc:
            if not self._store.is_missing(exc) and getattr(exc, "status", 0) != 410:
                raise

