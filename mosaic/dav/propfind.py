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
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from wsgidav import util, xml_tools
from wsgidav.dav_provider import _DAVResource

DAV = "{DAV:}"
HREF_SAFE = "/!*'(),$-_|."
MAX_BODY = 1 << 20
LIVE = ("resourcetype", "creationdate", "getcontentlength", "getcontenttype",
        "getlastmodified", "getetag", "displayname", "lockdiscovery", "supportedlock")
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


class Listing:
    """The resources of one reply with their ref-urls, dead properties and locks."""

    def __init__(self, res: _DAVResource, depth: str, wants_dead: bool,
                 wants_locks: bool) -> None:
        provider = res.provider
        self.members = [res]
        if depth == "1" and res.is_collection:
            self.members += res.get_member_list()
        self.refs = [res.get_ref_url()] + [_child_ref(res, m) for m in self.members[1:]]
        self.dead: dict[str, dict[str, bytes]] = {}
        self.locked: set[str] = set()
        below = len(self.members) > 1
        if wants_dead and provider.prop_manager:
            self.dead = provider.prop_manager.bulk_properties(self.refs[0], below)
        if wants_locks and provider.lock_manager:
            locks = provider.lock_manager.storage.get_lock_list(
                self.refs[0], include_root=True, include_children=below, token_only=False)
            self.locked = {lock["root"] for lock in locks}


def _child_ref(parent: _DAVResource, child: _DAVResource) -> str:
    """A member's ref-url from its parent's, without resolving the mount again."""
    ref = parent.fs.table.child_ref_key(parent.get_ref_url(), child.path.strip("/"))
    child.cached_ref = ref
    return ref


def answer(res: _DAVResource, environ: dict[str, Any], start_response: Any) -> list[bytes]:
    mode, names = read_request(environ)
    wants_dead = mode != "named" or any(
        not n.startswith(DAV) or n[len(DAV):] not in LIVE for n in names)
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
    for res, ref in zip(listing.members, listing.refs, strict=True):
        dead = listing.dead.get(ref, {})
        parts.append(f"<D:response><D:href>{_href(res)}</D:href>")
        if mode == "propname":
            parts.append(_propstat(_empty(n) for n in [*_live_names(res), *dead]))
        else:
            wanted = [*_live_names(res), *dead] if mode == "allprop" else names
            found, missing = _values(res, wanted, dead, ref in listing.locked)
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


def _live_names(res: _DAVResource) -> list[str]:
    names = ["resourcetype", "displayname", "getlastmodified", "creationdate",
             "lockdiscovery", "supportedlock"]
    if not res.is_collection:
        names += ["getcontentlength", "getcontenttype", "getetag"]
    return [DAV + name for name in names]


def _values(res: _DAVResource, names: Iterable[str], dead: dict[str, bytes],
            locked: bool) -> tuple[list[str], list[str]]:
    found, missing = [], []
    for name in names:
        value = _live(res, name[len(DAV):], locked) if name.startswith(DAV) else None
        if value is None and name in dead:
            stored = dead[name]
            value = stored.decode("utf-8") if isinstance(stored, bytes) else stored
        if value is None:
            missing.append(name)
        else:
            found.append(value)
    return found, missing


def _live(res: _DAVResource, local: str, locked: bool) -> str | None:
    info = res.info
    if local == "resourcetype":
        if res.is_collection:
            return "<D:resourcetype><D:collection/></D:resourcetype>"
        return "<D:resourcetype/>"  # every byte counts: Windows drops replies over 1 MB
    if local == "displayname":
        return f"<D:displayname>{escape(res.get_display_name())}</D:displayname>"
    if local in ("getlastmodified", "creationdate"):
        stamp = res.get_last_modified() if local == "getlastmodified" \
            else res.get_creation_date()
        if stamp is None:
            return None
        text = _http_date(int(stamp)) if local == "getlastmodified" else _iso_date(int(stamp))
        return f"<D:{local}>{text}</D:{local}>"
    if local == "lockdiscovery":
        return _lockdiscovery(res) if locked else "<D:lockdiscovery/>"
    if local == "supportedlock":
        return SUPPORTED_LOCK
    if res.is_collection:
        return None
    if local == "getcontentlength":
        return f"<D:getcontentlength>{int(info.get('size') or 0)}</D:getcontentlength>"
    if local == "getcontenttype":
        return f"<D:getcontenttype>{escape(res.get_content_type())}</D:getcontenttype>"
    if local == "getetag":
        return f'<D:getetag>"{escape(res.get_etag())}"</D:getetag>'
    return None


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
