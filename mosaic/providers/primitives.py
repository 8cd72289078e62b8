"""What an object-store backend (s3, azure_blob, gcs, swift) supplies.

Each backend implements :class:`ObjectStore`: a few primitives over keys
(paged listings, HEAD, streamed reads, uploads in one request or in parts,
server-side copies, bulk deletes) and a table that translates its native
errors into a :class:`Fault`. :mod:`mosaic.providers.objectstore` builds the
folder tree, caches and moves on top of these, once for every store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from mosaic.core import paths
from mosaic.core.errors import InvalidPathError
from mosaic.providers.transfers import PartedUpload

#: user-metadata key holding a modification time a client set (epoch seconds)
MTIME_KEY = "mosaic-mtime"
MIB = 1024 * 1024
#: what a stream hands over at a time: the WebDAV block size (256 KiB), so a
#: download hands each chunk to the client whole, never sliced into new copies
#: (GET 256 MiB through Mosaic on fake-gcs-server: 1 MiB chunks 1,160 MB/s, 1,400)
STREAM_CHUNK = 256 * 1024


def _service_url(value: str) -> str:
    # The messages never quote the value: it may carry a password.
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host name")
    if parts.username is not None or parts.password is not None:
        # Libraries log and echo endpoints (botocore refuses them outright):
        # credentials belong in the provider's secret keys, which are masked.
        raise ValueError("the URL must not carry a user or password: give credentials "
                         "with the provider's own keys (they take ${ENV} and *_file)")
    return value


#: The URL of a store's service or identity endpoint: http(s), a host, no credentials.
ServiceUrl = Annotated[str, AfterValidator(_service_url)]


class ObjectStoreOptions(BaseModel):
    """What every object-store provider's YAML section has; each adds its own."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    prefix: str = Field("", description="Key prefix the mount is rooted at, e.g. teams/acme")
    part_size_mib: int = Field(8, ge=5, le=1024, description="Upload part size")
    read_ahead_mib: int = Field(
        8, ge=1, le=1024,
        description="How far a download reads ahead of the client (memory per download)")
    transfers: int = Field(
        4, ge=1, le=32,
        description="Parts in flight per upload, copies per folder move (memory: this many parts)")
    single_put_max_mib: int = Field(
        5120, ge=0, le=5 * 1024 * 1024,
        description="An upload whose size the client announces (Content-Length), up to "
                    "this and the store's limit for one request, goes as one streamed "
                    "request: flat memory, no parts; larger ones and bodies of unknown "
                    "size go in parts (0: always in parts)")
    listing_cache_seconds: float = Field(
        5.0, ge=0, le=3600,
        description="How long a listing is reused; changes made through Mosaic show at once, "
                    "changes made by other tools after this long (0: no cache)")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        try:
            return paths.normalize(value)  # refuses "..", NUL, backslashes
        except InvalidPathError as exc:  # an OSError: pydantic reports only ValueErrors
            raise ValueError(f"not a usable key prefix: {exc}") from None


class Fault(Enum):
    """What a native error means, whatever store raised it."""

    MISSING = "missing"  # that object does not exist
    EXISTS = "exists"
    DENIED = "denied"  # this object is forbidden to these credentials
    INVALID = "invalid"  # the store refuses the name (too long, ...)
    NO_BUCKET = "bucket or container not found"
    CREDENTIALS = "credentials refused"
    UNREACHABLE = "storage service unreachable"




@dataclass(frozen=True, slots=True)  # slots: a cached listing holds 10,000s of them
class StoredObject:
    """One object as a listing or a HEAD describes it."""

    key: str
    size: int
    mtime: float  # the store's own last-modified time
    etag: str  # as the store sends it; :func:`strong_etag` cleans it
    metadata: Mapping[str, str] | None = None  # None: the call did not return it

    @property
    def effective_mtime(self) -> float:
        """The time a client set, if any, else the store's."""
        if self.metadata and MTIME_KEY in self.metadata:  # checked, not caught: per entry
            with suppress(ValueError):
                return float(self.metadata[MTIME_KEY])
        return self.mtime


@dataclass
class Listing:
    """The direct children of one prefix: objects and sub-prefixes (``x/``)."""

    objects: list[StoredObject] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)


class ObjectStore(ABC):
    """The primitives of one bucket or container; keys are full object keys.

    ``ERRORS`` maps the store's native error codes to a :class:`Fault`;
    :meth:`error_code` extracts that code from an exception (None: not the
    store's). Errors not in the table become a plain EIO OSError.
    """

    ERRORS: Mapping[str, Fault] = {}

    def __init__(self, options: ObjectStoreOptions) -> None:
        self.part_size = options.part_size_mib * MIB
        self.read_ahead = options.read_ahead_mib * MIB
        self.transfers = options.transfers
        self.single_put_max = options.single_put_max_mib * MIB

    @abstractmethod
    def list(self, prefix: str, recursive: bool = False,
             limit: int | None = None) -> Listing:
        """Objects below ``prefix`` (all levels if recursive, else with a
        ``/`` delimiter), every page, or the first ``limit`` objects."""

    @abstractmethod
    def head(self, key: str) -> StoredObject | None:
        """The object with its metadata, None if there is none."""

    @abstractmethod
    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None: ...

    @abstractmethod
    def copy(self, src: str, dst: str, metadata: Mapping[str, str] | None = None) -> None:
        """Server-side copy; ``metadata`` None keeps the source's, else replaces it."""

    def copy_object(self, obj: StoredObject, dst: str,
                    metadata: Mapping[str, str] | None = None) -> None:
        """:meth:`copy` of an object whose size is known (stores with a size
        limit on a single copy override this)."""
        self.copy(obj.key, dst, metadata)

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Delete these objects (in bulk where the store can); absent ones are fine."""

    @abstractmethod
    def stream(self, obj: StoredObject, start: int) -> Iterator[bytes]:
        """``obj`` from ``start`` (< its size) to its end, one GET streamed in
        chunks of about ``STREAM_CHUNK``; closing the iterator ends the request."""

    @abstractmethod
    def start_upload(self, key: str) -> PartedUpload:
        """A new upload of ``key``: nothing is visible before its ``finish``."""

    @abstractmethod
    def native_code(self, exc: BaseException) -> str | None:
        """The store's error code carried by this one exception, if any."""

    def error_code(self, exc: BaseException) -> str | None:
        """The code of ``exc`` or of what caused it: the store's own, else the
        name of an exception class (or a base of it) listed in ``ERRORS``."""
        seen: BaseException | None = exc
        while seen is not None:
            code = self.native_code(seen)
            if code:
                return code
            for kind in type(seen).__mro__:  # subclasses: e.g. a timeout's own class
                if kind.__name__ in self.ERRORS:
                    return kind.__name__
            seen = seen.__cause__ or seen.__context__
        return None

    def is_missing(self, exc: BaseException) -> bool:
        return self.ERRORS.get(self.error_code(exc) or "") is Fault.MISSING


def parts_for(size: int | None, part_size: int, transfers: int,
              max_parts: int) -> tuple[int, int]:
    """Part size and parts in flight for an upload of ``size`` (None: unknown):
    parts grow, in whole MiB, until ``max_parts`` hold the object, and fewer go
    at once so that memory stays ``transfers`` default parts' worth (at least
    one part in flight)."""
    if size is None or not max_parts or size <= part_size * max_parts:
        return part_size, transfers
    # ceil(size / max_parts), in whole MiB (GCS wants multiples of 256 KiB)
    grown = max(part_size, -(-size // (max_parts * MIB)) * MIB)
    return grown, max(1, part_size * transfers // grown)


def strong_etag(etag: str) -> str:
    """The store's ETag, strong and unquoted."""
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')
