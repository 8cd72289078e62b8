"""WebDAV behaviour through a real cheroot server on loopback."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import socket

import pytest
import requests

from mosaic.dav.errors import to_dav_error
from tests.support.live import two_tenant_server

ALICE = ("alice@acme.example", "alice-secret")
BOB = ("ACME\\bob", "bob-secret")
CAROL = ("carol@acme.example", "carol-secret")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("dav")
    with two_tenant_server(base) as live:
        yield live


def propfind(session: requests.Session, url: str, depth: str = "1") -> requests.Response:
    return session.request("PROPFIND", url, headers={"Depth": depth})


def hrefs(response: requests.Response) -> list[str]:
    return re.findall(r"<(?:\w+:)?href>([^<]+)</(?:\w+:)?href>", response.text)


def test_options_is_answered_without_credentials(server):
    response = requests.options(server.url + "/")
    assert response.status_code == 200
    assert "1" in response.headers["DAV"] and "2" in response.headers["DAV"]
    assert response.headers["MS-Author-Via"] == "DAV"


def test_everything_else_requires_login(server):
    assert requests.request("PROPFIND", server.url + "/", headers={"Depth": "1"}).status_code \
        == 401
    wrong = requests.Session()
    wrong.auth = ("alice@acme.example", "nope")
    assert propfind(wrong, server.url + "/").status_code == 401


def test_put_get_roundtrip_with_strong_unquoted_etag(server):
    alice = server.session(*ALICE)
    body = os.urandom(300_000)
    put = alice.put(server.url + "/report.bin", data=body)
    assert put.status_code == 201
    etag = put.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith('W/')
    get = alice.get(server.url + "/report.bin")
    assert get.content == body and get.headers["ETag"] == etag
    assert (server.base / "acme-root" / "report.bin").read_bytes() == body
    ranged = alice.get(server.url + "/report.bin", headers={"Range": "bytes=1000-1999"})
    assert ranged.status_code == 206 and ranged.content == body[1000:2000]
    again = alice.put(server.url + "/report.bin", data=b"v2")
    assert again.status_code == 204 and again.headers["ETag"] != etag


def test_mount_points_are_listed_as_folders(server):
    alice = server.session(*ALICE)
    listing = propfind(alice, server.url + "/")
    assert listing.status_code == 207
    names = {h.rstrip("/").rsplit("/", 1)[-1] for h in hrefs(listing)}
    assert {"projects", "home", "library"} <= names
    nested = propfind(alice, server.url + "/projects/")
    assert any(h.rstrip("/").endswith("/projects/archive") for h in hrefs(nested))


def test_writes_land_in_the_mounted_backend(server):
    alice = server.session(*ALICE)
    assert alice.put(server.url + "/projects/plan.txt", data=b"plan").status_code == 201
    assert alice.put(server.url + "/projects/archive/old.txt", data=b"old").status_code == 201
    assert (server.base / "acme-projects" / "plan.txt").read_bytes() == b"plan"
    assert (server.base / "acme-archive" / "old.txt").read_bytes() == b"old"
    assert not (server.base / "acme-projects" / "archive" / "old.txt").exists()


def test_move_and_copy_across_mounts_stream_the_data(server):
    alice = server.session(*ALICE)
    alice.put(server.url + "/projects/cross.txt", data=b"x" * 5000)
    moved = alice.request("MOVE", server.url + "/projects/cross.txt",
                          headers={"Destination": server.url + "/home/cross.txt"})
    assert moved.status_code == 201
    assert (server.base / "acme-homes" / "alice" / "cross.txt").read_bytes() == b"x" * 5000
    assert not (server.base / "acme-projects" / "cross.txt").exists()
    alice.request("MKCOL", server.url + "/projects/tree")
    alice.put(server.url + "/projects/tree/a.txt", data=b"a")
    copied = alice.request("COPY", server.url + "/projects/tree",
                           headers={"Destination": server.url + "/tree-copy"})
    assert copied.status_code == 201
    assert (server.base / "acme-root" / "tree-copy" / "a.txt").read_bytes() == b"a"


def test_depth_infinity_propfind_is_refused(server):
    alice = server.session(*ALICE)
    for headers in ({"Depth": "infinity"}, {}):
        response = alice.request("PROPFIND", server.url + "/", headers=headers)
        assert response.status_code == 403
        assert "propfind-finite-depth" in response.text


def test_head_and_get_on_a_folder_answer_200(server):
    alice = server.session(*ALICE)
    assert alice.head(server.url + "/projects/").status_code == 200
    assert alice.get(server.url + "/projects/").status_code == 200


def test_read_only_mount_refuses_writes(server):
    (server.base / "acme-library").mkdir(exist_ok=True)
    (server.base / "acme-library" / "book.txt").write_bytes(b"book")
    alice = server.session(*ALICE)
    assert alice.get(server.url + "/library/book.txt").content == b"book"
    assert alice.put(server.url + "/library/new.txt", data=b"x").status_code == 403
    assert alice.delete(server.url + "/library/book.txt").status_code == 403
    assert (server.base / "acme-library" / "book.txt").exists()


def test_mount_points_cannot_be_deleted_or_moved(server):
    alice = server.session(*ALICE)
    assert alice.delete(server.url + "/projects").status_code == 403
    moved = alice.request("MOVE", server.url + "/home",
                          headers={"Destination": server.url + "/elsewhere"})
    assert moved.status_code == 403


def test_per_user_homes_are_separate(server):
    alice, bob = server.session(*ALICE), server.session(*BOB)
    alice.put(server.url + "/home/doc.txt", data=b"alice")
    bob.put(server.url + "/home/doc.txt", data=b"bob")
    assert alice.get(server.url + "/home/doc.txt").content == b"alice"
    assert bob.get(server.url + "/home/doc.txt").content == b"bob"


def test_lock_on_a_home_file_does_not_block_another_users_home(server):
    alice, bob = server.session(*ALICE), server.session(*BOB)
    alice.put(server.url + "/home/locked.txt", data=b"a")
    bob.put(server.url + "/home/locked.txt", data=b"b")
    lock = alice.request("LOCK", server.url + "/home/locked.txt", data=LOCK_BODY,
                         headers={"Content-Type": "application/xml", "Timeout": "Second-60"})
    assert lock.status_code == 200
    assert bob.put(server.url + "/home/locked.txt", data=b"b2").status_code == 204
    assert alice.put(server.url + "/home/locked.txt", data=b"a2").status_code == 423


def test_lock_owner_is_canonical_whatever_the_login_spelling(server):
    by_upn = server.session("alice@acme.example", "alice-secret")
    by_netbios = server.session("ACME\\alice", "alice-secret")
    by_upn.put(server.url + "/shared-lock.txt", data=b"x")
    lock = by_upn.request("LOCK", server.url + "/shared-lock.txt", data=LOCK_BODY,
                          headers={"Content-Type": "application/xml"})
    token = lock.headers["Lock-Token"]
    put = by_netbios.put(server.url + "/shared-lock.txt", data=b"y",
                         headers={"If": f"({token})"})
    assert put.status_code == 204
    assert by_netbios.request("UNLOCK", server.url + "/shared-lock.txt",
                              headers={"Lock-Token": token}).status_code == 204


def test_permission_rules_hide_and_forbid(server):
    carol, alice = server.session(*CAROL), server.session(*ALICE)
    assert carol.request("MKCOL", server.url + "/finance").status_code == 201
    assert carol.put(server.url + "/finance/q3.xlsx", data=b"numbers").status_code == 201
    assert alice.get(server.url + "/finance/q3.xlsx").status_code == 404
    names = " ".join(hrefs(propfind(alice, server.url + "/")))
    assert "finance" not in names
    assert "finance" in " ".join(hrefs(propfind(carol, server.url + "/")))
    assert alice.put(server.url + "/finance/x.txt", data=b"x").status_code in (403, 404, 409)
    assert alice.request("MKCOL", server.url + "/public").status_code == 201
    bob = server.session(*BOB)
    assert bob.put(server.url + "/public/x.txt", data=b"x").status_code == 403
    assert alice.put(server.url + "/public/x.txt", data=b"x").status_code == 201
    assert bob.get(server.url + "/public/x.txt").content == b"x"


def test_readers_may_neither_lock_nor_annotate_what_they_cannot_write(server):
    """A lock blocks every writer (for up to a month) and dead properties are what
    Windows keeps a file's attributes in (hidden, read-only): both are writes."""
    alice, bob = server.session(*ALICE), server.session(*BOB)
    assert alice.request("MKCOL", server.url + "/public").status_code in (201, 405)
    assert alice.put(server.url + "/public/memo.txt", data=b"memo").status_code in (201, 204)
    (server.base / "acme-library").mkdir(exist_ok=True)
    (server.base / "acme-library" / "atlas.txt").write_bytes(b"atlas")
    annotate = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" '
                'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>'
                "<Z:Win32FileAttributes>00000002</Z:Win32FileAttributes>"
                "</D:prop></D:set></D:propertyupdate>")
    for reader, path in ((bob, "/public/memo.txt"), (alice, "/library/atlas.txt")):
        lock = reader.request("LOCK", server.url + path, data=LOCK_BODY,
                              headers={"Content-Type": "application/xml"})
        assert lock.status_code == 403, path
        assert reader.request("PROPPATCH", server.url + path, data=annotate).status_code == 403
        found = reader.request("PROPFIND", server.url + path, headers={"Depth": "0"})
        assert "Win32FileAttributes" not in found.text and "locktoken" not in found.text
    assert alice.put(server.url + "/public/memo.txt", data=b"v2").status_code == 204
    # the writer may do both
    lock = alice.request("LOCK", server.url + "/public/memo.txt", data=LOCK_BODY,
                         headers={"Content-Type": "application/xml"})
    assert lock.status_code == 200
    assert alice.request("PROPPATCH", server.url + "/public/memo.txt", data=annotate,
                         headers={"If": f"({lock.headers['Lock-Token']})"}).status_code == 207
    assert alice.request("UNLOCK", server.url + "/public/memo.txt",
                         headers={"Lock-Token": lock.headers["Lock-Token"]}).status_code == 204


def test_aborted_put_leaves_neither_file_nor_damage(server):
    alice = server.session(*ALICE)
    alice.put(server.url + "/keep.txt", data=b"previous version")
    for name in ("keep.txt", "new-partial.txt"):
        _send_truncated_put(server.port, "/" + name, announced=1_000_000, sent=100_000)
    assert alice.get(server.url + "/keep.txt").content == b"previous version"
    assert alice.get(server.url + "/new-partial.txt").status_code == 404
    leftovers = [p.name for p in (server.base / "acme-root").iterdir() if "upload" in p.name]
    assert leftovers == []


def _send_truncated_put(port: int, path: str, announced: int, sent: int) -> None:
    import base64

    auth = base64.b64encode(b"alice@acme.example:alice-secret").decode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall((f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}"
                      f"\r\nContent-Length: {announced}\r\n\r\n").encode())
        sock.sendall(b"z" * sent)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        while sock.recv(65536):
            pass


def test_large_file_streams_intact(server):
    alice = server.session(*ALICE)
    chunk = os.urandom(1 << 20)

    def body():
        for _ in range(48):
            yield chunk

    assert alice.put(server.url + "/big.bin", data=body()).status_code == 201
    digest = hashlib.sha256()
    with alice.get(server.url + "/big.bin", stream=True) as response:
        for part in response.iter_content(1 << 20):
            digest.update(part)
    assert digest.hexdigest() == hashlib.sha256(chunk * 48).hexdigest()


def test_win32_lastmodified_proppatch_sets_mtime(server):
    alice = server.session(*ALICE)
    alice.put(server.url + "/dated.txt", data=b"d")
    body = ('<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" '
            'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32LastModifiedTime>'
            'Wed, 01 Jan 2020 10:00:00 GMT</Z:Win32LastModifiedTime><Z:Win32FileAttributes>'
            '00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>')
    response = alice.request("PROPPATCH", server.url + "/dated.txt", data=body,
                             headers={"Content-Type": "text/xml",
                                      "User-Agent": "Microsoft-WebDAV-MiniRedir/10.0.19045"})
    assert response.status_code == 207 and "200 OK" in response.text
    assert int((server.base / "acme-root" / "dated.txt").stat().st_mtime) == 1577872800


LOCK_BODY = ('<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
             '<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>'
             '<D:owner>test</D:owner></D:lockinfo>')


def _propfind_xml(session, url, body, depth="1"):
    import xml.etree.ElementTree as ET

    response = session.request("PROPFIND", url, headers={"Depth": depth}, data=body)
    assert response.status_code == 207
    return ET.fromstring(response.content)  # well-formed or this raises


def test_propfind_reports_found_and_missing_properties_separately(server):
    alice = server.session(*ALICE)
    alice.request("MKCOL", server.url + "/pf")
    alice.put(server.url + "/pf/a & b.txt", data=b"12345")
    body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:z"><D:prop>'
            '<D:getcontentlength/><D:getetag/><Z:absent/></D:prop></D:propfind>')
    tree = _propfind_xml(alice, server.url + "/pf/", body)
    responses = {r.findtext("{DAV:}href"): r for r in tree.iter("{DAV:}response")}
    assert set(responses) == {"/pf/", "/pf/a%20%26%20b.txt"}
    member = responses["/pf/a%20%26%20b.txt"]
    statuses = {ps.findtext("{DAV:}status"): ps for ps in member.iter("{DAV:}propstat")}
    found = statuses["HTTP/1.1 200 OK"].find("{DAV:}prop")
    assert found.findtext("{DAV:}getcontentlength") == "5"
    etag = found.findtext("{DAV:}getetag")
    assert etag == alice.head(server.url + "/pf/a%20%26%20b.txt").headers["ETag"]
    assert statuses["HTTP/1.1 404 Not Found"].find("{DAV:}prop/{urn:z}absent") is not None


def test_propfind_allprop_includes_dead_properties_and_locks(server):
    alice = server.session(*ALICE)
    alice.request("MKCOL", server.url + "/pf2")
    alice.put(server.url + "/pf2/x.txt", data=b"x")
    alice.request("PROPPATCH", server.url + "/pf2/x.txt", data=(
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:M="urn:m"><D:set><D:prop>'
        '<M:colour>r\u00f6d &amp; blue</M:colour></D:prop></D:set></D:propertyupdate>'
    ).encode())
    token = alice.request("LOCK", server.url + "/pf2/x.txt", data=LOCK_BODY,
                          headers={"Content-Type": "application/xml"}).headers["Lock-Token"]
    try:
        tree = _propfind_xml(alice, server.url + "/pf2/", "")
        member = next(r for r in tree.iter("{DAV:}response")
                  if r.findtext("{DAV:}href") == "/pf2/x.txt")
        assert member.findtext(".//{urn:m}colour") == "r\u00f6d & blue"
        assert member.findtext(".//{DAV:}locktoken/{DAV:}href") == token.strip("<>")
        folder = next(r for r in tree.iter("{DAV:}response")
                  if r.findtext("{DAV:}href") == "/pf2/")
        assert folder.find(".//{DAV:}resourcetype/{DAV:}collection") is not None
        assert folder.find(".//{urn:m}colour") is None
    finally:
        alice.request("UNLOCK", server.url + "/pf2/x.txt", headers={"Lock-Token": token})


def test_propname_lists_names_only(server):
    alice = server.session(*ALICE)
    alice.put(server.url + "/names.txt", data=b"n")
    tree = _propfind_xml(alice, server.url + "/names.txt",
                         '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:propname/>'
                         '</D:propfind>', depth="0")
    prop = tree.find(".//{DAV:}prop")
    assert {child.tag for child in prop} >= {"{DAV:}getetag", "{DAV:}getcontentlength",
                                             "{DAV:}resourcetype"}
    assert all(not (child.text or "").strip() and len(child) == 0 for child in prop)


def test_deleting_a_tree_with_a_locked_member_deletes_nothing(server):
    alice, bob = server.session(*ALICE), server.session(*BOB)
    alice.request("MKCOL", server.url + "/tree-del")
    alice.request("MKCOL", server.url + "/tree-del/sub")
    for name in ("a.txt", "sub/b.txt"):
        alice.put(server.url + f"/tree-del/{name}", data=b"keep")
    token = alice.request("LOCK", server.url + "/tree-del/sub/b.txt", data=LOCK_BODY,
                          headers={"Content-Type": "application/xml"}).headers["Lock-Token"]
    assert bob.delete(server.url + "/tree-del").status_code == 423
    assert alice.delete(server.url + "/tree-del").status_code == 423  # no token sent
    assert (server.base / "acme-root" / "tree-del" / "a.txt").exists()
    assert (server.base / "acme-root" / "tree-del" / "sub" / "b.txt").exists()
    alice.request("UNLOCK", server.url + "/tree-del/sub/b.txt", headers={"Lock-Token": token})
    assert bob.delete(server.url + "/tree-del").status_code == 204
    assert not (server.base / "acme-root" / "tree-del").exists()


def test_chunked_upload_is_checked_against_the_announced_size(server):
    alice = server.session(*ALICE)

    def chunks(data: bytes):
        yield data[:3]
        yield data[3:]

    ok = alice.put(server.url + "/finder.txt", data=chunks(b"0123456789"),
                   headers={"X-Expected-Entity-Length": "10"})
    assert ok.status_code == 201
    assert (server.base / "acme-root" / "finder.txt").read_bytes() == b"0123456789"
    short = alice.put(server.url + "/finder.txt", data=chunks(b"01234"),
                      headers={"X-Expected-Entity-Length": "10"})
    assert short.status_code == 400
    assert (server.base / "acme-root" / "finder.txt").read_bytes() == b"0123456789"


def test_moving_a_tree_with_a_locked_member_is_refused(server):
    alice, bob = server.session(*ALICE), server.session(*BOB)
    alice.request("MKCOL", server.url + "/tree-mv")
    alice.put(server.url + "/tree-mv/locked.txt", data=b"x")
    token = alice.request("LOCK", server.url + "/tree-mv/locked.txt", data=LOCK_BODY,
                          headers={"Content-Type": "application/xml"}).headers["Lock-Token"]
    moved = bob.request("MOVE", server.url + "/tree-mv",
                        headers={"Destination": server.url + "/tree-mv2"})
    assert moved.status_code == 423
    assert (server.base / "acme-root" / "tree-mv" / "locked.txt").exists()
    alice.request("UNLOCK", server.url + "/tree-mv/locked.txt", headers={"Lock-Token": token})


@pytest.mark.parametrize(("code", "status"), [(errno.ENOSPC, 507), (errno.EDQUOT, 507),
                                              (errno.EFBIG, 413), (errno.EIO, 500)])
def test_a_full_disk_or_quota_is_507_and_names_no_backend_path(code, status):
    error = to_dav_error(OSError(code, os.strerror(code), "/srv/acme-disk/secret/f.bin"))
    assert error.value == status
    assert "/srv" not in (error.context_info or "")
