"""``swift``: OpenStack Swift, with auth v1 (tempauth, swauth) or Keystone v3.

A container, optionally below a key prefix, served as a folder tree by
:mod:`mosaic.providers.objectstore`; this module supplies the Swift
primitives on top of python-swiftclient (swiftspec is unusable: it hard-codes
https and cannot copy or write in blocks). Auth is a callable returning the
storage URL and a token, so :mod:`mosaic.providers.rackspace` reuses the
same store with Rackspace's identity service.

* Connections: a swiftclient ``Connection`` is not thread-safe, so each mount
  keeps a small pool of its own (:data:`POOL_IDLE` idle at most), all sharing
  the mount's token; one that meets a 401 authenticates again, once for all.
* Uploads: a small file is one PUT; a large one goes out as segments (parts
  in flight concurrently) into the segments container (``<container>_segments``
  by default, created on first use), published by a Static Large Object
  manifest, so files beyond Swift's single-object limit (5 GiB) work. A
  manifest lists at most the cluster's ``max_manifest_segments`` (1,000 by
  default): an upload of announced size gets parts big enough (fewer in
  flight, the same memory); one of unknown size that goes beyond is published
  through nested manifests (:mod:`mosaic.providers.swift_segments`).
  An upload of announced size within ``max_file_size`` is one plain PUT,
  streamed. An aborted upload deletes its segments (if the store is down,
  the mount's next upload does); deleting or overwriting a large file
  deletes its old segments. Segments a
  killed process left (no manifest uses them, a day old) are swept at most
  hourly, on an upload.
* A server-side copy of a large file copies its segments and writes a new
  manifest (a COPY of the manifest alone would share segments that deleting
  either file removes; a COPY of the content fails above the size limit).
  Setting a modification time is a POST of the metadata: nothing is copied.
* Listings are JSON pages by marker; they carry no user metadata, so listings
  show Swift's own times (``info`` shows the set one).
* Deletes use the bulk middleware where the cluster's ``/info`` offers it,
  else concurrent DELETEs.

Keystone v3 is a password authentication scoped to a project (POST
``/v3/auth/tokens``), the object-store endpoint picked from the catalog by
region and interface; it is done here (a few lines over ``requests``) rather
than through swiftclient's own path, which needs python-keystoneclient
(:mod:`mosaic.providers.swift_identity`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote, unquote, urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from swiftclient.client import ClientException, Connection

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
from mosaic.providers.swift_identity import Auth, keystone_v3_auth, v1_auth
from mosaic.providers.swift_segments import (
    SegmentedUpload,
    leaf_segments,
    meta_headers,
    segment_owner,
)
from mosaic.providers.transfers import BodyPipe, PartedUpload

__all__ = ["CAPABILITIES", "Options", "build"]

# container listings carry no metadata and no time for a sub-folder
CAPABILITIES = dataclasses.replace(STORE_CAPABILITIES, listed_mtimes=False)

log = logging.getLogger(__name__)
MIB = 1024 * 1024
POOL_IDLE = 16  # idle connections a mount keeps (one per concurrent request in use)
CONNECTION_RETRIES = 1  # swiftclient's retries of a failed request (not of a streamed PUT)
MAX_OBJECT_SIZE = 5 * 1024 * MIB + 2  # Swift's default max_file_size, where /info is hidden
MAX_SEGMENTS = 1000  # Swift's default max_manifest_segments, where /info is hidden
DELETE_CONCURRENCY = 8  # DELETEs in flight where the cluster has no bulk delete
#: segments no manifest uses, untouched this long, belong to a killed process
STALE_UPLOAD_S = 24 * 3600
SWEEP_EVERY_S = 3600
SEGMENTS_RECHECK_S = 30.0  # a segments container seen absent is looked for again after this
META = "x-object-meta-"


class SwiftOptions(ObjectStoreOptions):
    """What every Swift-based provider takes besides its auth."""

    container: str = Field(pattern=r"^[^/]{1,256}$", description="Container name")
    segments_container: str | None = Field(
        None, pattern=r"^[^/]{1,256}$",
        description="Container of large files' segments; default <container>_segments")
    timeout_s: float = Field(60.0, gt=0, description="Seconds a request may take")

    @property
    def segments(self) -> str:
        return self.segments_container or f"{self.container}_segments"


class Options(SwiftOptions):
    auth_url: ServiceUrl = Field(description="Auth v1 URL (…/auth/v1.0) or Keystone's (…/v3)")
    user: str | None = Field(None, description="Auth v1 user, e.g. account:user")
    key: SecretStr | None = Field(None, description="Auth v1 key")
    username: str | None = Field(None, description="Keystone v3 user name")
    password: SecretStr | None = Field(None, description="Keystone v3 password")
    project_name: str | None = Field(None, description="Keystone v3 project")
    user_domain_name: str = Field("Default", description="Keystone v3 domain of the user")
    project_domain_name: str = Field("Default", description="Keystone v3 domain of the project")
    region: str | None = Field(None, description="Region of the object-store endpoint")
    interface: Literal["public", "internal", "admin"] = Field(
        "public", description="Which object-store endpoint of the catalog (Keystone v3)")

    @field_validator("auth_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if urlparse(value).scheme not in ("http", "https"):
            raise ValueError("auth_url must be an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_auth(self) -> Options:
        v1 = self.user is not None or self.key is not None
        v3 = any(x is not None for x in (self.username, self.password, self.project_name))
        if v1 == v3:
            raise ValueError("give user and key (auth v1) or username, password and "
                             "project_name (Keystone v3)")
        if v1 and (self.user is None or self.key is None):
            raise ValueError("auth v1 needs both user and key")
        if v3 and None in (self.username, self.password, self.project_name):
            raise ValueError("Keystone v3 needs username, password and project_name")
        return self

    @property
    def keystone(self) -> bool:
        return self.username is not None


def build(options: Options, context: BuildContext) -> ObjectStoreFileSystem:
    auth = keystone_v3_auth(options) if options.keystone else v1_auth(options)
    return ObjectStoreFileSystem(SwiftStore(options, auth), options, context)


class _Connection(Connection):
    """A swiftclient connection whose (re-)authentication is the store's."""

    def __init__(self, store: SwiftStore, url: str | None, token: str | None) -> None:
        # authurl/user/key are placeholders: swiftclient retries a 401 only if set
        super().__init__(authurl="store", user="store", key="store", preauthurl=url,
                         preauthtoken=token, retries=CONNECTION_RETRIES, starting_backoff=0.2,
                         max_backoff=1, timeout=store.timeout, retry_on_ratelimit=True)
        self._store = store
        self._used = token  # swiftclient forgets the refused token before asking again

    def get_auth(self) -> tuple[str, str]:
        url, self._used = self._store.authenticate(stale=self._used)
        return url, self._used

    def forget_last_reply(self) -> None:
        """Drop swiftclient's reference to the last reply: through its request
        it holds the body sent, a whole part for each idle connection."""
        if self.http_conn is not None:
            self.http_conn[1].resp = None


#: HTTP statuses (and client-side failures by class name) -> what they mean
ERRORS: dict[str, Fault] = {
    "404": Fault.MISSING,
    "NoSuchContainer": Fault.NO_BUCKET,
    **dict.fromkeys(["403"], Fault.DENIED),
    **dict.fromkeys(["400", "414"], Fault.INVALID),
    **dict.fromkeys(["401"], Fault.CREDENTIALS),
    **dict.fromkeys(["408", "429", "498", "499", "500", "502", "503", "504", "507",
                     "NoEndpointError", "ConnectionError", "ConnectTimeout", "ReadTimeout",
                     "Timeout", "ChunkedEncodingError", "ProtocolError",
                     "ConnectionRefusedError", "ConnectionResetError", "TimeoutError"],
                    Fault.UNREACHABLE),
}


class SwiftStore(ObjectStore):
    """One container; large files' segments in a second one."""

    ERRORS = ERRORS
    page_size = 10000  # Swift's default listing limit; tests make it small

    def __init__(self, options: SwiftOptions, authenticate: Auth) -> None:
        super().__init__(options)
        self.container = options.container
        self.segments = options.segments
        self.timeout = options.timeout_s
        self._authenticate = authenticate
        self._auth: tuple[str | None, str | None] = (None, None)
        self._auth_lock = threading.Lock()
        self._idle: queue.LifoQueue[_Connection] = queue.LifoQueue()
        self._info: dict[str, Any] | None = None  # the cluster's /info, once asked
        self._segments_absent_until = 0.0
        self._uploading: set[str] = set()  # upload ids in flight: their segments are kept
        self._uploading_lock = threading.Lock()
        self._leftovers: set[str] = set()  # prefixes of aborted uploads' segments left
        self._prefix = f"{options.prefix}/" if options.prefix else ""
        self._next_sweep = 0.0

    # -- connections ----------------------------------------------------------------

    def authenticate(self, stale: str | None = None) -> tuple[str, str]:
        """The mount's (storage URL, token); a new one if ``stale`` is still current."""
        with self._auth_lock:
            url, token = self._auth
            if url is None or token is None or token == stale:
                url, token = self._authenticate()
                self._auth = (url, token)
            return url, token

    @contextmanager
    def connection(self) -> Iterator[_Connection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = _Connection(self, *self._auth)
        try:
            yield conn
        except ClientException:
            self._release(conn)  # an HTTP error status: its reply was read, it is reusable
            raise
        except BaseException:
            conn.close()  # its HTTP connection may be mid-response
            raise
        self._release(conn)

    def _release(self, conn: _Connection) -> None:
        conn.forget_last_reply()
        if self._idle.qsize() < POOL_IDLE:
            self._idle.put(conn)
        else:
            conn.close()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self.connection() as conn:
            return getattr(conn, method)(*args, **kwargs)

    def native_code(self, exc: BaseException) -> str | None:
        if isinstance(exc, ClientException) and exc.http_status is not None:
            if exc.http_status == 404 and self._is_container_path(exc.http_path):
                return "NoSuchContainer"
            return str(exc.http_status)
        return None

    def _is_container_path(self, path: str) -> bool:
        """The storage URL's path plus this mount's container: no object name."""
        account = unquote(urlparse(self._auth[0] or "").path).rstrip("/")
        return unquote(path or "").rstrip("/") == f"{account}/{self.container}"

    # -- reading --------------------------------------------------------------------

    def list(self, prefix: str, recursive: bool = False, limit: int | None = None) -> Listing:
        listing = Listing()
        marker = ""
        while True:
            page = self._page(self.container, prefix, marker, recursive, limit)
            for item in page:
                if "subdir" in item:
                    listing.prefixes.append(item["subdir"])
                else:
                    listing.objects.append(_listed(item))
            if limit is not None or len(page) < self.page_size or not page:
                return listing
            marker = page[-1].get("name") or page[-1]["subdir"]

    def _page(self, container: str, prefix: str, marker: str, recursive: bool,
              limit: int | None) -> list[dict[str, Any]]:
        _, page = self.call("get_container", container, prefix=prefix, marker=marker,
                            delimiter=None if recursive else "/",
                            limit=self.page_size if limit is None else limit)
        return page

    def head(self, key: str) -> StoredObject | None:
        try:
            headers = self.call("head_object", self.container, key)
        except ClientException as exc:
            if exc.http_status == 404:
                return None
            raise
        return _headed(key, headers)

    def stream(self, obj: StoredObject, start: int) -> Iterator[bytes]:
        # The connection is the stream's until it ends: a stream closed early
        # leaves a reply half read, and connection() closes the connection then.
        # If-Match: a file replaced between a read's streams fails the second.
        headers = {"If-Match": obj.etag, **({"Range": f"bytes={start}-"} if start else {})}
        with self.connection() as conn:
            _, body = conn.get_object(self.container, obj.key, resp_chunk_size=STREAM_CHUNK,
                                      headers=headers)
            yield from body

    # -- writing --------------------------------------------------------------------

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        self.call("put_object", self.container, key, data, content_length=len(data),
                  headers=meta_headers(metadata))
        if not key.endswith("/"):  # a folder marker never was a large file
            self.drop_old_segments(key)

    def put_stream(self, key: str, body: BodyPipe, length: int) -> None:
        """One PUT whose body is sent as it is read. Not retried: the body cannot
        be read again (swiftclient would fail to rewind it anyway)."""
        with self.connection() as conn:
            conn.retries = 0
            try:
                conn.put_object(self.container, key, body, content_length=length,
                                chunk_size=STREAM_CHUNK)
            finally:
                conn.retries = CONNECTION_RETRIES
        self.drop_old_segments(key)

    def start_upload(self, key: str) -> PartedUpload:
        self._drop_leftovers()
        self._sweep_now_and_then()
        return SegmentedUpload(self, key)

    def _sweep_now_and_then(self) -> None:
        """At most once per ``SWEEP_EVERY_S``: delete the segments a killed process
        left below this mount; housekeeping: never fails the upload itself."""
        with self._uploading_lock:
            if time.monotonic() < self._next_sweep:
                return
            self._next_sweep = time.monotonic() + SWEEP_EVERY_S
        try:
            self.sweep_stale_segments(time.time() - STALE_UPLOAD_S)
        except Exception as exc:
            log.warning("sweeping stale segments failed: %s", type(exc).__name__)

    def sweep_stale_segments(self, written_before: float) -> int:
        """Delete this mount's segments that no manifest uses and that were all
        written before that time (uploads a killed process left); how many."""
        groups: dict[tuple[str, str], list[str]] = {}
        newest: dict[tuple[str, str], float] = {}
        for item in self._segment_items(self._prefix):
            owner = segment_owner(item["name"])
            if owner is not None:  # other tools' segments are left alone
                groups.setdefault(owner, []).append(item["name"])
                newest[owner] = max(newest.get(owner, 0.0), _listed(item).mtime)
        stale = [names for (key, upload_id), names in groups.items()
                 if newest[key, upload_id] < written_before and upload_id not in self._uploading
                 and upload_id not in self._manifest_uploads(key)]
        doomed = [name for names in stale for name in names]
        self.delete_in(self.segments, doomed)
        return len(doomed)

    def _manifest_uploads(self, key: str) -> set[str]:
        """The upload ids whose segments the object at ``key`` uses (none if absent)."""
        try:
            headers = self.call("head_object", self.container, key)
        except ClientException as exc:
            if exc.http_status == 404:
                return set()
            raise
        if not _is_large(headers):
            return set()
        _, body = self.call("get_object", self.container, key,
                            query_string="multipart-manifest=get")
        owners = [segment_owner(segment["name"].split("/", 2)[2]) for segment in json.loads(body)]
        return {owner[1] for owner in owners if owner is not None}

    def drop_upload(self, prefix: str, tokens: Iterable[Any] = ()) -> None:
        """Delete an upload's segments: those of ``tokens`` and any listed below ``prefix``."""
        names = {t["path"].split("/", 2)[2] for t in tokens if t}
        names.update(self.segment_names(prefix))
        self.delete_in(self.segments, sorted(names))

    def leftover(self, prefix: str) -> None:
        """An aborted upload whose segments could not be deleted (the store was down)."""
        with self._uploading_lock:
            self._leftovers.add(prefix)

    def _drop_leftovers(self) -> None:
        """Retry deleting the segments of aborts that failed; housekeeping: never fails."""
        with self._uploading_lock:
            pending, self._leftovers = self._leftovers, set()
        for prefix in pending:
            try:
                self.drop_upload(prefix)
            except Exception as exc:
                log.warning("deleting the segments of an aborted upload failed again: %s",
                            type(exc).__name__)
                self.leftover(prefix)

    def ensure_segments_container(self) -> None:
        self.call("put_container", self.segments)
        self._segments_absent_until = 0.0

    def upload_started(self, upload_id: str, done: bool = False) -> None:
        with self._uploading_lock:
            (self._uploading.discard if done else self._uploading.add)(upload_id)

    def drop_old_segments(self, key: str, keep: str | None = None) -> None:
        """Delete the segments of earlier versions of ``key`` (uploads not in flight)."""
        self.delete_in(self.segments, self._segments_of({key}, key + "/", keep))

    def segment_names(self, prefix: str) -> list[str]:
        """Names in the segments container below ``prefix`` (none if it is absent)."""
        return [item["name"] for item in self._segment_items(prefix)]

    def _segment_items(self, prefix: str) -> list[dict[str, Any]]:
        if time.monotonic() < self._segments_absent_until:
            return []
        items: list[dict[str, Any]] = []
        marker = ""
        while True:
            try:
                page = self._page(self.segments, prefix, marker, True, None)
            except ClientException as exc:
                if exc.http_status != 404:
                    raise
                self._segments_absent_until = time.monotonic() + SEGMENTS_RECHECK_S
                return []
            items += page
            if len(page) < self.page_size:
                return items
            marker = page[-1]["name"]

    def copy(self, src: str, dst: str, metadata: Mapping[str, str] | None = None) -> None:
        if src == dst and metadata is not None:
            # POST replaces the user metadata in place (an SLO keeps its segments)
            self.call("post_object", self.container, src, meta_headers(metadata))
            return
        headers = self.call("head_object", self.container, src)
        if _is_large(headers):
            self._copy_large(src, dst, headers, metadata)
            return
        self.call("copy_object", self.container, src, destination=f"/{self.container}/{dst}",
                  headers=meta_headers(metadata), fresh_metadata=metadata is not None)
        self.drop_old_segments(dst)

    def _copy_large(self, src: str, dst: str, headers: Mapping[str, str],
                    metadata: Mapping[str, str] | None) -> None:
        """Copy every segment server-side (``transfers`` at a time), then write the
        new manifest; a failure deletes the copied segments."""
        _, body = self.call("get_object", self.container, src,
                            query_string="multipart-manifest=get")
        segments = leaf_segments(self, json.loads(body))
        upload = SegmentedUpload(self, dst)
        tokens: list[dict[str, Any]] = []
        try:
            with ThreadPoolExecutor(self.transfers) as pool:
                tokens += pool.map(upload.copy_segment, range(1, len(segments) + 1), segments)
            if metadata is None:
                metadata = {k[len(META):]: v for k, v in headers.items() if k.startswith(META)}
            upload.finish(tokens, metadata)
        except BaseException:
            upload.abort(tokens)
            raise

    # -- deleting -------------------------------------------------------------------

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        self.delete_in(self.container, keys)
        self._delete_segments_of(keys)

    def _delete_segments_of(self, keys: list[str]) -> None:
        """Segments of the deleted large files: one listing below their common prefix."""
        files = {key for key in keys if not key.endswith("/")}
        if not files:
            return
        self.delete_in(self.segments, self._segments_of(files, _common_prefix(files)))

    def _segments_of(self, keys: set[str], prefix: str, keep: str | None = None) -> list[str]:
        """The segments below ``prefix`` of these files' uploads (but ``keep`` and
        those in flight): one paged listing."""
        found = []
        for name in self.segment_names(prefix):
            owner = segment_owner(name)
            if owner is not None and owner[0] in keys and owner[1] != keep \
                    and owner[1] not in self._uploading:
                found.append(name)
        return found

    def delete_in(self, container: str, names: list[str]) -> None:
        """Delete these objects of ``container``; absent ones are fine."""
        if not names:
            return
        limit = self._bulk_delete_limit()
        if limit:
            for start in range(0, len(names), limit):
                self._bulk_delete(container, names[start:start + limit])
            return
        with ThreadPoolExecutor(DELETE_CONCURRENCY) as pool:
            for done in [pool.submit(self._delete_one, container, n) for n in names]:
                done.result()

    def _bulk_delete_limit(self) -> int:
        bulk = self._capabilities().get("bulk_delete", {})
        return int(bulk.get("max_deletes_per_request", 0))

    def max_object_size(self) -> int:
        """The largest object one PUT may store (the cluster's ``max_file_size``)."""
        swift = self._capabilities().get("swift", {})
        return int(swift.get("max_file_size", MAX_OBJECT_SIZE))

    def max_segments(self) -> int:
        """The most segments one manifest may list (the cluster's ``slo`` limit)."""
        slo = self._capabilities().get("slo", {})
        return int(slo.get("max_manifest_segments", MAX_SEGMENTS))

    def _capabilities(self) -> dict[str, Any]:
        """The cluster's ``/info``, asked once per mount."""
        if self._info is None:
            try:
                self._info = self.call("get_capabilities")
            except ClientException as exc:  # a cluster may hide /info: defaults then
                if exc.http_status is None or exc.http_status >= 500:
                    raise
                self._info = {}
        return self._info

    def _bulk_delete(self, container: str, names: list[str]) -> None:
        body = "\n".join(quote(f"/{container}/{name}") for name in names).encode()
        _, answer = self.call("post_account", headers={"Content-Type": "text/plain",
                                                       "Accept": "application/json"},
                              query_string="bulk-delete", data=body)
        result = json.loads(answer or b"{}")
        failed = [e for e in result.get("Errors", []) if not str(e[1]).startswith("404")]
        if failed or not str(result.get("Response Status", "200")).startswith("2"):
            status = failed[0][1] if failed else result.get("Response Status")
            raise ClientException(f"{len(failed)} objects could not be deleted ({status})",
                                  http_status=int(str(status)[:3]))

    def _delete_one(self, container: str, name: str) -> None:
        try:
            self.call("delete_object", container, name)
        except ClientException as exc:
            if exc.http_status != 404:
                raise


def _is_large(headers: Mapping[str, str]) -> bool:
    """The object (HEAD's lowercased headers) is a Static Large Object's manifest."""
    return headers.get("x-static-large-object", "").lower() == "true"


def _common_prefix(names: Iterable[str]) -> str:
    names = sorted(names)
    first, last = names[0], names[-1]
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def _listed(item: Mapping[str, Any]) -> StoredObject:
    return StoredObject(item["name"], int(item.get("bytes", 0)),
                        _utc_seconds(item["last_modified"]),
                        str(item.get("slo_etag") or item.get("hash", "")))


def _utc_seconds(text: str) -> float:
    """A listing's time: Swift's is UTC without a zone. Naming the zone in the
    text parses it in C, a third of the cost of replace(tzinfo=...) per entry."""
    try:
        return datetime.fromisoformat(text + "+00:00").timestamp()
    except ValueError:  # a zone of its own (Swift-compatible stores)
        parsed = datetime.fromisoformat(text)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _headed(key: str, headers: Mapping[str, str]) -> StoredObject:
    metadata = {k[len(META):]: v for k, v in headers.items() if k.startswith(META)}
    with suppress(KeyError, ValueError):
        mtime = float(headers["x-timestamp"])
        return StoredObject(key, int(headers.get("content-length", 0)), mtime,
                            headers.get("etag", ""), metadata)
    return StoredObject(key, int(headers.get("content-length", 0)), time.time(),
                        headers.get("etag", ""), metadata)
