"""Attacks on tenant boundaries: nothing of acme may reach a globex user.

acme keeps a sentinel file; every attack checks that its content never shows
up in a response and that acme's storage is untouched afterwards.

Every attack runs twice: signed in as the tenants' local users, and as Active
Directory accounts - acme's in CORP.EXAMPLE.TEST, globex's in OTHER.EXAMPLE.TEST,
two real Samba DCs (tests/support/samba_ad.py) - with the same storage, mounts
and rules. A :class:`Cast` names who plays each part. The attacks that exist only
with directories (a domain's account through the other tenant's host name, the
other domain's group of the same name, the other domain's NetBIOS name, a cached
login answering for the other tenant) follow at the end.
"""

from __future__ import annotations

import base64
import itertools
import socket
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support import samba_ad, tenants
from tests.support.live import Live, live_server, two_tenant_server

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

Login = tuple[str, str]


@dataclass(frozen=True)
class Cast:
    """Who signs in for each part of the attacks: (login, password)."""

    intruder: Login  # a globex user
    intruder_bare: Login  # the same, without its domain
    owner: Login  # an acme user; reads the sentinel
    owner_shouting: Login  # the owner's login in capitals
    twin: Login  # a globex user with the owner's name and password
    colleague: Login  # another acme user
    finance: Login  # an acme user in its group finance
    not_finance: Login  # an acme user outside it


LOCAL = Cast(intruder=DAVE, intruder_bare=("dave", "dave-secret"), owner=ACME_ALICE,
             owner_shouting=("ALICE@ACME.EXAMPLE", "alice-secret"), twin=GLOBEX_ALICE,
             colleague=("bob@acme.example", "bob-secret"), finance=CAROL,
             not_finance=ACME_ALICE)


def directory_cast(corp: samba_ad.Domain, other: samba_ad.OtherDomain) -> Cast:
    """The parts played by accounts of CORP (acme) and OTHER (globex), in every login form."""
    return Cast(intruder=(other.oscar.upn, other.oscar.password),
                intruder_bare=(other.oscar.user, other.oscar.password),
                owner=(corp.alice.upn, corp.alice.password),
                owner_shouting=(corp.alice.upn.upper(), corp.alice.password),
                twin=(other.alice.upn, other.alice.password),  # alice@other..., same password
                colleague=(f"CORP\\{corp.bob.user}", corp.bob.password),
                finance=(f"CORP\\{corp.ivan.user}", corp.ivan.password),
                not_finance=(corp.bob.upn, corp.bob.password))


@dataclass(frozen=True)
class Setup:
    live: Live
    cast: Cast


@pytest.fixture(scope="module")
def local_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("isolation")
    (base / "acme-root").mkdir()
    (base / "acme-root" / "secret.txt").write_bytes(SENTINEL)
    with two_tenant_server(base) as live:
        yield Setup(live, LOCAL)


@pytest.fixture(scope="module")
def corp() -> samba_ad.Domain:
    return samba_ad.domain()


@pytest.fixture(scope="module")
def other() -> samba_ad.OtherDomain:
    return samba_ad.other_domain()


@pytest.fixture(scope="module")
def ad_setup(tmp_path_factory: pytest.TempPathFactory, corp: samba_ad.Domain,
             other: samba_ad.OtherDomain) -> Iterator[Setup]:
    """The same two tenants, acme's accounts in CORP and globex's in OTHER."""
    base = tmp_path_factory.mktemp("isolation-ad")
    (base / "acme-root").mkdir()
    (base / "acme-root" / "secret.txt").write_bytes(SENTINEL)
    config = tenants.build(tenants.two_tenants_on_two_domains(base, corp, other))
    with live_server(config) as live:
        live.base = base
        yield Setup(live, directory_cast(corp, other))


@pytest.fixture(scope="module", params=["local", "ad"])
def setup(request: pytest.FixtureRequest) -> Setup:
    return request.getfixturevalue(f"{request.param}_setup")


@pytest.fixture(scope="module")
def server(setup: Setup) -> Live:
    return setup.live


@pytest.fixture(scope="module")
def cast(setup: Setup) -> Cast:
    return setup.cast


def acme_files(base) -> set[str]:
    return {str(p.relative_to(base)) for p in base.glob("acme-*/**/*")}


def raw_request(port: int, method: str, target: str, login: tuple[str, str],
                headers: dict[str, str] | None = None, host: str = "127.0.0.1",
                source: str | None = None) -> bytes:
    """Send the request line exactly as given (no client-side normalisation), from the
    loopback address ``source`` if given."""
    auth = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Authorization: Basic {auth}",
             "Content-Length: 0", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port),
                                  source_address=(source, 0) if source else None) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        sock.settimeout(10)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("target", TRAVERSALS)
@pytest.mark.parametrize("method", ["GET", "PROPFIND", "DELETE", "PUT"])
def test_path_traversal_never_reaches_another_tenant(server, cast, target, method):
    before = acme_files(server.base)
    reply = raw_request(server.port, method, target, cast.intruder, {"Depth": "1"})
    assert SENTINEL not in reply
    assert str(server.base).encode() not in reply  # no server paths in errors
    assert (server.base / "acme-root" / "secret.txt").read_bytes() == SENTINEL
    assert acme_files(server.base) == before


def test_login_of_one_tenant_through_another_tenants_host_fails(server, cast):
    reply = raw_request(server.port, "PROPFIND", "/", cast.intruder, {"Depth": "0"},
                        host=f"acme.localhost:{server.port}")
    assert reply.startswith(b"HTTP/1.1 401")
    bare = raw_request(server.port, "GET", "/secret.txt", cast.intruder_bare,
                       host=f"acme.localhost:{server.port}")
    assert bare.startswith(b"HTTP/1.1 401") and SENTINEL not in bare


def test_same_user_name_and_password_stay_in_their_tenant(server, cast):
    globex_alice = server.session(*cast.twin)
    assert globex_alice.get(server.url + "/secret.txt").status_code == 404
    assert globex_alice.put(server.url + "/mine.txt", data=b"globex").status_code == 201
    assert (server.base / "globex-root" / "mine.txt").read_bytes() == b"globex"
    assert not (server.base / "acme-root" / "mine.txt").exists()


@pytest.mark.parametrize("method", ["COPY", "MOVE"])
def test_destination_in_another_tenant_or_host_stays_home(server, cast, method):
    dave = server.session(*cast.intruder)
    dave.put(server.url + f"/{method}.txt", data=b"dave")
    before = acme_files(server.base)
    for destination in (f"http://acme.localhost:{server.port}/stolen-{method}.txt",
                        f"{server.url}/../acme-root/stolen-{method}.txt",
                        f"{server.url}/%2e%2e/acme-root/stolen-{method}.txt",
                        f"http://evil.example/stolen-{method}.txt"):
        dave.request(method, server.url + f"/{method}.txt",
                     headers={"Destination": destination, "Overwrite": "T"})
    assert acme_files(server.base) == before


def test_lock_tokens_do_not_cross_tenants(server, cast):
    acme, globex = server.session(*cast.owner), server.session(*cast.twin)
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
    bob = server.session(*cast.colleague)
    assert bob.put(server.url + "/same-name.txt", data=b"b").status_code == 423
    assert acme.request("UNLOCK", server.url + "/same-name.txt",
                        headers={"Lock-Token": token}).status_code == 204


def test_dead_properties_do_not_cross_tenants(server, cast):
    acme, globex = server.session(*cast.owner), server.session(*cast.twin)
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


def test_case_and_unicode_spellings_do_not_bypass_rules(server, cast):
    carol, alice = server.session(*cast.finance), server.session(*cast.not_finance)
    assert carol.request("MKCOL", server.url + "/finance").status_code in (201, 405)
    assert carol.put(server.url + "/finance/payroll.txt",
                     data=b"salaries").status_code in (201, 204)
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


def test_upper_case_login_is_the_same_user(server, cast):
    shouting = server.session(*cast.owner_shouting)
    assert shouting.get(server.url + "/secret.txt").content == SENTINEL


def test_broken_mount_fails_alone(server, cast):
    alice = server.session(*cast.owner)
    listing = alice.request("PROPFIND", server.url + "/broken/", headers={"Depth": "1"})
    assert (listing.status_code, listing.headers.get("Retry-After")) == (503, "5")
    assert alice.put(server.url + "/broken/x.txt", data=b"x").status_code == 503
    root = alice.request("PROPFIND", server.url + "/", headers={"Depth": "1"})
    assert root.status_code == 207 and "broken" in root.text
    assert not (server.base / "acme-root" / "broken").exists()


# -- only with directories: acme on CORP, globex on OTHER ---------------------------------

_addresses = (f"127.77.{n // 250}.{n % 250 + 1}" for n in itertools.count())


def attack(live: Live, login: Login, method: str = "PROPFIND", path: str = "/",
           host: str | None = None, **headers: str) -> bytes:
    """One request from a loopback address of its own: no other attempt's failures can
    lock it out, so a 401 is the login's own answer. ``host``: a tenant's host name."""
    if method == "PROPFIND":
        headers.setdefault("Depth", "1")
    return raw_request(live.port, method, path, login, headers,
                       host=f"{host}:{live.port}" if host else "127.0.0.1",
                       source=next(_addresses))


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def login_forms(account: samba_ad.Account, netbios: str, bare: bool = True) -> list[str]:
    """Every way to type ``account``: UPN (also in capitals), NETBIOS\\name (also in
    other cases, and with the doubled backslash some Windows clients send), the bare name."""
    user = account.user
    forms = [account.upn, account.upn.upper(), f"{netbios}\\{user}",
             f"{netbios.lower()}\\{user.upper()}", f"{netbios}\\\\{user}"]
    return [*forms, user] if bare else forms


ACME_HOST, GLOBEX_HOST = "acme.localhost", "globex.localhost"


@pytest.mark.parametrize("name", ["ivan", "lena", "alice"])
def test_a_corp_account_through_globex_host_name_is_refused(ad_setup, corp, name):
    """OTHER has an alice too, with CORP's alice's password: on globex's host her bare
    name is that other person (globex's files); every qualified form is nobody there."""
    live, account = ad_setup.live, getattr(corp, name)
    for login in login_forms(account, "CORP"):
        credentials = (login, account.password)
        home = attack(live, credentials, host=ACME_HOST)
        assert status(home) == 207 and b"secret.txt" in home, login  # a good login ...
        for method, path in (("PROPFIND", "/"), ("GET", "/secret.txt")):
            reply = attack(live, credentials, method, path, host=GLOBEX_HOST)
            assert SENTINEL not in reply
            if login == "alice":  # OTHER's alice: globex's files
                assert status(reply) == {"PROPFIND": 207, "GET": 404}[method]
                assert method == "GET" or b"secret.txt" not in reply
            else:
                assert status(reply) == 401, (login, reply[:300])
                assert b"secret.txt" not in reply


@pytest.mark.parametrize(("name", "bare"), [("olga", True), ("oscar", True),
                                            ("alice", False)])
def test_an_other_account_through_acme_host_name_is_refused(ad_setup, other, name, bare):
    """alice: OTHER's alice has CORP's alice's password - no way to become CORP's (her
    bare name on acme's host is CORP's alice, rightly)."""
    live, account = ad_setup.live, getattr(other, name)
    for login in login_forms(account, "OTHER", bare):
        credentials = (login, account.password)
        assert status(attack(live, credentials, host=GLOBEX_HOST)) == 207, login
        for method, path in (("PROPFIND", "/"), ("GET", "/secret.txt"),
                             ("PUT", "/planted.txt")):
            reply = attack(live, credentials, method, path, host=ACME_HOST)
            assert status(reply) == 401, (login, reply[:300])
            assert SENTINEL not in reply and b"secret.txt" not in reply
    assert not (live.base / "acme-root" / "planted.txt").exists()


def test_the_other_domains_finance_group_gets_none_of_acmes_finance_rights(ad_setup, corp,
                                                                           other):
    """Both domains have a group Finance; acme's rule ``@finance`` is CORP's."""
    live = ad_setup.live
    ivan = live.session(f"CORP\\{corp.ivan.user}", corp.ivan.password)
    assert ivan.request("MKCOL", live.url + "/finance").status_code in (201, 405)
    assert ivan.put(live.url + "/finance/budget.txt", data=b"CORP-BUDGET").status_code in (
        201, 204)
    # at home OTHER's Finance is a group like any other: olga writes globex's /finance
    olga = live.session(other.olga.upn, other.olga.password)
    oscar = live.session(other.oscar.upn, other.oscar.password)
    assert olga.request("MKCOL", live.url + "/finance").status_code in (201, 405)
    assert olga.put(live.url + "/finance/olga.txt", data=b"o").status_code in (201, 204)
    # (409: to oscar, /finance is not there to hold a file)
    assert oscar.put(live.url + "/finance/oscar.txt", data=b"o").status_code in (403, 409)
    assert not (live.base / "globex-root" / "finance" / "oscar.txt").exists()
    before = acme_files(live.base)
    for login in login_forms(other.olga, "OTHER"):
        credentials = (login, other.olga.password)
        for method, path in (("GET", "/finance/budget.txt"), ("PROPFIND", "/finance/"),
                             ("PUT", "/finance/olga.txt"), ("DELETE", "/finance/budget.txt")):
            reply = attack(live, credentials, method, path, host=ACME_HOST)
            assert status(reply) == 401, (login, method)
            # without a host name a qualified login selects its tenant: globex's /finance
            # (a bare one, no tenant: 401)
            reply = attack(live, credentials, method, path)
            assert b"CORP-BUDGET" not in reply
            if method == "PROPFIND":
                assert b"budget.txt" not in reply
                assert (b"olga.txt" in reply) == (login != other.olga.user)
    assert acme_files(live.base) == before
    assert (live.base / "acme-root" / "finance" / "budget.txt").read_bytes() == b"CORP-BUDGET"
    assert (live.base / "globex-root" / "finance" / "olga.txt").exists()


def test_the_other_domains_netbios_name_signs_in_no_one_of_this_one(ad_setup, corp, other):
    live = ad_setup.live
    for login, password in ((r"OTHER\ivan", corp.ivan.password),
                            ("ivan@other.example.test", corp.ivan.password),
                            (r"CORP\olga", other.olga.password),
                            ("olga@corp.example.test", other.olga.password)):
        for host in (None, ACME_HOST, GLOBEX_HOST):
            reply = attack(live, (login, password), host=host)
            assert status(reply) == 401, (login, host)
            assert b"secret.txt" not in reply
    # CORP's alice typing OTHER\alice with her password is OTHER's alice (another
    # person, who happens to have that password): globex's files, never acme's
    for host in (None, GLOBEX_HOST):
        reply = attack(live, (r"OTHER\alice", corp.alice.password), host=host)
        assert status(reply) == 207 and b"secret.txt" not in reply
    assert status(attack(live, (r"OTHER\alice", corp.alice.password), host=ACME_HOST)) == 401
    reply = attack(live, (r"OTHER\alice", corp.alice.password), "PUT", "/typed-other.txt")
    assert status(reply) in (201, 204)
    assert (live.base / "globex-root" / "typed-other.txt").exists()
    assert not (live.base / "acme-root" / "typed-other.txt").exists()


def test_a_lock_of_corp_alice_is_of_no_use_to_other_users(ad_setup, corp, other):
    live, path = ad_setup.live, "/locked-by-alice.txt"
    alice = live.session(rf"CORP\{corp.alice.user}", corp.alice.password)
    assert alice.put(live.url + path, data=b"alice's").status_code == 201
    lock = alice.request("LOCK", live.url + path, data=LOCK_BODY,
                         headers={"Content-Type": "application/xml"})
    assert lock.status_code == 200
    token = lock.headers["Lock-Token"]
    # globex's file of the same name, not locked for globex: a PUT to it checks an If
    # header (to a new file, wsgidav checks none)
    twin = live.session(other.alice.upn, other.alice.password)
    assert twin.put(live.url + path, data=b"globex's").status_code == 201
    for account in (other.alice, other.olga, other.oscar):
        credentials = (account.upn, account.password)
        for host in (None, GLOBEX_HOST):
            unlock = attack(live, credentials, "UNLOCK", path, host, **{"Lock-Token": token})
            assert status(unlock) in (400, 403, 409, 412), account
            put = attack(live, credentials, "PUT", path, host, If=f"({token})")
            assert status(put) == 412, account  # the token is nobody's here
            found = attack(live, credentials, "PROPFIND", path, host)
            assert token.strip("<>").encode() not in found
        for method in ("UNLOCK", "PUT", "DELETE"):  # acme's own file
            reply = attack(live, credentials, method, path, ACME_HOST,
                           **{"Lock-Token": token, "If": f"({token})"})
            assert status(reply) == 401, (account, method)
    assert (live.base / "acme-root" / "locked-by-alice.txt").read_bytes() == b"alice's"
    bob = live.session(rf"CORP\{corp.bob.user}", corp.bob.password)
    assert bob.put(live.url + path, data=b"b").status_code == 423  # still locked
    assert alice.put(live.url + path, data=b"v2", headers={"If": f"({token})"}
                     ).status_code == 204
    assert alice.request("UNLOCK", live.url + path,
                         headers={"Lock-Token": token}).status_code == 204


def test_a_cached_login_never_answers_for_the_other_tenant(ad_setup, corp, other):
    live = ad_setup.live
    # bare "ivan" on acme's host is CORP\ivan, now remembered for acme ...
    ivan = ("ivan", corp.ivan.password)
    assert status(attack(live, ivan, host=ACME_HOST)) == 207
    for _ in range(2):  # ... and never answers on globex's, where "ivan" is OTHER's
        reply = attack(live, ivan, host=GLOBEX_HOST)
        assert status(reply) == 401 and b"secret.txt" not in reply
    # alice@corp remembered; OTHER's alice with the same password is herself
    assert b"secret.txt" in attack(live, (corp.alice.upn, corp.alice.password))
    twin = attack(live, (other.alice.upn, corp.alice.password))
    assert status(twin) == 207 and b"secret.txt" not in twin
    assert b"secret.txt" in attack(live, (corp.alice.upn, corp.alice.password))
    # a refusal remembered for globex refuses nothing on acme
    lena = ("lena", corp.lena.password)
    for _ in range(2):
        assert status(attack(live, lena, host=GLOBEX_HOST)) == 401
    home = attack(live, lena, host=ACME_HOST)
    assert status(home) == 207 and b"secret.txt" in home


LOCK_BODY = ('<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
             '<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>'
             '<D:owner>attacker-test</D:owner></D:lockinfo>')
