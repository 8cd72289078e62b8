"""Large files on Swift: Static Large Objects whose segments are ours.

An upload's segments are ``<key>/<upload id>/<part>`` in the segments
container. A manifest lists at most the cluster's ``max_manifest_segments``
(1,000 by default); an upload of unknown size that sends more is published
through nested manifests: each run of that many segments becomes a manifest
of its own (``<key>/<upload id>/<level>-<index>``, beside the segments),
and the file's manifest lists those. Swift reads such a file whole or by
range like any other; 1,000 x 1,000 parts of 8 MiB are 8 TiB.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mosaic.core.errors import FileTooLargeError
from mosaic.providers.transfers import BodyPipe, PartedUpload

if TYPE_CHECKING:
    from mosaic.providers.swift import SwiftStore

#: <key>/<upload id>/<part> or, for a nested manifest, <key>/<upload id>/<level>-<index>
_SEGMENT = re.compile(r"^(.+)/([0-9a-f]{32})/(?:[1-9]-)?[0-9]{8}$", re.DOTALL)
MAX_NESTING = 9  # Swift follows at most 10 manifests deep: the file's own plus 9


def segment_owner(name: str) -> tuple[str, str] | None:
    """(key, upload id) of one of our segments, None for other tools' names."""
    match = _SEGMENT.match(name)
    return (match[1], match[2]) if match else None


def meta_headers(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return {f"X-Object-Meta-{name}": value for name, value in (metadata or {}).items()}


def leaf_segments(store: SwiftStore, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A manifest's entries (``multipart-manifest=get``) with every nested
    manifest replaced by the segments it lists, in order."""
    leaves: list[dict[str, Any]] = []
    for entry in entries:
        if not entry.get("sub_slo"):
            leaves.append(entry)
            continue
        container, name = entry["name"].lstrip("/").split("/", 1)
        _, body = store.call("get_object", container, name,
                             query_string="multipart-manifest=get")
        leaves += leaf_segments(store, json.loads(body))
    return leaves


class SegmentedUpload(PartedUpload):
    """A Static Large Object: segments in the segments container, published by
    a manifest; small files are one plain PUT."""

    @property
    def stream_limit(self) -> int:  # type: ignore[override]
        return self._store.max_object_size()

    @property
    def max_parts(self) -> int:  # type: ignore[override]
        return self._store.max_segments()

    max_parts_is_hard = False  # beyond, manifests nest

    def __init__(self, store: SwiftStore, key: str) -> None:
        self._store, self._key = store, key
        self._id = uuid.uuid4().hex
        self._prefix = f"{key}/{self._id}/"
        self._container_ready = False
        self._ready_lock = threading.Lock()
        store.upload_started(self._id)

    def put_whole(self, data: bytes) -> None:
        try:
            self._store.put(self._key, data)
        finally:
            self._store.upload_started(self._id, done=True)

    def put_stream(self, body: BodyPipe, length: int) -> None:
        try:
            self._store.put_stream(self._key, body, length)
        finally:
            self._store.upload_started(self._id, done=True)

    def _ready(self) -> None:
        with self._ready_lock:
            if not self._container_ready:
                self._store.ensure_segments_container()
                self._container_ready = True

    def _segment(self, number: int) -> str:
        return f"{self._prefix}{number:08d}"

    def send_part(self, number: int, data: bytes) -> Any:
        self._ready()
        name = self._segment(number)
        etag = self._store.call("put_object", self._store.segments, name, data,
                                content_length=len(data))
        return {"path": f"/{self._store.segments}/{name}", "etag": etag,
                "size_bytes": len(data)}

    def copy_segment(self, number: int, segment: Mapping[str, Any]) -> dict[str, Any]:
        """A server-side copy of another manifest's segment as part ``number``."""
        self._ready()
        name = self._segment(number)
        self._store.call("copy_object", *segment["name"].lstrip("/").split("/", 1),
                         destination=f"/{self._store.segments}/{name}")
        return {"path": f"/{self._store.segments}/{name}", "etag": segment["hash"],
                "size_bytes": segment["bytes"]}

    def finish(self, tokens: list[Any], metadata: Mapping[str, str] | None = None) -> None:
        try:
            entries = self._nested(tokens)
            self._store.call("put_object", self._store.container, self._key,
                             json.dumps(entries), query_string="multipart-manifest=put",
                             headers=meta_headers(metadata))
            self._store.drop_old_segments(self._key, keep=self._id)
        finally:
            self._store.upload_started(self._id, done=True)

    def _nested(self, tokens: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Entries one manifest can list: runs of ``max_parts`` entries become
        nested manifests, level by level, until few enough are left."""
        entries, limit, level = tokens, max(2, self.max_parts), 0
        while len(entries) > limit:
            level += 1
            if level > MAX_NESTING:
                raise FileTooLargeError("", f"{len(tokens):,} parts are beyond the "
                                        "manifest nesting Swift allows")
            entries = [self._sub_manifest(level, index, entries[start:start + limit])
                       for index, start in enumerate(range(0, len(entries), limit), 1)]
        return entries

    def _sub_manifest(self, level: int, index: int, entries: list[dict[str, Any]]
                      ) -> dict[str, Any]:
        name = f"{self._prefix}{level}-{index:08d}"
        etag = self._store.call("put_object", self._store.segments, name, json.dumps(entries),
                                query_string="multipart-manifest=put")
        return {"path": f"/{self._store.segments}/{name}", "etag": etag.strip('"'),
                "size_bytes": sum(entry["size_bytes"] for entry in entries)}

    def abort(self, tokens: list[Any]) -> None:
        """Every segment of this upload: those sent, and any a lost reply hid.
        If the store is down, they are deleted by a later write of the mount."""
        self._store.upload_started(self._id, done=True)
        try:
            self._store.drop_upload(self._prefix, tokens)
        except Exception:
            self._store.leftover(self._prefix)
            raise
