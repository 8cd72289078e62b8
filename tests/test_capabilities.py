"""What a user sees over WebDAV of the capabilities the VFS reads.

One tenant with a local root and a local mount (case-sensitive, any name), an
S3 mount (moto: case-sensitive, any name) and an SMB mount (the test smbd:
case-insensitive, case-preserving, Windows' reserved names refused). The
flags in each provider's Capabilities decide; no test here names a backend
in the code under test.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import requests

from tests.support import moto, samba, tenants
from tests.support.live import Live, live_server

LOGIN = ("alice@acme.example", "alice-secret")
GLOBEX = ("dave@globex.example", "dave-secret")
HREF = re.compile(r"<(?:\w+:)?href>([^<]+)</(?:\w+:)?href>")
RESERVED = {  # name -> words of the rule the answer must name
    "CON": "device name", "aux.txt": "device name", "com1.log": "device name",
    "dot.": "ends with a dot", "space ": "ends with a dot or a space",
    "a:b": "character Windows reserves", "star*": "character Windows reserves",
    "pipe|d": "character Windows reserves", 'quote"d': "character Windows reserves",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("capabilities")
    data = tenants.two_tenants(base)
    mounts = data["tenants"]["acme"]["mounts"]
    mounts["/smb"] = {"provider": samba.provider("conformance", path=samba.fresh_folder(),
                                                 listing_cache_seconds=0)}
    mounts["/s3"] = {"provider": moto.provider(moto.fresh_bucket())}
    # globex: a share as the root, a local folder mounted below it
    data["tenants"]["globex"]["root"] = samba.provider("conformance", path=samba.fresh_folder(),
                                                       listing_cache_seconds=0)
    data["tenants"]["globex"]["mounts"] = {"/team/local": {"provider": tenants.local(
        base / "globex-local")}}
    with live_server(tenants.build(data)) as live:
        live.base = base
        yield live


def dav(live: Live, method: str, path: str, login: tuple[str, str] = LOGIN,
        **kwargs: Any) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if method == "PROPFIND":
        headers.setdefault("Depth", "1")
    if "destination" in kwargs:
        # quoted: a header value's trailing space would be dropped in transit
        headers["Destination"] = live.url + quote(kwargs.pop("destination"))
    return requests.request(method, live.url + path, auth=login, headers=headers, timeout=30,
                            **kwargs)


def listed(live: Live, folder: str) -> set[str]:
    reply = dav(live, "PROPFIND", folder)
    assert reply.status_code == 207, reply.text
    hrefs = {unquote(h) for h in HREF.findall(reply.text)}
    return {h[len(folder):].rstrip("/") for h in hrefs if h.rstrip("/") != folder.rstrip("/")}


def folder_in(live: Live, mount: str) -> str:
    """A new empty folder in ``mount`` ("/smb", "/s3", "/projects"): its path with "/"."""
    path = f"{mount}/{secrets.token_hex(4)}/"
    assert dav(live, "MKCOL", path).status_code == 201
    return path


def put(live: Live, path: str, body: bytes) -> int:
    return dav(live, "PUT", path, data=body).status_code


def says(reply: requests.Response, *words: str) -> bool:
    text = html.unescape(reply.text)
    return all(word in text for word in words)


# -- case --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_case_only_rename_on_a_case_insensitive_share(server: Live, kind: str) -> None:
    folder = folder_in(server, "/smb")
    if kind == "file":
        assert put(server, folder + "report.txt", b"precious") == 201
    else:
        assert dav(server, "MKCOL", folder + "report.txt").status_code == 201
        assert put(server, folder + "report.txt/inner", b"precious") == 201
    # Overwrite: F too: the destination is the source, not a member in the way
    for old, new, overwrite in [("report.txt", "Report.txt", "T"),
                                ("Report.txt", "REPORT.TXT", "F")]:
        reply = dav(server, "MOVE", folder + old, destination=folder + new,
                    headers={"Overwrite": overwrite})
        assert reply.status_code in (201, 204), reply.text
        assert listed(server, folder) == {new}
    inside = "REPORT.TXT" if kind == "file" else "REPORT.TXT/inner"
    assert dav(server, "GET", folder + inside).content == b"precious"
    # a COPY onto another case of its own name is a copy onto itself
    reply = dav(server, "COPY", folder + "REPORT.TXT", destination=folder + "report.txt")
    assert reply.status_code == 403 and says(reply, "same file")
    assert listed(server, folder) == {"REPORT.TXT"}


def test_names_equal_only_under_casefold_are_two_files_on_the_share(server: Live) -> None:
    """Windows and Samba compare names by simple upper case: "straße" and "STRASSE"
    are two files (casefold() would call them one), so a COPY between them is a copy
    and a MOVE under Overwrite: F onto the other one is refused, never an overwrite."""
    folder = folder_in(server, "/smb")
    assert put(server, folder + "straße.txt", b"sharp s") == 201
    reply = dav(server, "COPY", folder + "straße.txt", destination=folder + "STRASSE.txt")
    assert reply.status_code == 201, reply.text
    assert put(server, folder + "STRASSE.txt", b"double s") == 204
    assert listed(server, folder) == {"straße.txt", "STRASSE.txt"}
    reply = dav(server, "MOVE", folder + "straße.txt", destination=folder + "STRASSE.txt",
                headers={"Overwrite": "F"})
    assert reply.status_code == 412
    assert dav(server, "GET", folder + "STRASSE.txt").content == b"double s"
    assert dav(server, "GET", folder + "straße.txt").content == b"sharp s"


@pytest.mark.parametrize(("mount", "entries"), [("/smb", 1), ("/s3", 2), ("/projects", 2)])
def test_put_of_another_case_beside_a_name(server: Live, mount: str, entries: int) -> None:
    """On the share A.txt overwrites a.txt (one entry, first spelling kept);
    elsewhere they are two files."""
    folder = folder_in(server, mount)
    assert put(server, folder + "a.txt", b"lower") == 201
    assert put(server, folder + "A.txt", b"upper") == (204 if entries == 1 else 201)
    assert len(listed(server, folder)) == entries
    assert dav(server, "GET", folder + "a.txt").content == (b"upper" if entries == 1
                                                             else b"lower")


# -- reserved names ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RESERVED))
def test_reserved_name_is_a_4xx_naming_the_rule_on_the_share(server: Live, name: str) -> None:
    folder = folder_in(server, "/smb")
    assert put(server, folder + "ok.txt", b"ok") == 201
    replies = [dav(server, "PUT", folder + name, data=b"x"),
               dav(server, "MKCOL", folder + name),
               dav(server, "MOVE", folder + "ok.txt", destination=folder + name),
               dav(server, "COPY", folder + "ok.txt", destination=folder + name),
               dav(server, "COPY", "/projects/", destination=folder + name)]
    for reply in replies:
        assert reply.status_code == 400, (reply.request.method, reply.status_code)
        # the rule, and whose rule it is: the store of the mount
        assert says(reply, "Windows", RESERVED[name], "/smb"), reply.text
    assert listed(server, folder) == {"ok.txt"}


@pytest.mark.parametrize("mount", ["/projects", "/s3"])
def test_reserved_names_are_fine_elsewhere(server: Live, mount: str) -> None:
    folder = folder_in(server, mount)
    for name in ["con", "CON", "aux.txt", "a:b", "dot."]:
        assert put(server, folder + name, name.encode()) == 201, name
        assert dav(server, "GET", folder + name).content == name.encode()


# -- trees crossing into the share: all or nothing -------------------------------------


def _tree_with(live: Live, mount: str, names: list[str]) -> str:
    folder = folder_in(live, mount)
    assert dav(live, "MKCOL", folder + "sub").status_code == 201
    assert put(live, folder + "first.txt", b"first") == 201
    for name in names:
        assert put(live, folder + "sub/" + name, name.encode()) == 201
    return folder


def _snapshot(live: Live, folder: str) -> dict[str, bytes]:
    return {name: dav(live, "GET", folder + "sub/" + name).content
            for name in listed(live, folder + "sub/")}


@pytest.mark.parametrize("method", ["MOVE", "COPY"])
@pytest.mark.parametrize("source_mount", ["/projects", "/s3"])
@pytest.mark.parametrize(("names", "status", "words"), [
    (["a.txt", "A.txt"], 409, ("'A.txt' and 'a.txt'", "case-insensitive")),
    (["fine.txt", "aux.txt"], 400, ("aux.txt", "Windows device name")),
], ids=["colliding", "reserved"])
def test_a_tree_that_cannot_go_whole_into_the_share_is_refused_whole(
        server: Live, method: str, source_mount: str, names: list[str], status: int,
        words: tuple[str, ...], caplog: pytest.LogCaptureFixture) -> None:
    source = _tree_with(server, source_mount, names)
    before = _snapshot(server, source)
    target = folder_in(server, "/smb") + "moved"
    with caplog.at_level(logging.INFO):
        reply = dav(server, method, source, destination=target)
    # a client's request, refused: no error logged, no traceback
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert reply.status_code == status, reply.text
    # which names of the tree, in which folder of the source
    assert says(reply, *words, source + "sub"), reply.text
    assert dav(server, "PROPFIND", target, headers={"Depth": "0"}).status_code == 404
    assert _snapshot(server, source) == before
    assert listed(server, source) == {"first.txt", "sub"}


@pytest.mark.parametrize("method", ["MOVE", "COPY"])
def test_a_tree_that_fits_crosses_into_the_share(server: Live, method: str) -> None:
    # two names casefold() would make one, but Windows and Samba do not: no false refusal
    source = _tree_with(server, "/s3", ["a.txt", "straße.txt", "STRASSE.txt"])
    target = folder_in(server, "/smb") + "moved"
    reply = dav(server, method, source, destination=target)
    assert reply.status_code == 201, reply.text
    assert listed(server, target + "/sub/") == {"a.txt", "straße.txt", "STRASSE.txt"}
    assert dav(server, "GET", target + "/sub/STRASSE.txt").content == b"STRASSE.txt"
    gone = dav(server, "PROPFIND", source, headers={"Depth": "0"}).status_code
    assert gone == (404 if method == "MOVE" else 207)


def test_a_tree_from_the_share_goes_anywhere(server: Live, tmp_path: Path) -> None:
    """A case-insensitive source never collides in a case-sensitive store."""
    source = _tree_with(server, "/smb", ["a.txt", "B.txt"])
    target = folder_in(server, "/projects") + "moved"
    assert dav(server, "MOVE", source, destination=target).status_code == 201
    assert listed(server, target + "/sub/") == {"a.txt", "B.txt"}


def test_a_copy_on_the_share_that_takes_a_mount_below_it_along_is_checked(server: Live) -> None:
    """A folder of a share-rooted tenant holding a local mount: copied within the
    share, the mount's names come along from a case-sensitive store."""
    for name in ("a.txt", "A.txt"):
        assert dav(server, "PUT", "/team/local/" + name, GLOBEX, data=name.encode()) \
            .status_code in (201, 204)
    target = f"/copy-{secrets.token_hex(4)}"
    reply = dav(server, "COPY", "/team/", GLOBEX, destination=target)
    assert reply.status_code == 409 and says(reply, "'A.txt' and 'a.txt'"), reply.text
    assert dav(server, "PROPFIND", target, GLOBEX, headers={"Depth": "0"}).status_code == 404
