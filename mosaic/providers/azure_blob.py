"""``azure_blob``: Azure Blob Storage (and Azurite, sovereign clouds, Azure Stack).

A container, optionally below a name prefix, served as a folder tree by
:mod:`mosaic.providers.objectstore`; this module supplies the Blob primitives
on top of azure-storage-blob's synchronous :class:`ContainerClient`. The
design card names adlfs (fsspec) as the backend; the primitives here are a
handful of single REST calls (one listing page, one ranged GET, one staged
block), and adlfs would only wrap the same SDK in an asyncio loop and a
second layer of caching and path rules that the object-store layer already
owns, so the SDK is called directly.

Each mount builds its own client, with its own HTTP session and connection
pool and its own credential object: nothing is shared between tenants.
Exactly one way to authenticate is given: ``account_key``, ``sas_token``,
``connection_string``, or a service principal (``tenant_id``, ``client_id``,
``client_secret``, through azure-identity). ``account_url`` points at another
endpoint (Azurite, a sovereign cloud); secrets may be inline, ``${ENV}`` or
``<key>_file``.

Uploads are block blobs: each part is a staged block (several in flight) and
the blob is published by one ``Put Block List``. An aborted upload commits
nothing, so the previous blob stays intact; Azure has no call that drops
uncommitted blocks, it garbage-collects them after 7 days. Two large uploads of
one blob at once may not both succeed: Azure keeps one set of staged blocks
per blob and a commit drops the rest, so blocks the other upload staged before
that commit are gone and its own commit fails (InvalidBlockList, EIO); the
committed file is whole either way. Small files are one ``Put Blob``.
Reads are ranged GETs, conditional on the ETag the read started with.

Azure metadata names must be C# identifiers, so ``mosaic-mtime`` is stored as
``mosaic_mtime`` and mapped back; listings carry metadata, so they show the
modification time a client set.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote, urlencode
from xml.etree import ElementTree

import requests
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.storage.blob import (
    BlobBlock,
    BlobProperties,
    ContainerClient,
    LinearRetry,
)
from azure.storage.blob._generated.models import (  # the generated download's condition
    ModifiedAccessConditions,
)
from pydantic import Field, SecretStr, model_validator

from mosaic.core.capabilities import BuildContext
from mosaic.providers.objectstore import CAPABILITIES as STORE_CAPABILITIES
from mosaic.providers.objectstore import ObjectStoreFileSystem
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

__all__ = ["CAPABILITIES", "Options", "build"]

# a set time is listed (blob metadata), but a sub-folder has none
CAPABILITIES = dataclasses.replace(STORE_CAPABILITIES, listed_mtimes=False)

PAGE_SIZE = 5000  # List Blobs' maximum
PUT_BLOB_LIMIT = 5000 * 1024 * 1024  # Put Blob's limit; larger blobs go in blocks
_DELETE_BATCH = 256  # Blob Batch's limit
COPY_DEADLINE_S = 3600  # a pending server-side copy is aborted after this
#: metadata names Azure refuses (not C# identifiers) -> the names stored
_STORED_NAMES = {MTIME_KEY: MTIME_KEY.replace("-", "_")}
_OUR_NAMES = {stored: ours for ours, stored in _STORED_NAMES.items()}


class Options(ObjectStoreOptions):
    container: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$",
                           description="Container name")
    account: str | None = Field(None, pattern=r"^[a-z0-9]{3,24}$",
                                description="Storage account name (not with connection_string)")
    account_url: ServiceUrl | None = Field(
        None,
        description="Blob endpoint, default https://<account>.blob.core.windows.net "
                    "(Azurite: http://127.0.0.1:10000/devstoreaccount1)")
    account_key: SecretStr | None = Field(None, description="Shared key of the account")
    sas_token: SecretStr | None = Field(None, description="Shared access signature (query)")
    connection_string: SecretStr | None = Field(
        None, description="Connection string (carries account, endpoint and key or SAS)")
    tenant_id: str | None = Field(None, description="Service principal: Entra ID tenant")
    client_id: str | None = Field(None, description="Service principal: application id")
    client_secret: SecretStr | None = Field(None, description="Service principal: secret")
    authority_host: str | None = Field(
        None, description="Entra ID authority of a sovereign cloud, e.g. "
                          "login.microsoftonline.us")

    @model_validator(mode="after")
    def _one_auth_method(self) -> Options:
        principal = (self.tenant_id, self.client_id, self.client_secret)
        if any(principal) and not all(principal):
            raise ValueError("a service principal needs tenant_id, client_id and client_secret")
        given = [name for name, value in (
            ("account_key", self.account_key), ("sas_token", self.sas_token),
            ("connection_string", self.connection_string),
            ("service principal", self.client_secret)) if value is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of account_key, sas_token, connection_string "
                             f"or a service principal (given: {', '.join(given) or 'none'})")
        if self.connection_string is not None:
            if self.account or self.account_url:
                raise ValueError("a connection_string carries the account and endpoint: "
                                 "drop account and account_url")
        elif not self.account:
            raise ValueError("account is required (unless a connection_string is given)")
        if self.client_secret is not None and not self.endpoint().startswith("https://"):
            raise ValueError("a service principal needs an https account_url "
                             "(Azure sends no token over plain http)")
        return self

    def endpoint(self) -> str:
        return (self.account_url or f"https://{self.account}.blob.core.windows.net").rstrip("/")


def build(options: Options, context: BuildContext) -> ObjectStoreFileSystem:
    return ObjectStoreFileSystem(BlobStore(options), options, context)


def _credential(options: Options) -> Any:
    if options.account_key is not None:
        return {"account_name": options.account,
                "account_key": options.account_key.get_secret_value()}
    if options.sas_token is not None:
        return options.sas_token.get_secret_value().lstrip("?")
    from azure.identity import ClientSecretCredential  # only service principals need it

    extra = {"authority": options.authority_host} if options.authority_host else {}
    return ClientSecretCredential(options.tenant_id, options.client_id,  # type: ignore[arg-type]
                                  options.client_secret.get_secret_value(),  # type: ignore[union-attr]
                                  **extra)


def _client(options: Options) -> ContainerClient:
    """This mount's own client: its own session, pool and credential."""
    session = requests.Session()
    pool = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
    session.mount("http://", pool)
    session.mount("https://", pool)
    # connection_data_block_size: a download's chunk (the default, 4 KiB, costs
    # a Python iteration per 4 KiB)
    transport = RequestsTransport(session=session, session_owner=True, connection_timeout=5,
                                  read_timeout=60, connection_data_block_size=STREAM_CHUNK)
    # Two quick retries (the SDK's default waits 15 s, then 18 s): a store that is
    # down must answer 503 within seconds; a WebDAV client then retries on its own.
    retry = LinearRetry(backoff=0.5, random_jitter_range=0.25, retry_total=2)  # type: ignore[arg-type]
    settings: dict[str, Any] = {"transport": transport, "retry_policy": retry}
    if options.connection_string is not None:
        return ContainerClient.from_connection_string(
            options.connection_string.get_secret_value(), options.container, **settings)
    return ContainerClient(options.endpoint(), options.container,
                           credential=_credential(options), **settings)


#: Azure error codes (and client-side failures by class name) -> what they mean
ERRORS: dict[str, Fault] = {
    **dict.fromkeys(["BlobNotFound", "ResourceNotFound", "ResourceNotFoundError",
                     "CannotVerifyCopySource"], Fault.MISSING),
    **dict.fromkeys(["BlobAlreadyExists", "ResourceAlreadyExists", "ResourceExistsError"],
                    Fault.EXISTS),
    **dict.fromkeys(["AuthorizationPermissionMismatch", "AuthorizationResourceTypeMismatch",
                     "AuthorizationServiceMismatch", "InsufficientAccountPermissions",
                     "LeaseIdMissing", "LeaseNotPresentWithBlobOperation",
                     "BlobImmutableDueToPolicy"], Fault.DENIED),
    **dict.fromkeys(["InvalidResourceName", "InvalidUri", "OutOfRangeInput"], Fault.INVALID),
    **dict.fromkeys(["ContainerNotFound", "ContainerBeingDeleted", "ContainerDisabled"],
                    Fault.NO_BUCKET),
    **dict.fromkeys(["AuthenticationFailed", "AuthorizationFailure",
                     "NoAuthenticationInformation", "InvalidAuthenticationInfo",
                     "AccountIsDisabled", "ClientAuthenticationError",
                     "CredentialUnavailableError"], Fault.CREDENTIALS),
    **dict.fromkeys(["500", "502", "503", "504", "InternalError", "ServerBusy",
                     "OperationTimedOut", "ServiceUnavailable", "ServiceRequestError",
                     "ServiceResponseError", "IncompleteReadError", "ConnectionError",
                     "ConnectionRefusedError", "ConnectionResetError", "TimeoutError"],
                    Fault.UNREACHABLE),
}


def _to_azure(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return {_STORED_NAMES.get(name, name): value for name, value in (metadata or {}).items()}


def _from_azure(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return {_OUR_NAMES.get(name, name): value for name, value in (metadata or {}).items()}


def _stored(blob: BlobProperties) -> StoredObject:
    metadata = _from_azure(blob.metadata) if blob.metadata is not None else None
    return StoredObject(blob.name, blob.size, blob.last_modified.timestamp(), blob.etag or "",
                        metadata)


def read_listing_page(page: bytes, listing: Listing) -> str | None:
    """Add a List Blobs page's blobs and prefixes to ``listing``; its NextMarker."""
    root = ElementTree.fromstring(page)
    for item in root.iterfind("Blobs/*"):
        name = _blob_name(item.find("Name"))
        if item.tag == "BlobPrefix":
            listing.prefixes.append(name)
        elif item.tag == "Blob":
            listing.objects.append(_listed(name, item))
    return root.findtext("NextMarker") or None


def _blob_name(element: ElementTree.Element | None) -> str:
    if element is None:
        raise ValueError("a listed blob without a name")
    text = element.text or ""
    # names with characters XML cannot carry come percent-encoded
    return unquote(text) if element.get("Encoded") == "true" else text


def _listed(name: str, blob: ElementTree.Element) -> StoredObject:
    properties = blob.find("Properties")
    if properties is None:
        raise ValueError(f"listed blob {name!r} without properties")
    metadata = blob.find("Metadata")
    return StoredObject(
        name,
        int(properties.findtext("Content-Length") or 0),
        parsedate_to_datetime(properties.findtext("Last-Modified") or "").timestamp(),
        properties.findtext("Etag") or "",
        None if metadata is None else _from_azure({m.tag: m.text or "" for m in metadata}))


class BlobStore(ObjectStore):
    """One container through this mount's own :class:`ContainerClient`."""

    ERRORS = ERRORS

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self.client = _client(options)
        self.page_size = PAGE_SIZE  # tests make it small

    def native_code(self, exc: BaseException) -> str | None:
        code = getattr(exc, "error_code", None)
        if code:
            return str(getattr(code, "value", code))
        response = getattr(exc, "response", None)  # the generated calls leave the code here
        if response is not None and response.headers.get("x-ms-error-code"):
            return str(response.headers["x-ms-error-code"])
        status = getattr(exc, "status_code", None)
        if isinstance(exc, HttpResponseError) and status and status >= 500:
            return str(status)
        return None

    # -- reading --------------------------------------------------------------------

    def list(self, prefix: str, recursive: bool = False, limit: int | None = None) -> Listing:
        listing = Listing()
        marker: str | None = None
        while True:
            page = self._list_page(prefix, "" if recursive else "/", marker,
                                   limit or self.page_size)
            marker = read_listing_page(page, listing)
            if limit is not None or not marker:
                return listing

    def _list_page(self, prefix: str, delimiter: str, marker: str | None,
                   max_results: int) -> bytes:
        """One List Blobs page as the store's XML. Sent raw through this mount's
        pipeline (auth, retries): the SDK's model deserializer took about 0.25 s
        of CPU per 1,000 blobs and kept ~50 MiB of heap after 10,000."""
        params = {"restype": "container", "comp": "list", "include": "metadata",
                  "prefix": prefix, "maxresults": str(max_results)}
        if delimiter:
            params["delimiter"] = delimiter
        if marker:
            params["marker"] = marker
        url = self.client.url  # may carry a SAS: azure-core's params= would not encode ours
        url += ("&" if "?" in url else "?") + urlencode(params, quote_via=quote)
        request = HttpRequest("GET", url, headers={"x-ms-version": self.client.api_version,
                                                   "Accept": "application/xml"})
        answer = self.client._client._send_request(request)
        if answer.status_code != 200:
            raise HttpResponseError(response=answer)  # native_code reads x-ms-error-code
        return answer.read()

    def head(self, key: str) -> StoredObject | None:
        try:
            found = self.client.get_blob_client(key).get_blob_properties()
        except Exception as exc:
            if self.is_missing(exc):
                return None
            raise
        return _stored(found)

    def stream(self, obj: StoredObject, start: int) -> Iterator[bytes]:
        # The generated operation, not download_blob(): that one reads in ranged
        # requests of 4 MiB, and a range costs Azurite the whole blob each time.
        # If-Match: a blob replaced between a read's streams fails the second.
        chunks = self.client.get_blob_client(obj.key)._client.blob.download(
            range=f"bytes={start}-",
            modified_access_conditions=ModifiedAccessConditions(if_match=obj.etag))
        try:
            yield from chunks
        finally:
            chunks.response.internal_response.close()  # an unread rest is dropped

    # -- writing --------------------------------------------------------------------

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        self.client.get_blob_client(key).upload_blob(data, overwrite=True,
                                                     metadata=_to_azure(metadata))

    def copy(self, src: str, dst: str, metadata: Mapping[str, str] | None = None) -> None:
        target = self.client.get_blob_client(dst)
        if src == dst and metadata is not None:
            target.set_blob_metadata(_to_azure(metadata))  # one call, content untouched
            return
        source = self.client.get_blob_client(src)
        # Copy Blob keeps the source's metadata when it is given none: {} is set afterwards
        started = target.start_copy_from_url(source.url, metadata=_to_azure(metadata) or None)
        if started.get("copy_status") == "pending":
            self._wait_for_copy(target)
        if metadata is not None and not metadata:
            target.set_blob_metadata({})

    def _wait_for_copy(self, target: Any) -> None:
        """Within an account a copy is usually done at once; a big one may take a
        while (polled, slower and slower). One stuck past the deadline is aborted."""
        deadline, pause = time.monotonic() + COPY_DEADLINE_S, 0.05
        while True:
            copy = target.get_blob_properties().copy
            if copy.status != "pending":
                break
            if time.monotonic() > deadline:
                target.abort_copy(copy.id)
                raise OSError(f"server-side copy unfinished after {COPY_DEADLINE_S} s")
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
        if copy.status != "success":
            raise OSError(f"server-side copy {copy.status}: {copy.status_description}")

    def delete(self, keys: Iterable[str]) -> None:
        """Blob Batch requests of up to 256 deletes; absent blobs are fine."""
        keys = list(keys)
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start:start + _DELETE_BATCH]
            if len(batch) == 1:  # one plain request, no multipart body
                self._delete_one(batch[0])
                continue
            answers = self.client.delete_blobs(*batch, raise_on_any_failure=False)
            failed = [a for a in answers if a.status_code not in (202, 404)]
            if failed:
                raise OSError(f"{len(failed)} blobs could not be deleted "
                              f"({failed[0].status_code} {failed[0].reason})")

    def _delete_one(self, key: str) -> None:
        try:
            self.client.delete_blob(key)
        except Exception as exc:
            if not self.is_missing(exc):
                raise

    def start_upload(self, key: str) -> PartedUpload:
        return BlockUpload(self.client, key)


class BlockUpload(PartedUpload):
    """A block blob: parts are staged blocks, published by one Put Block List.

    Block ids carry a random per-upload tag (ids must all have one length),
    so two uploads of one blob never reuse each other's blocks.
    """

    def __init__(self, client: ContainerClient, key: str) -> None:
        self._blob = client.get_blob_client(key)
        self._tag = uuid.uuid4().hex

    stream_limit = PUT_BLOB_LIMIT
    max_parts = 50_000  # committed blocks per blob

    def put_whole(self, data: bytes) -> None:
        self._blob.upload_blob(data, overwrite=True)

    def put_stream(self, body: BodyPipe, length: int) -> None:
        """One Put Blob whose body is sent as it is read. The generated operation:
        ``upload_blob`` cuts a stream into staged blocks of its own. Its retry
        policy cannot rewind the body (no ``tell``), so it does not retry."""
        self._blob._client.block_blob.upload(content_length=length, body=body)

    def send_part(self, number: int, data: bytes) -> Any:
        block_id = f"{self._tag}-{number:06d}"  # the SDK base64-encodes it
        self._blob.stage_block(block_id, data, length=len(data))
        return block_id

    def finish(self, tokens: list[Any]) -> None:
        self._blob.commit_block_list([BlobBlock(block_id) for block_id in tokens])

    def abort(self, tokens: list[Any]) -> None:
        """Nothing to do: uncommitted blocks are never visible and Azure drops
        them after 7 days; the committed blob, if any, was not touched."""
