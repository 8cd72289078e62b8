"""wsgidav resources over a TenantFileSystem.

Each resource is built from one ``info``/``ls`` entry and never asks the
backend again for its live properties, so a PROPFIND costs one ``ls``.
"""

from __future__ import annotations

import mimetypes
import posixpath
from functools import lru_cache
from typing import Any

from wsgidav import util
from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_INTERNAL_ERROR, HTTP_NOT_FOUND, DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, _DAVResource
from wsgidav.xml_tools import etree

from mosaic.dav.errors import translated
from mosaic.dav.upload import AtomicUpload
from mosaic.vfs.tenantfs import TenantFileSystem

DEFAULT_MIME = "application/octet-stream"
WIN32_NS = "{urn:schemas-microsoft-com:}"
WIN32_LAST_MODIFIED = WIN32_NS + "Win32LastModifiedTime"
#: RFC 4331 property -> its index in TenantFileSystem.space()
QUOTA_PROPERTIES = {"{DAV:}quota-used-bytes": 0, "{DAV:}quota-available-bytes": 1}


@lru_cache(maxsize=4096)
def mime_type(name: str) -> str:
    # Keyed by the extension only, so a PROPFIND guesses once per extension.
    return mimetypes.guess_type("x" + posixpath.splitext(name)[1])[0] or DEFAULT_MIME


def clean_etag(value: Any) -> str:
    """wsgidav wants strong, unquoted ETags; stores hand out ``W/"..."``."""
    text = str(value)
    text = text.removeprefix("W/")
    return text.strip('"')


def display_name(path: str) -> str:
    return path.rstrip("/").rpartition("/")[2]


def modified_time(info: dict[str, Any]) -> float | None:
    # 0: unknown (an object store's folder listed by its parent): no
    # property rather than a date in 1970
    return info.get("mtime") or None


def created_time(info: dict[str, Any]) -> float | None:
    return info.get("created") or info.get("mtime") or None


def file_etag(info: dict[str, Any]) -> str:
    """The backend's ETag, else one made of the time and size."""
    etag = info.get("etag")
    if etag:
        return clean_etag(etag)
    return f"{int(float(info.get('mtime') or 0) * 1e6):x}-{int(info.get('size') or 0):x}"


def _vpath(path: str) -> str:
    return path.strip("/")


class _Common:
    """Behaviour shared by files and folders (mixed in before wsgidav's bases)."""

    path: str
    environ: dict[str, Any]
    provider: Any
    info: dict[str, Any]

    @property
    def fs(self) -> TenantFileSystem:
        return self.environ["mosaic.fs"]

    cached_ref: str | None = None

    def get_ref_url(self) -> str:
        # wsgidav asks several times per request and per property.
        if self.cached_ref is None:
            self.cached_ref = self.fs.ref_key(self.path)
        return self.cached_ref

    def get_display_name(self) -> str:
        return display_name(self.path)

    def get_last_modified(self) -> float | None:
        return modified_time(self.info)

    def get_creation_date(self) -> float | None:
        return created_time(self.info)

    @translated
    def set_last_modified(self, dest_path: str, time_stamp: Any, *, dry_run: bool) -> bool:
        seconds = time_stamp if isinstance(time_stamp, int | float) \
            else util.parse_time_string(time_stamp)
        if seconds is None:
            raise DAVError(HTTP_BAD_REQUEST, "unparsable time stamp")
        if not dry_run:
            self.fs.set_mtime(_vpath(dest_path), float(seconds))
        return True

    def set_property_value(self, name: str, value: Any, *, dry_run: bool = False) -> Any:
        """Windows' Win32* properties are kept as dead properties.

        wsgidav's ``emulate_win32_lastmod`` answers 200 for them and stores
        nothing, so a file Explorer made hidden or read-only lost the flag;
        Win32LastModifiedTime also sets the file's time, as that emulation did.
        """
        if not name.startswith(WIN32_NS):
            return super().set_property_value(name, value, dry_run=dry_run)  # type: ignore[misc]
        # Windows 7's redirector sends times wsgidav does not trust (it skips it too).
        old_client = "MiniRedir/6.1" in self.environ.get("HTTP_USER_AGENT", "")
        if name == WIN32_LAST_MODIFIED and value is not None and not old_client:
            self.set_last_modified(self.path, value.text, dry_run=dry_run)
        manager = self.provider.prop_manager
        if value is None:
            return manager.remove_property(self.get_ref_url(), name, dry_run, self.environ)
        return manager.write_property(self.get_ref_url(), name, etree.tostring(value),
                                      dry_run, self.environ)

    def _move_properties(self, dest_path: str, *, with_children: bool) -> None:
        manager = self.provider.prop_manager
        if manager:
            manager.move_properties(self.get_ref_url(), self.fs.ref_key(dest_path),
                                    with_children=with_children, environ=self.environ)

    def _copy_properties(self, dest_path: str) -> None:
        manager = self.provider.prop_manager
        if manager:
            manager.copy_properties(self.get_ref_url(), self.fs.ref_key(dest_path),
                                    self.environ)

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    @translated
    def handle_move(self, dest_path: str) -> bool:
        # refused whole before wsgidav deletes an existing destination
        self.fs.check_transfer(_vpath(self.path), _vpath(dest_path), move=True)
        return False

    @translated
    def handle_copy(self, dest_path: str, *, depth_infinity: bool) -> bool:
        # refused whole before wsgidav copies a tree member by member
        self.fs.check_transfer(_vpath(self.path), _vpath(dest_path), move=False,
                               recursive=depth_infinity)
        return False

    @translated
    def move_recursive(self, dest_path: str) -> None:
        self.fs.mv(_vpath(self.path), _vpath(dest_path))
        self._move_properties(dest_path, with_children=True)

    def _forget(self) -> None:
        self.remove_all_properties(recursive=True)
        self.remove_all_locks(recursive=True)

    def remove_all_properties(self, *, recursive: bool) -> None:
        manager = self.provider.prop_manager
        if manager:
            manager.remove_properties(self.get_ref_url(), self.environ,
                                      with_children=recursive)


class FileResource(_Common, DAVNonCollection):
    #: info came from info(fresh=True) in this request (a GET/HEAD), not a cache
    info_is_fresh = False

    def __init__(self, path: str, environ: dict[str, Any], info: dict[str, Any]) -> None:
        DAVNonCollection.__init__(self, path, environ)
        self.info = info
        self._upload: AtomicUpload | None = None

    def get_content_length(self) -> int:
        return int(self.info.get("size") or 0)

    def get_content_type(self) -> str:
        return mime_type(self.path)

    def get_etag(self) -> str:
        return file_etag(self.info)

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    @translated
    def get_content(self) -> Any:
        if self.info_is_fresh:  # the read serves the version whose length was sent
            return self.fs.open(_vpath(self.path), "rb", fresh_info=self.info)
        return self.fs.open(_vpath(self.path), "rb")

    @translated
    def begin_write(self, *, content_type: str | None = None) -> AtomicUpload:
        # macOS Finder sends chunked bodies and announces the size separately.
        expected = (self.environ.get("CONTENT_LENGTH")
                    or self.environ.get("HTTP_X_EXPECTED_ENTITY_LENGTH"))
        size = int(expected) if expected and expected.isdigit() else None
        # size: a store may stream the body as one request (AtomicUpload still
        # refuses a body shorter than announced, and the store never takes one)
        self._upload = AtomicUpload(
            self.fs.open(_vpath(self.path), "wb", autocommit=False, size=size), size)
        return self._upload

    @translated
    def end_write(self, *, with_errors: bool) -> None:
        upload, self._upload = self._upload, None
        if upload is None:
            return
        if with_errors:
            upload.abort()
            return
        if not upload.finish():
            raise DAVError(HTTP_BAD_REQUEST, "request body shorter than Content-Length")
        self.info = self.fs.info(_vpath(self.path))

    @translated
    def delete(self) -> None:
        self.fs.rm_file(_vpath(self.path))
        self._forget()

    @translated
    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        if is_move:
            self.fs.mv(_vpath(self.path), _vpath(dest_path))
            self._move_properties(dest_path, with_children=False)
        else:
            self.fs.copy(_vpath(self.path), _vpath(dest_path), recursive=False)
            self._copy_properties(dest_path)


class PendingFileResource(FileResource):
    """The target of a PUT to a new name: nothing exists until the upload commits.

    wsgidav calls ``create_empty_resource`` before every new-file PUT; writing a
    0-byte file there would leave a stray file behind an aborted upload.
    """

    def __init__(self, path: str, environ: dict[str, Any]) -> None:
        super().__init__(path, environ, {"name": path, "type": "file", "size": 0, "mtime": None})


class FolderResource(_Common, DAVCollection):
    def __init__(self, path: str, environ: dict[str, Any], info: dict[str, Any]) -> None:
        DAVCollection.__init__(self, path, environ)
        self.info = info

    def get_etag(self) -> None:
        return None

    def get_property_value(self, name: str) -> Any:
        """Quota properties for wsgidav's own PROPFIND (with an If header, say);
        the usual one renders them in mosaic.dav.propfind."""
        index = QUOTA_PROPERTIES.get(name)
        if index is None:
            return super().get_property_value(name)
        space = translated(self.fs.space)(self.path)
        if space is None:
            raise DAVError(HTTP_NOT_FOUND)
        element = etree.Element(name)
        element.text = str(space[index])
        return element

    @translated
    def member_infos(self) -> list[tuple[str, dict[str, Any]]]:
        """(path, info) of each member: all a PROPFIND renders them from."""
        base = self.path.rstrip("/")
        return [(f"{base}/{item['name'].rpartition('/')[2]}", item)
                for item in self.fs.ls(_vpath(self.path), detail=True)]

    def get_member_list(self) -> list[_DAVResource]:
        return [make_resource(path, self.environ, info) for path, info in self.member_infos()]

    def get_member_names(self) -> list[str]:
        return [m.name for m in self.get_member_list()]

    @translated
    def get_member(self, name: str) -> _DAVResource | None:
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)

    @translated
    def create_empty_resource(self, name: str) -> _DAVResource:
        path = util.join_uri(self.path, name)
        if self.environ.get("REQUEST_METHOD") == "PUT":
            return PendingFileResource(path, self.environ)
        self.fs.touch(_vpath(path))  # LOCK on an unmapped URL creates the file
        return self._resource(path)

    @translated
    def create_collection(self, name: str) -> None:
        self.fs.mkdir(_vpath(util.join_uri(self.path, name)))

    def support_recursive_delete(self) -> bool:
        return True

    def get_descendants(self, **kwargs: Any) -> list[_DAVResource]:
        # wsgidav lists a whole tree before a MOVE only to evaluate If headers
        # member by member; the move itself is one native rename (move_recursive).
        # Without an If header that listing (20 ms per 1,000 files) is waste.
        plain_move = (self.environ.get("REQUEST_METHOD") == "MOVE"
                      and "HTTP_IF" not in self.environ
                      and self.path.rstrip("/") == self.environ.get("PATH_INFO", "").rstrip("/"))
        if plain_move:
            return [self] if kwargs.get("add_self") else []
        return super().get_descendants(**kwargs)

    @translated
    def handle_delete(self) -> bool:
        """Delete a tree with one lock check instead of wsgidav's per-member walk
        (four lock queries for each of 1,000 files). With an ``If`` header the
        generic walk runs, since it evaluates the conditions member by member."""
        if "HTTP_IF" in self.environ:
            return False
        manager = self.provider.lock_manager
        if manager:
            # No tokens were submitted, so any lock on the tree, its members or
            # an infinite-depth ancestor forbids the delete (423).
            manager.check_write_permission(url=self.get_ref_url(), depth="infinity",
                                           token_list=[],
                                           principal=self.environ.get("wsgidav.user_name"))
        self.delete()
        return True

    @translated
    def delete(self) -> None:
        self.fs.rm(_vpath(self.path), recursive=True)
        self._forget()

    @translated
    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        # Collections: create the target folder only; wsgidav walks the members.
        target = _vpath(dest_path)
        if not self.fs.exists(target):
            self.fs.mkdir(target)
        if is_move:
            self._move_properties(dest_path, with_children=False)
        else:
            self._copy_properties(dest_path)

    def _resource(self, path: str) -> _DAVResource:
        res = self.provider.get_resource_inst(path, self.environ)
        if res is None:
            raise DAVError(HTTP_INTERNAL_ERROR, "resource vanished")
        return res


def make_resource(path: str, environ: dict[str, Any], info: dict[str, Any]) -> _DAVResource:
    if info.get("type") == "directory":
        return FolderResource(path, environ, info)
    return FileResource(path, environ, info)
