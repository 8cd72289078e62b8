"""The wsgidav provider: every tenant's tree behind one provider at "/"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_FORBIDDEN,
    HTTP_UNAUTHORIZED,
    DAVError,
    PRECONDITION_CODE_PropfindFiniteDepth,
)
from wsgidav.dav_provider import DAVProvider, _DAVResource

from mosaic.dav import propfind, ranges
from mosaic.dav.errors import to_dav_error
from mosaic.dav.resources import FileResource, make_resource
from mosaic.vfs.mounts import path_from_ref_key
from mosaic.vfs.tenantfs import TenantFileSystem

ANONYMOUS_ALLOW = ("OPTIONS, HEAD, GET, PUT, DELETE, PROPFIND, PROPPATCH, MKCOL, COPY, MOVE, "
                   "LOCK, UNLOCK")
FOLDER_PAGE = b"This folder is served over WebDAV: map it as a network drive.\n"

#: environ -> the requesting user's view of their tenant
SessionFactory = Callable[[dict[str, Any]], TenantFileSystem]


class MosaicProvider(DAVProvider):
    def __init__(self, open_session: SessionFactory) -> None:
        super().__init__()
        self._open_session = open_session

    def __repr__(self) -> str:
        return "MosaicProvider"

    def is_readonly(self) -> bool:
        # Read-only mounts and rules are per user and path: enforced in the VFS.
        return False

    def session(self, environ: dict[str, Any]) -> TenantFileSystem:
        fs = environ.get("mosaic.fs")
        if fs is None:
            if "mosaic.principal" not in environ:
                raise DAVError(HTTP_UNAUTHORIZED)
            fs = environ["mosaic.fs"] = self._open_session(environ)
        return fs

    def get_resource_inst(self, path: str, environ: dict[str, Any],
                          fresh: bool = False) -> _DAVResource | None:
        remembered = environ.get("mosaic.read_res")
        if remembered is not None and remembered[0] == path:
            return remembered[1]  # a GET/HEAD asks twice for the same target
        fs = self.session(environ)
        if _is_case_only_rename_target(fs, path, environ):
            return None
        try:
            info = fs.info(path.strip("/"), fresh=fresh)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise to_dav_error(exc) from exc
        res = make_resource(path, environ, info)
        if fresh and isinstance(res, FileResource):
            res.info_is_fresh = True
        return res

    def ref_url_to_path(self, ref_url: str) -> str:
        return path_from_ref_key(ref_url)[1]

    def custom_request_handler(self, environ: dict[str, Any], start_response: Any,
                               default_handler: Any) -> Any:
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS" and "mosaic.principal" not in environ:
            return _anonymous_options(start_response)
        if method == "PROPFIND":
            return self._propfind(environ, start_response, default_handler)
        if method in ("LOCK", "PROPPATCH"):
            self._check_may_change(environ)
        if method in ("GET", "HEAD"):
            # fresh: the length and ETag sent are those of the content read next
            res = self.get_resource_inst(environ["PATH_INFO"], environ, fresh=True)
            if res is not None and res.is_collection:
                return _folder_page(method, start_response)
            if res is not None:
                ranges.settle(environ, res.get_content_length(), res.get_etag(),
                              res.get_last_modified())
            environ["mosaic.read_res"] = (environ["PATH_INFO"], res)
        return default_handler(environ, start_response)

    def _check_may_change(self, environ: dict[str, Any]) -> None:
        """wsgidav asks for no right to LOCK or PROPPATCH an existing resource, yet a
        lock blocks every writer and dead properties hold what Windows shows of a file
        (hidden, read-only): both need write access. (A LOCK that creates the file is
        checked by the VFS when it creates it.)"""
        path = environ["PATH_INFO"]
        if self.get_resource_inst(path, environ) is None:
            return
        try:
            self.session(environ).check_write(path.strip("/"))
        except Exception as exc:
            raise to_dav_error(exc) from exc

    def _propfind(self, environ: dict[str, Any], start_response: Any,
                  default_handler: Any) -> Any:
        if environ.get("HTTP_DEPTH", "infinity") == "infinity":
            # A Depth: infinity PROPFIND walks a whole tenant into memory.
            raise DAVError(HTTP_FORBIDDEN, err_condition=PRECONDITION_CODE_PropfindFiniteDepth)
        if "HTTP_IF" not in environ and environ["HTTP_DEPTH"] in ("0", "1"):
            res = self.get_resource_inst(environ["PATH_INFO"], environ)
            if res is not None:
                try:
                    return propfind.answer(res, environ, start_response)
                except propfind.Unsupported:
                    pass
        return default_handler(environ, start_response)


def _is_case_only_rename_target(fs: TenantFileSystem, path: str,
                                 environ: dict[str, Any]) -> bool:
    """The destination of a MOVE or COPY that the VFS says is the source itself
    (another case of its name on a case-insensitive mount, ``fs.same_entry``).

    The rule is the VFS's: its ``mv`` renames such a member, its ``copy`` refuses a
    copy onto itself (403). Only this hook stays here, because the trap is wsgidav's
    flow: it resolves the destination as a member of its own and would delete it
    before a MOVE (and the source with it) or refuse it under ``Overwrite: F``."""
    source, method = environ["PATH_INFO"], environ.get("REQUEST_METHOD")
    if method not in ("MOVE", "COPY") or path == source:
        return False
    return fs.same_entry(source.strip("/"), path.strip("/"))


def _anonymous_options(start_response: Any) -> list[bytes]:
    # Windows Explorer gives up on a 401 here; answer without revealing whether
    # the path exists (no tenant is known yet).
    start_response("200 OK", [
        ("Content-Length", "0"),
        ("DAV", "1,2"),
        ("MS-Author-Via", "DAV"),
        ("Allow", ANONYMOUS_ALLOW),
        ("Date", util.get_rfc1123_time()),
    ])
    return [b""]


def _folder_page(method: str, start_response: Any) -> list[bytes]:
    # Office and Explorer probe folders with HEAD and expect a 200.
    start_response("200 OK", [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(FOLDER_PAGE))),
        ("Date", util.get_rfc1123_time()),
    ])
    return [] if method == "HEAD" else [FOLDER_PAGE]
