"""Attacks on tenant boundaries: nothing of acme may reach a globex user.

acme keeps a sentinel file; every attack checks that its content never shows
up in a response and that acme's storage is untouched afterwards.
"""

from __future__ import annotations

import base64
import socket
import unicodedata

import pytest

from tests.support.live import two_tenant_server

SENTINEL = b"ACME-SECRET-7f3a"
DAVE = ("dave@globex.example", "dave-secret")
GLOBEX_ALICE = ("alice@globex.example", "alice-secret")
ACME_ALICE = ("alice@acme.example", "alice-secret")
CAROL = ("carol@acme.example", "carol-secret")

TRAVERSALS = [
    "/../acme-root/secret.txt",
    "/%2e%2e/acme-root/secret.txt",
    "/%2E%2E/%2E%2E/acme-root/secret.txt",
    "/..%2facme-root%2fsecret.txt",
    "/..%5cacme-root%5csecret.txt",
    "/%252e%252e/acme-root/secret.txt",
    "/%c0%ae%c0%ae/acme-root/secret.txt",
    "/..\\acme-root\\secret.txt",
    "/./../../acme-root/secret.txt",
    "//../acme-root/secret.txt",
    "/%00/../acme-root/secret.txt",
    "/home/../../acme-root/secret.txt",
    "/%2e%2e%2f%2e%2e%2facme-root/secret.txt",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("isolation")
    (base / "acme-root").mkdir()
    (base / "acme-root" / "secret.txt").write_bytes(SENTINEL)
    with two_tenant_server(base) as live:
        yield live


def acme_files(base) -> set[str]:
    return {str(p.relative_to(base)) for p in base.glob("acme-*/**/*")}


def raw_request(port: int, method: str, target: str, login: tuple[str, str],
                headers: dict[str, str] | None = None, host: str = "127.0.0.1") -> bytes:
    """Send the request line exactly as given (no client-side normalisation)."""
    auth = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Authorization: Basic {auth}",
             "Content-Length: 0", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        sock.settimeout(10)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("target", TRAVERSALS)
@pytest.mark.parametrize("method", ["GET", "PROPFIND", "DELETE", "PUT"])
def test_path_traversal_never_reaches_another_tenant(server, target, method):
    before = acme_files(server.base)
    reply = raw_request(server.port, method, target, DAVE, {"Depth": "1"})
    assert SENTINEL not in reply
    assert str(server.base).encode() not in reply  # no server paths in errors
    assert (server.base / "acme-root" / "secret.txt").read_bytes() == SENTINEL
    assert acme_files(server.base) == before


def test_login_of_one_tenant_through_another_tenants_host_fails(server):
    reply = raw_request(server.port, "PROPFIND", "/", DAVE, {"Depth": "0"},
                        host=f"acme.localhost:{server.port}")
    assert reply.startswith(b"HTTP/1.1 401")
    bare = raw_request(server.port, "GET", "/secret.txt", ("dave", "dave-secret"),
                       host=f"acme.localhost:{server.port}")
    assert bare.startswith(b"HTTP/1.1 401") and SENTINEL not in bare


def test_same_user_name_and_password_stay_in_their_tenant(server):
    globex_alice = server.session(*GLOBEX_ALICE)
    assert globex_alice.get(server.url + "/secret.txt").status_code == 404
    assert globex_alice.put(server.url + "/mine.txt", data=b"globex").status_code == 201
    assert (server.base / "globex-root" / "mine.txt").read_bytes() == b"globex"
    assert not (server.base / "acme-root" / "mine.txt").exists()


@pytest.mark.parametrize("method", ["COPY", "MOVE"])
def test_destination_in_another_tenant_or_host_stays_home(server, method):
    dave = server.session(*DAVE)
    dave.put(server.url + f"/{method}.txt", data=b"dave")
    before = acme_files(server.base)
    for destination in (f"http://acme.localhost:{server.port}/stolen-{method}.txt",
                        f"{server.url}/../acme-root/stolen-{method}.txt",
                        f"{server.url}/%2e%2e/acme-root/stolen-{method}.txt",
                        f"http://evil.example/stolen-{method}.txt"):
        dave.request(method, server.url + f"/{method}.txt",
                     headers={"Destination": destination, "Overwrite": "T"})
    assert acme_files(server.base) == before


def test_lock_tokens_do_not_cross_tenants(server):
    acme, globex = server.session(*ACME_ALICE), server.session(*GLOBEX_ALICE)
    acme.put(server.url + "/same-name.txt", data=b"acme")
    globex.put(server.url + "/same-name.txt", data=b"globex")
    lock = acme.request("LOCK", server.url + "/same-name.txt", data=LOCK_BODY,
                        headers={"Content-Type": "application/xml"})
    assert lock.status_code == 200
    token = lock.headers["Lock-Token"]
    # globex is not blocked by acme's lock on the same path ...
    assert globex.put(server.url + "/same-name.txt", data=b"g2").status_code == 204
    discovery = globex.request("PROPFIND", server.url + "/same-name.txt",
                               headers={"Depth": "0"}).text
    assert token.strip("<>") not in discovery
    # ... and cannot use or release acme's token.
    assert globex.request("UNLOCK", server.url + "/same-name.txt",
                          headers={"Lock-Token": token}).status_code in (400, 403, 409, 412)
    bob = server.session("bob@acme.example", "bob-secret")
    assert bob.put(server.url + "/same-name.txt", data=b"b").status_code == 423
    assert acme.request("UNLOCK", server.url + "/same-name.txt",
                        headers={"Lock-Token": token}).status_code == 204


def test_dead_properties_do_not_cross_tenants(server):
    acme, globex = server.session(*ACME_ALICE), server.session(*GLOBEX_ALICE)
    for session in (acme, globex):
        session.put(server.url + "/props.txt", data=b"p")
    body = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:M="urn:m">'
            '<D:set><D:prop><M:tag>acme-private-tag</M:tag></D:prop></D:set>'
            '</D:propertyupdate>')
    assert acme.request("PROPPATCH", server.url + "/props.txt", data=body).status_code == 207
    found = globex.request("PROPFIND", server.url + "/props.txt", headers={"Depth": "0"},
                           data='<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/>'
                                '</D:propfind>')
    assert "acme-private-tag" not in found.text
    mine = acme.request("PROPFIND", server.url + "/props.txt", headers={"Depth": "0"},
                        data='<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/>'
                             '</D:propfind>')
    assert "acme-private-tag" in mine.text


def test_case_and_unicode_spellings_do_not_bypass_rules(server):
    carol, alice = server.session(*CAROL), server.session(*ACME_ALICE)
    assert carol.request("MKCOL", server.url + "/finance").status_code in (201, 405)
    carol.put(server.url + "/finance/payroll.txt", data=b"salaries")
    for spelling in ("/FINANCE/payroll.txt", "/Finance/payroll.txt", "/finance/payroll.txt"):
        assert alice.get(server.url + spelling).status_code in (403, 404)
        assert alice.put(server.url + spelling, data=b"x").status_code in (403, 404, 409)
    nfc = unicodedata.normalize("NFC", "\u00c9quipe")
    nfd = unicodedata.normalize("NFD", nfc)
    from urllib.parse import quote

    for name in (nfc, nfd, nfd.upper(), nfd.lower()):
        assert alice.request("MKCOL", server.url + "/" + quote(name)).status_code in (403, 404)
    assert not any(unicodedata.normalize("NFC", p.name).casefold() == nfc.casefold()
                   for p in (server.base / "acme-root").iterdir())


def test_upper_case_login_is_the_same_user(server):
    shouting = server.session("ALICE@ACME.EXAMPLE", "alice-secret")
    assert shouting.get(server.url + "/secret.txt").content == SENTINEL


def test_broken_mount_fails_alone(server):
    alice = server.session(*ACME_ALICE)
    assert alice.request("PROPFIND", server.url + "/broken/",
                         headers={"Depth": "1"}).status_code == 503
    assert alice.put(server.url + "/broken/x.txt", data=b"x").status_code == 503
    root = alice.request("PROPFIND", server.url + "/", headers={"Depth": "1"})
    assert root.status_code == 207 and "broken" in root.text
    assert not (server.base / "acme-root" / "broken").exists()


LOCK_BODY = ('<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
             '<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>'
             '<D:owner>attacker-test</D:owner></D:lockinfo>')
