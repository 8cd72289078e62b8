"""PROPFIND Depth 0/1, answered straight from one listing.

wsgidav builds an element tree per member, calls every property getter and
queries lock and property storage once per member (two SQL round trips for
each of 10,000 files). Here a folder costs one ``ls``, one query for the dead
properties and one for the locks of all its members, and the reply is written
as text. Requests this module does not cover (an ``If`` header, a malformed
body) go to wsgidav's own handler, which produces the same answers slowly.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from wsgidav import util, xml_tools
from wsgidav.dav_provider import _DAVResource

from mosaic.core import paths
from mosaic.dav.resources import (
    created_time,
    display_name,
    file_etag,
    make_resource,
    mime_type,
    modified_time,
)

DAV = "{DAV:}"
HREF_SAFE = "/!*'(),$-_|."
MAX_BODY = 1 << 20
SUPPORTED_LOCK = (
    "<D:supportedlock><D:lockentry><D:lockscope><D:exclusive/></D:lockscope>"
    "<D:locktype><D:write/></D:locktype></D:lockentry><D:lockentry><D:lockscope>"
    "<D:shared/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>"
    "</D:supportedlock>"
)
OK = "<D:status>HTTP/1.1 200 OK</D:status>"
NOT_FOUND = "<D:status>HTTP/1.1 404 Not Found</D:status>"


class Unsupported(Exception):
    """Let wsgidav's generic handler answer this request."""


def read_request(environ: dict[str, Any]) -> tuple[str, list[str]]:
    """(mode, names) of the request body; the body stays readable for a fallback."""
    length = environ.get("CONTENT_LENGTH") or "0"
    body = environ["wsgi.input"].read(int(length)) if length.isdigit() and int(length) else b""
    environ["wsgi.input"] = io.BytesIO(body)
    if len(body) > MAX_BODY:
        raise Unsupported
    if not body.strip():
        return "allprop", []
    try:
        root = xml_tools.string_to_xml(body)
    except Exception as exc:
        raise Unsupported from exc
    if root.tag != DAV + "propfind" or len(root) != 1:
        raise Unsupported
    node = root[0]
    if node.tag == DAV + "allprop":
        return "allprop", []
    if node.tag == DAV + "propname":
        return "propname", []
    if node.tag == DAV + "prop":
        return "named", [child.tag for child in node]
    raise Unsupported


@dataclass(slots=True)
class Member:
    """One resource of a reply: all its live properties are rendered from."""

    path: str
    info: dict[str, Any]
    is_collection: bool
    ref: str  # the key of its locks and dead properties
    href: str


class Listing:
    """The resources of one reply with their dead properties and locks.

    Members are plain records, not wsgidav resources: 10,000 resource objects
    and a property getter call per value cost more than the listing itself.
    """

    def __init__(self, res: _DAVResource, depth: str, wants_dead: bool,
                 wants_locks: bool) -> None:
        provider = res.provider
        self.root = res
        self.members = [Member(res.path, res.info, res.is_collection, res.get_ref_url(),
                               _href(res))]
        if depth == "1" and res.is_collection:
            self.members += _children(res, self.members[0])
        self.dead: dict[str, dict[str, bytes]] = {}
        self.locked: set[str] = set()
        self._spaces: dict[int, tuple[int, int] | None] = {}
        top, below = self.members[0].ref, len(self.members) > 1
        if wants_dead and provider.prop_manager:
            self.dead = provider.prop_manager.bulk_properties(top, below)
        if wants_locks and provider.lock_manager:
            locks = provider.lock_manager.storage.get_lock_list(
                top, include_root=True, include_children=below, token_only=False)
            self.locked = {lock["root"] for lock in locks}

    def space(self, member: Member) -> tuple[int, int] | None:
        """(used, available) bytes of a folder's mount, asked once per mount."""
        fs = self.root.fs
        mount = id(fs.mount_of(member.path))
        if mount not in self._spaces:
            try:
                self._spaces[mount] = fs.space(member.path)
            except OSError:  # a mount that is down has no figures to give
                self._spaces[mount] = None
        return self._spaces[mount]

    def resource(self, member: Member) -> _DAVResource:
        """The wsgidav resource of a member (for the rare lock discovery)."""
        if member is self.members[0]:
            return self.root
        return make_resource(member.path, self.root.environ, member.info)


def _children(res: _DAVResource, parent: Member) -> list[Member]:
    """The members of a folder; their keys and hrefs extend the folder's
    (resolving each one's mount again would cost a lookup per member)."""
    infos = res.member_infos()
    names = [path.rpartition("/")[2] for path, _ in infos]
    refs = res.fs.table.child_ref_keys(parent.ref, res.path.strip("/"), names)
    base = parent.href if parent.href.endswith("/") else parent.href + "/"
    members = []
    for (path, info), name, ref in zip(infos, names, refs, strict=True):
        folder = info.get("type") == "directory"
        href = base + paths.quote_segment(name, HREF_SAFE) + ("/" if folder else "")
        members.append(Member(path, info, folder, ref, href))
    return members


def answer(res: _DAVResource, environ: dict[str, Any], start_response: Any) -> list[bytes]:
    mode, names = read_request(environ)
    wants_dead = mode != "named" or any(name not in LIVE_VALUES for name in names)
    wants_locks = mode == "allprop" or DAV + "lockdiscovery" in names
    listing = Listing(res, environ.get("HTTP_DEPTH", "0"), wants_dead, wants_locks)
    body = render(listing, mode, names)
    start_response("207 Multi-Status", [
        ("Content-Type", "application/xml; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Date", util.get_rfc1123_time()),
    ])
    return [body]


def render(listing: Listing, mode: str, names: list[str]) -> bytes:
    parts = ['<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">']
    for member in listing.members:
        dead = listing.dead.get(member.ref, {})
        parts.append(f"<D:response><D:href>{member.href}</D:href>")
        if mode == "propname":
            parts.append(_propstat(_empty(n) for n in [*_live_names(member), *dead]))
        else:
            wanted = [*_live_names(member), *dead] if mode == "allprop" else names
            found, missing = _values(listing, member, wanted, dead)
            if mode == "allprop":
                missing = []  # allprop lists what exists (a store's folder may have no time)
            if found or not missing:
                parts.append(_propstat(found))
            if missing:
                parts.append(_propstat((_empty(n) for n in missing), NOT_FOUND))
        parts.append("</D:response>")
    parts.append("</D:multistatus>")
    return "".join(parts).encode("utf-8")


def _href(res: _DAVResource) -> str:
    path = res.provider.share_path + res.path
    if res.is_collection and not path.endswith("/"):
        path += "/"
    return quote(path, safe=HREF_SAFE)


FOLDER_NAMES = [DAV + name for name in ("resourcetype", "displayname", "getlastmodified",
                                        "creationdate", "lockdiscovery", "supportedlock")]
FILE_NAMES = [*FOLDER_NAMES, *(DAV + name for name in
                               ("getcontentlength", "getcontenttype", "getetag"))]


def _live_names(member: Member) -> list[str]:
    return FOLDER_NAMES if member.is_collection else FILE_NAMES


def _values(listing: Listing, member: Member, names: Iterable[str],
            dead: dict[str, bytes]) -> tuple[list[str], list[str]]:
    found, missing = [], []
    for name in names:
        live = LIVE_VALUES.get(name)
        value = None if live is None else live(listing, member)
        if value is None and name in dead:
            stored = dead[name]
            value = stored.decode("utf-8") if isinstance(stored, bytes) else stored
        if value is None:
            missing.append(name)
        else:
            found.append(value)
    return found, missing


def _lockdiscovery_of(listing: Listing, member: Member) -> str:
    if member.ref in listing.locked:
        return _lockdiscovery(listing.resource(member))
    return "<D:lockdiscovery/>"


def _resourcetype(_: Listing, member: Member) -> str:
    if member.is_collection:
        return "<D:resourcetype><D:collection/></D:resourcetype>"
    return "<D:resourcetype/>"  # every byte counts: Windows drops replies over 1 MB


def _displayname(_: Listing, member: Member) -> str:
    return f"<D:displayname>{escape(display_name(member.path))}</D:displayname>"


def _getlastmodified(_: Listing, member: Member) -> str | None:
    stamp = modified_time(member.info)
    return None if stamp is None else \
        f"<D:getlastmodified>{_http_date(int(stamp))}</D:getlastmodified>"


def _creationdate(_: Listing, member: Member) -> str | None:
    stamp = created_time(member.info)
    return None if stamp is None else f"<D:creationdate>{_iso_date(int(stamp))}</D:creationdate>"


def _getcontentlength(_: Listing, member: Member) -> str | None:
    if member.is_collection:
        return None
    return f"<D:getcontentlength>{int(member.info.get('size') or 0)}</D:getcontentlength>"


def _getcontenttype(_: Listing, member: Member) -> str | None:
    if member.is_collection:
        return None
    return f"<D:getcontenttype>{escape(mime_type(member.path))}</D:getcontenttype>"


def _getetag(_: Listing, member: Member) -> str | None:
    if member.is_collection:
        return None
    return f'<D:getetag>"{escape(file_etag(member.info))}"</D:getetag>'


def _quota(index: int, name: str) -> Callable[[Listing, Member], str | None]:
    """RFC 4331 quota properties: folders only, and never in allprop (the names
    are not in FOLDER_NAMES), so a listing costs nothing more unless asked."""
    def value(listing: Listing, member: Member) -> str | None:
        space = listing.space(member) if member.is_collection else None
        return None if space is None else f"<D:{name}>{space[index]}</D:{name}>"
    return value


#: live property -> its element for one member of a listing (None: it has none)
LIVE_VALUES: dict[str, Callable[[Listing, Member], str | None]] = {
    DAV + "resourcetype": _resourcetype,
    DAV + "displayname": _displayname,
    DAV + "getlastmodified": _getlastmodified,
    DAV + "creationdate": _creationdate,
    DAV + "lockdiscovery": _lockdiscovery_of,
    DAV + "supportedlock": lambda listing, member: SUPPORTED_LOCK,
    DAV + "getcontentlength": _getcontentlength,
    DAV + "getcontenttype": _getcontenttype,
    DAV + "getetag": _getetag,
    DAV + "quota-used-bytes": _quota(0, "quota-used-bytes"),
    DAV + "quota-available-bytes": _quota(1, "quota-available-bytes"),
}


# Files of one folder share few distinct seconds; formatting is a fifth of a
# large listing's time otherwise.
@lru_cache(maxsize=65536)
def _http_date(seconds: int) -> str:
    return util.get_rfc1123_time(seconds)


@lru_cache(maxsize=65536)
def _iso_date(seconds: int) -> str:
    return util.get_rfc3339_time(seconds)


def _lockdiscovery(res: _DAVResource) -> str:
    # Locked members are rare: render them with wsgidav's own code. The element
    # carries its own namespace declarations, so it embeds as it is.
    element = res.get_property_value(DAV + "lockdiscovery")
    return xml_tools.xml_to_bytes(element, pretty=False).decode("utf-8").split("?>", 1)[-1]


def _propstat(values: Iterable[str], status: str = OK) -> str:
    return f"<D:propstat><D:prop>{''.join(values)}</D:prop>{status}</D:propstat>"


def _empty(name: str) -> str:
    namespace, _, local = name[1:].partition("}") if name.startswith("{") else ("", "", name)
    if namespace == "DAV:":
        return f"<D:{local}/>"
    if not namespace:
        return f'<{local} xmlns=""/>'
    return f'<X:{local} xmlns:X="{escape(namespace, {chr(34): "&quot;"})}"/>'
