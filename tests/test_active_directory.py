"""Active Directory sign-in against a real Samba AD DC (tests/support/samba_ad.py).

The Authenticator alone for the directory's answers, a real WsgiDAVApp for what
a client sees (401, 503, permissions by nested group), and the ``mosaic
ad-check`` command as an admin runs it.
"""

from __future__ import annotations

import base64
import io
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
import yaml
from argon2 import PasswordHasher

from mosaic.app import build_app
from mosaic.auth.authenticator import Authenticator, Client
from mosaic.auth.directory.connections import DomainConnections, make_controller
from mosaic.auth.errors import DirectoryUnavailable
from mosaic.auth.principal import Principal
from mosaic.config.holder import ConfigHolder
from mosaic.config.loader import load_config
from mosaic.config.schema import Config
from mosaic.core import passwords
from mosaic.dav.store import database_url, prepare_database
from tests.support import samba_ad

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
BREAK_GLASS = "break-glass password"
HOST = "files.acme.example"


@pytest.fixture(scope="module")
def corp() -> samba_ad.Domain:
    return samba_ad.domain()


def directory(corp: samba_ad.Domain, **options: Any) -> dict[str, Any]:
    return {"name": corp.dns_name, "netbios": corp.netbios, "urls": [corp.ldaps_url],
            "ca_file": str(corp.ca_file), "server_name": corp.server_name, **options}


def tenant(corp: samba_ad.Domain, *domains: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"domains": ["acme.example"], "hosts": [HOST], "root": {"type": "memory"},
            "groups": ["admins"],
            "users": {"root": {"password_hash": passwords.hash_password(BREAK_GLASS, FAST),
                               "groups": ["admins"]}},
            "active_directory": list(domains) or [directory(corp)], **extra}


def make_config(corp: samba_ad.Domain, *domains: dict[str, Any], **extra: Any) -> Config:
    return Config.model_validate({"tenants": {
        "acme": tenant(corp, *domains, **extra),
        "globex": {"domains": ["globex.example"], "hosts": ["files.globex.example"],
                   "root": {"type": "memory"}},
    }})


def sign_in(auth: Authenticator, login: str, password: str,
            host: str | None = HOST, address: str = "192.0.2.10") -> Principal | None:
    return auth.authenticate(login, password, Client(address, host))


@pytest.fixture
def auth(corp: samba_ad.Domain) -> Authenticator:
    config = make_config(corp)
    return Authenticator(lambda: config)


class BindCounter:
    """Counts the operations DomainConnections runs against DCs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = DomainConnections.run

        def counted(connections: DomainConnections, operation: Any) -> Any:
            self.calls += 1
            return real(connections, operation)

        monkeypatch.setattr(DomainConnections, "run", counted)


# -- who signs in -----------------------------------------------------------------------

@pytest.mark.parametrize(("login", "host"), [
    ("alice@corp.example.test", None), ("CORP\\alice", None), ("corp\\ALICE", None),
    ("Alice@CORP.EXAMPLE.TEST", HOST), ("alice", HOST),
])
def test_every_login_form_is_the_same_account(auth: Authenticator, corp: samba_ad.Domain,
                                              login: str, host: str | None) -> None:
    principal = sign_in(auth, login, corp.alice.password, host)
    assert principal is not None
    assert (principal.tenant, principal.user, principal.home) == ("acme", "CORP\\alice", "alice")
    assert principal.canonical == "CORP\\alice@acme"
    assert principal.source == "ad:CORP" and principal.method == "password"
    assert principal.account_id and len(principal.account_id) == 36  # objectGUID
    assert principal.display_name


def test_groups_are_nested_and_include_the_primary_group(auth: Authenticator,
                                                         corp: samba_ad.Domain) -> None:
    alice = sign_in(auth, "CORP\\alice", corp.alice.password)
    assert alice is not None
    # Accounting directly, Finance and Staff through nesting, Domain Users as primary group
    for group in ("Accounting", "Finance", "Staff", "Domain Users"):
        assert group in alice.groups and f"CORP\\{group}" in alice.groups
    assert "Engineering" not in alice.groups
    bob = sign_in(auth, "CORP\\bob", corp.bob.password)
    assert bob is not None and "Engineering" in bob.groups and "Finance" not in bob.groups
    carol = sign_in(auth, "CORP\\carol", corp.carol.password)
    assert carol is not None and carol.groups == {"Domain Users", "CORP\\Domain Users"}


@pytest.mark.parametrize(("account", "reason"), [
    ("alice", "wrong password (or no such user) (AD 52e)"),
    ("dave", "account disabled (AD 533)"),
    ("erin", "account locked out (AD 775)"),
    ("frank", "password must be changed at next logon (AD 773)"),
    ("gina", "account expired (AD 701)"),
    ("hank", "outside the account's logon hours (AD 530)"),
])
def test_each_refusal_is_logged_with_its_reason(auth: Authenticator, corp: samba_ad.Domain,
                                                caplog: pytest.LogCaptureFixture,
                                                account: str, reason: str) -> None:
    password = getattr(corp, account).password
    if account == "alice":
        password = "not-" + password
    caplog.set_level(logging.INFO, logger="mosaic")
    assert sign_in(auth, f"CORP\\{account}", password) is None
    assert f"login CORP\\{account} refused: {reason}" in caplog.text
    assert password not in caplog.text


@pytest.mark.parametrize("login", ["nobody@corp.example.test", "CORP\\nobody",
                                   "alice)(sAMAccountName=*", "CORP\\*", "CORP\\alice\\x"])
def test_unknown_or_crafted_names_are_refused(auth: Authenticator, corp: samba_ad.Domain,
                                              login: str) -> None:
    assert sign_in(auth, login, corp.alice.password) is None


def test_an_empty_password_is_never_an_anonymous_bind(auth: Authenticator,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    counter = BindCounter(monkeypatch)
    # AD accepts a simple bind with a name and no password as "unauthenticated"
    assert sign_in(auth, "CORP\\alice", "") is None
    assert counter.calls == 0


def test_local_users_sign_in_beside_the_directory(auth: Authenticator) -> None:
    root = sign_in(auth, "root", BREAK_GLASS)
    assert root is not None and root.user == "root" and root.source == "local"


# -- what it costs ---------------------------------------------------------------------

def test_after_the_first_login_no_request_reaches_a_dc(auth: Authenticator,
                                                       corp: samba_ad.Domain,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    counter = BindCounter(monkeypatch)
    for _ in range(20):
        assert sign_in(auth, "CORP\\alice", corp.alice.password) is not None
    assert counter.calls == 1
    assert sign_in(auth, "CORP\\alice", "wrong") is None  # a new password is asked
    assert counter.calls == 2


def bad_password_count(corp: samba_ad.Domain, account: str) -> int:
    server = ldap3.Server("127.0.0.1", port=636, use_ssl=True, tls=ldap3.Tls(
        validate=2, ca_certs_file=str(corp.ca_file), valid_names=[corp.server_name]))
    with ldap3.Connection(server, f"{corp.netbios}\\{corp.admin.user}", corp.admin.password,
                          auto_bind=True) as conn:
        conn.search(corp.dn(account), "(objectClass=user)", search_scope=ldap3.BASE,
                    attributes=["badPwdCount"])
        return int(conn.entries[0].badPwdCount.value or 0)


def test_a_stale_password_retried_does_not_lock_the_account(
        auth: Authenticator, corp: samba_ad.Domain) -> None:
    assert bad_password_count(corp, "ivan") == 0
    for _ in range(3 * samba_ad.LOCKOUT_THRESHOLD):  # Windows retrying an old password
        assert sign_in(auth, "CORP\\ivan", "an old password") is None
    assert bad_password_count(corp, "ivan") == 1
    assert sign_in(auth, "CORP\\ivan", corp.ivan.password) is not None


# -- domain controllers -------------------------------------------------------------------

@pytest.fixture
def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_next_dc_answers_when_the_first_is_down(corp: samba_ad.Domain, dead_port: int,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(corp, directory(corp, urls=[f"ldaps://127.0.0.1:{dead_port}",
                                                     corp.ldaps_url]))
    auth = Authenticator(lambda: config)
    assert sign_in(auth, "CORP\\alice", corp.alice.password) is not None
    assert sign_in(auth, "CORP\\bob", corp.bob.password) is not None
    assert caplog.text.count(f"127.0.0.1:{dead_port}") == 1  # skipped after its failure


def test_starttls_works_like_ldaps(corp: samba_ad.Domain) -> None:
    config = make_config(corp, directory(corp, urls=[corp.ldap_url]))
    auth = Authenticator(lambda: config)
    principal = sign_in(auth, "CORP\\alice", corp.alice.password)
    assert principal is not None and "Finance" in principal.groups


@pytest.mark.parametrize("change", [{"server_name": "intruder.example.test"},
                                    {"ca_file": None}])
def test_an_unverified_dc_is_never_used(corp: samba_ad.Domain, change: dict[str, Any],
                                        tmp_path: Path) -> None:
    for url in (corp.ldaps_url, corp.ldap_url):
        config = make_config(corp, directory(corp, urls=[url], **change))
        auth = Authenticator(lambda config=config: config)
        with pytest.raises(DirectoryUnavailable, match=r"(?i)certificate"):
            sign_in(auth, "CORP\\alice", corp.alice.password)


def test_a_verified_session_outlives_its_dcs(corp: samba_ad.Domain, dead_port: int) -> None:
    config = make_config(corp)
    auth = Authenticator(lambda: config)
    assert sign_in(auth, "CORP\\alice", corp.alice.password) is not None
    source = auth.directories.source(config, "acme", 0)
    source.connections.close()  # every DC goes away
    source.connections.controllers = [make_controller(source.domain,
                                                      f"ldaps://127.0.0.1:{dead_port}")]
    assert sign_in(auth, "CORP\\alice", corp.alice.password) is not None  # cached
    with pytest.raises(DirectoryUnavailable):
        sign_in(auth, "CORP\\bob", corp.bob.password)  # a new login cannot be checked


# -- who may sign in -----------------------------------------------------------------

def test_restriction_to_an_ou(corp: samba_ad.Domain) -> None:
    config = make_config(corp, directory(corp, restrict_to_ou=corp.users_ou_dn))
    auth = Authenticator(lambda: config)
    assert sign_in(auth, "CORP\\alice", corp.alice.password) is not None
    assert sign_in(auth, "CORP\\carol", corp.carol.password) is None  # in CN=Users


def test_restriction_to_a_group_counts_nesting(corp: samba_ad.Domain) -> None:
    config = make_config(corp, directory(corp, restrict_to_group="Staff"))
    auth = Authenticator(lambda: config)
    assert sign_in(auth, "CORP\\alice", corp.alice.password) is not None  # Accounting<Finance<Staff
    assert sign_in(auth, "CORP\\bob", corp.bob.password) is None


def test_a_service_account_looks_accounts_up(corp: samba_ad.Domain) -> None:
    config = make_config(corp, directory(corp, service_account={
        "user": corp.svc_mosaic.upn, "password": corp.svc_mosaic.password}))
    auth = Authenticator(lambda: config)
    source = auth.directories.source(auth.current_config(), "acme", 0)
    principal = source.lookup("alice")
    assert principal is not None and principal.user == "CORP\\alice"
    assert principal.method == "kerberos" and "Finance" in principal.groups
    assert source.lookup("nobody") is None


# -- through WebDAV ----------------------------------------------------------------------

def dav(app: Any, method: str, path: str, login: str | None, password: str = "",
        body: bytes = b"", host: str = HOST, **headers: str) -> tuple[int, dict[str, str]]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": host, "SERVER_PORT": "443", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": host, "REMOTE_ADDR": "192.0.2.10", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr, "wsgi.url_scheme": "https", "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
        "CONTENT_LENGTH": str(len(body)),
    }
    if login is not None:
        token = base64.b64encode(f"{login}:{password}".encode()).decode()
        environ["HTTP_AUTHORIZATION"] = f"Basic {token}"
    environ.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
    answer: list[Any] = []

    def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer.extend([int(status.split()[0]), dict(hdrs)])

    b"".join(app(environ, start_response))
    return answer[0], answer[1]


def in_process_app(tmp_path: Path, raw: dict[str, Any]) -> Any:
    """The WSGI app ``mosaic serve`` runs, for the config ``raw``."""
    path = tmp_path / "mosaic.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    prepare_database(database_url(config.server))
    return build_app(ConfigHolder(path, config))


@pytest.fixture
def app(corp: samba_ad.Domain, tmp_path: Path) -> Iterator[Any]:
    rules = {"/finance": {"@Finance": "write", "*": "none"},
             "/staff": {"@CORP\\Staff": "read", "CORP\\bob": "write", "*": "none"}}
    raw = {"server": {"data_dir": str(tmp_path / "data")},
           "tenants": {"acme": tenant(corp, permissions=rules,
                                      root={"type": "local", "root": str(tmp_path / "acme")})}}
    (tmp_path / "acme" / "finance").mkdir(parents=True)
    (tmp_path / "acme" / "staff").mkdir()
    yield in_process_app(tmp_path, raw)


def test_nested_groups_decide_what_users_may_write(app: Any, corp: samba_ad.Domain) -> None:
    alice, bob, ivan = corp.alice, corp.bob, corp.ivan
    assert dav(app, "PUT", "/finance/q1.txt", "alice@corp.example.test", alice.password,
               b"numbers")[0] == 201  # Accounting < Finance
    assert dav(app, "PUT", "/finance/q2.txt", "CORP\\ivan", ivan.password, b"x")[0] == 201
    assert dav(app, "GET", "/finance/q1.txt", "CORP\\bob", bob.password)[0] in (403, 404)
    assert dav(app, "PUT", "/staff/memo.txt", "CORP\\bob", bob.password, b"m")[0] == 201
    assert dav(app, "GET", "/staff/memo.txt", "alice", alice.password)[0] == 200  # Staff: read
    assert dav(app, "PUT", "/staff/memo.txt", "alice", alice.password, b"y")[0] == 403


def test_one_account_is_one_lock_owner(app: Any, corp: samba_ad.Domain) -> None:
    body = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            b"</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>")
    assert dav(app, "PUT", "/finance/locked.txt", "CORP\\alice", corp.alice.password,
               b"v1")[0] == 201
    status, headers = dav(app, "LOCK", "/finance/locked.txt", "alice@corp.example.test",
                          corp.alice.password, body, TIMEOUT="Second-60")
    assert status == 200
    token = headers["Lock-Token"]
    assert dav(app, "PUT", "/finance/locked.txt", "alice", corp.alice.password, b"v2",
               IF=f"({token})")[0] == 204
    assert dav(app, "UNLOCK", "/finance/locked.txt", "CORP\\ALICE", corp.alice.password,
               LOCK_TOKEN=token)[0] == 204


def test_clients_see_401_for_refusals_and_503_when_no_dc_answers(
        corp: samba_ad.Domain, tmp_path: Path, dead_port: int) -> None:
    raw = {"server": {"data_dir": str(tmp_path / "data")}, "tenants": {"acme": tenant(
        corp, directory(corp, urls=[f"ldaps://127.0.0.1:{dead_port}"], dc_retry_seconds=7))}}
    app = in_process_app(tmp_path, raw)
    status, headers = dav(app, "PROPFIND", "/", "CORP\\alice", corp.alice.password, DEPTH="0")
    assert (status, headers["Retry-After"]) == (503, "7")
    assert dav(app, "PROPFIND", "/", "root", BREAK_GLASS, DEPTH="0")[0] == 207
    status, headers = dav(app, "PROPFIND", "/", "root", "wrong", DEPTH="0")
    assert (status, headers["WWW-Authenticate"]) == (401, 'Basic realm="Mosaic"')


# -- mosaic ad-check ----------------------------------------------------------------------

def ad_check(tmp_path: Path, corp: samba_ad.Domain, *args: str, stdin: str = "",
             **options: Any) -> subprocess.CompletedProcess[str]:
    raw = {"tenants": {"acme": tenant(corp, directory(corp, **options))}}
    path = tmp_path / "mosaic.yaml"
    path.write_text(yaml.safe_dump(raw))
    return subprocess.run([sys.executable, "-m", "mosaic", "ad-check", str(path), "acme", *args],
                          input=stdin, capture_output=True, text=True, timeout=60, check=False)


def test_ad_check_walks_every_step(tmp_path: Path, corp: samba_ad.Domain) -> None:
    done = ad_check(tmp_path, corp, "alice@corp.example.test", stdin=corp.alice.password + "\n",
                    service_account={"user": corp.svc_mosaic.upn,
                                     "password": corp.svc_mosaic.password})
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for expected in ("ok      TCP connection to 127.0.0.1 port 636",
                     "ok      TLS (LDAPS)", corp.server_name,
                     f"ok      service account {corp.svc_mosaic.upn} bound",
                     "ok      bind as alice@corp.example.test",
                     "ok      account CORP\\alice", "Accounting, Domain Users, Finance, Staff"):
        assert expected in out
    assert corp.alice.password not in out + done.stderr
    assert corp.svc_mosaic.password not in out + done.stderr


def test_ad_check_names_the_failing_step(tmp_path: Path, corp: samba_ad.Domain,
                                         dead_port: int) -> None:
    done = ad_check(tmp_path, corp, "CORP\\dave", stdin=corp.dave.password + "\n",
                    urls=[f"ldaps://127.0.0.1:{dead_port}", corp.ldaps_url])
    assert done.returncode == 1
    assert f"FAILED  TCP connection to 127.0.0.1 port {dead_port}" in done.stdout
    assert "FAILED  bind as CORP\\dave: refused: account disabled (AD 533)" in done.stdout
    done = ad_check(tmp_path, corp, server_name="intruder.example.test")
    assert done.returncode == 1
    assert "FAILED  TLS (LDAPS)" in done.stdout and "intruder.example.test" in done.stdout
