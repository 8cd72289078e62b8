"""``credentials: pass_through``: each AD user reaches the file server as themselves.

Against the real Samba AD DC (tests/support/samba_ad.py) and its own share ``pt``,
whose NT ACLs let Finance (alice, through Accounting) read finance/ and Engineering
(bob) read eng/. The WSGI app ``mosaic serve`` runs is driven in-process; SMB
connections are counted as the kernel sees them (psutil: this process's TCP
connections to the DC's SMB port).
"""

from __future__ import annotations

import base64
import io
import logging
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ldap3
import psutil
import pytest
import smbclient._pool
import yaml
from argon2 import PasswordHasher

from mosaic.app import build_app
from mosaic.config.holder import ConfigHolder
from mosaic.config.loader import load_config
from mosaic.core import passwords
from mosaic.dav.store import database_url, prepare_database
from tests.support import kerberos, samba_ad
from tests.support.kerberos import SERVICE_HOST, kinit, negotiate_header

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ROOT_PASSWORD = "break-glass password"
IDLE_S = 1
KERBEROS_REFUSAL = ("signed in with Kerberos: no password to reach the file server as you; "
                    "sign in with your password")
FINANCE = samba_ad.PT_FOLDERS["finance"][1]
ENG = samba_ad.PT_FOLDERS["eng"][1]


@pytest.fixture(scope="module")
def corp() -> samba_ad.Domain:
    return samba_ad.domain()


def raw_config(corp: samba_ad.Domain, tmp_path: Path, **auth: Any) -> dict[str, Any]:
    (tmp_path / "acme").mkdir(exist_ok=True)
    return {"server": {"data_dir": str(tmp_path / "data"),
                       "auth": {"pass_through_idle_seconds": IDLE_S, **auth}},
            "tenants": {"acme": {
                "hosts": [SERVICE_HOST], "root": {"type": "local", "root": str(tmp_path / "acme")},
                "users": {"root": {"password_hash": passwords.hash_password(ROOT_PASSWORD,
                                                                            FAST)}},
                "active_directory": [{
                    "name": corp.dns_name, "netbios": corp.netbios, "urls": [corp.ldaps_url],
                    "ca_file": str(corp.ca_file), "server_name": corp.server_name,
                    "service_account": {"user": corp.svc_mosaic.upn,
                                        "password": corp.svc_mosaic.password}}],
                "kerberos": {"spn": corp.http_spn, "keytab": str(corp.keytab)},
                "mounts": {"/pt": {"provider": {
                    "type": "smb", "host": "127.0.0.1", "port": corp.smb_port,
                    "share": corp.share, "credentials": "pass_through"}}},
            }}}


class App:
    """The WSGI app of a config file, and what its requests answered."""

    def __init__(self, tmp_path: Path, raw: dict[str, Any]) -> None:
        self.path = tmp_path / "mosaic.yaml"
        self.path.write_text(yaml.safe_dump(raw))
        config = load_config(self.path)
        prepare_database(database_url(config.server))
        self.holder = ConfigHolder(self.path, config)
        self.wsgi = build_app(self.holder)

    def start(self, method: str, path: str, authorization: str | None,
              **headers: str) -> tuple[int, bytes, Iterator[bytes]]:
        """Status, the body's first part and the rest, not read yet (a download in
        progress; the app answers when its first part is asked for)."""
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": SERVICE_HOST, "SERVER_PORT": "443", "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": SERVICE_HOST, "REMOTE_ADDR": "192.0.2.10", "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr, "wsgi.url_scheme": "https", "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
            "CONTENT_LENGTH": "0"}
        if authorization is not None:
            environ["HTTP_AUTHORIZATION"] = authorization
        environ.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
        answer: list[int] = []

        def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
            answer.append(int(status.split()[0]))

        body = iter(self.wsgi(environ, start_response))
        first = next(body, b"")
        return answer[0], first, body

    def request(self, method: str, path: str, authorization: str | None,
                **headers: str) -> tuple[int, str]:
        status, first, body = self.start(method, path, authorization, **headers)
        text = (first + b"".join(body)).decode("utf-8", "replace")
        getattr(body, "close", lambda: None)()
        return status, text

    def listing(self, path: str, authorization: str) -> tuple[int, str]:
        return self.request("PROPFIND", path, authorization, DEPTH="1")

    def reload(self, raw: dict[str, Any]) -> None:
        """Serve ``raw`` from now on, as a reload of the file does (every session ends)."""
        self.path.write_text(yaml.safe_dump(raw))
        assert self.holder.reload()


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def as_user(account: samba_ad.Account) -> str:
    return basic(f"CORP\\{account.user}", account.password)


def smb_connections(corp: samba_ad.Domain) -> int:
    """This process's open TCP connections to the DC's file server."""
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.raddr and c.raddr.port == corp.smb_port
               and c.status == psutil.CONN_ESTABLISHED)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def app(corp: samba_ad.Domain, tmp_path: Path) -> Iterator[App]:
    assert eventually(lambda: smb_connections(corp) == 0)  # counts start from none
    raw = raw_config(corp, tmp_path)
    served = App(tmp_path, raw)
    yield served
    raw["server"]["auth"]["cache_seconds"] = 1  # any change: a reload ends the sessions
    served.reload(raw)


# -- who sees what ----------------------------------------------------------------------

@pytest.mark.parametrize(("who", "readable", "refused", "text"), [
    ("alice", "finance", "eng", FINANCE), ("bob", "eng", "finance", ENG)])
def test_the_share_acls_apply_to_each_user(app: App, corp: samba_ad.Domain, who: str,
                                            readable: str, refused: str, text: str) -> None:
    user = as_user(getattr(corp, who))
    status, listing = app.listing("/pt/", user)
    assert status == 207 and "/pt/finance/" in listing and "/pt/eng/" in listing
    status, listing = app.listing(f"/pt/{readable}/", user)
    assert status == 207 and f"/pt/{readable}/readme.txt" in listing
    assert app.request("GET", f"/pt/{readable}/readme.txt", user) == (200, text)
    status, said = app.listing(f"/pt/{refused}/", user)
    assert status == 403 and "readme" not in said
    status, said = app.request("GET", f"/pt/{refused}/readme.txt", user)
    assert status == 403 and "only" not in said


def test_two_users_of_one_mount_keep_their_own_rights(app: App, corp: samba_ad.Domain) -> None:
    alice, bob = as_user(corp.alice), as_user(corp.bob)
    for _ in range(2):  # interleaved: neither borrows the other's session or listings
        assert "/pt/finance/readme.txt" in app.listing("/pt/finance/", alice)[1]
        assert app.listing("/pt/finance/", bob)[0] == 403
        assert app.request("GET", "/pt/finance/readme.txt", alice) == (200, FINANCE)
        assert app.request("GET", "/pt/finance/readme.txt", bob)[0] == 403
        assert app.request("GET", "/pt/eng/readme.txt", bob) == (200, ENG)
        assert app.request("GET", "/pt/eng/readme.txt", alice)[0] == 403


def test_a_local_user_is_refused_the_mount_only(app: App, caplog: pytest.LogCaptureFixture,
                                               corp: samba_ad.Domain) -> None:
    caplog.set_level(logging.INFO, logger="mosaic")
    root = basic("root", ROOT_PASSWORD)
    status, said = app.listing("/pt/", root)
    assert status == 403 and "root is a local user" in said and "pass_through" in said
    assert app.request("GET", "/pt/finance/readme.txt", root)[0] == 403
    assert app.listing("/", root)[0] == 207  # the rest of the tenant answers
    assert app.request("PUT", "/notes.txt", root)[0] == 201
    assert "tenant acme: root may not use /pt: " in caplog.text
    assert smb_connections(corp) == 0  # never reached the file server as anybody


@pytest.fixture
def kerberos_env(corp: samba_ad.Domain, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return kerberos.private_credentials(corp, tmp_path, monkeypatch)


def test_a_kerberos_user_is_told_to_sign_in_with_a_password(
        app: App, corp: samba_ad.Domain, kerberos_env: dict[str, str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mosaic")
    kinit(corp.alice, kerberos_env)
    for method, path in (("PROPFIND", "/pt/"), ("GET", "/pt/finance/readme.txt")):
        status, said = app.request(method, path, negotiate_header(), DEPTH="1")
        assert status == 403 and KERBEROS_REFUSAL in said, said
    assert f"tenant acme: CORP\\alice may not use /pt: {KERBEROS_REFUSAL}" in caplog.text
    assert "Traceback" not in caplog.text
    assert smb_connections(corp) == 0  # no access under another identity
    # the rest of the tenant works for the same ticket
    assert app.listing("/", negotiate_header())[0] == 207
    assert app.request("PUT", "/from-kerberos.txt", negotiate_header())[0] == 201
    # and the same account with its password reaches the share
    assert app.request("GET", "/pt/finance/readme.txt", as_user(corp.alice)) == (200, FINANCE)


# -- connections ------------------------------------------------------------------------

def test_each_user_has_connections_of_their_own(app: App, corp: samba_ad.Domain) -> None:
    alice, bob = as_user(corp.alice), as_user(corp.bob)
    assert app.listing("/pt/", alice)[0] == 207
    assert smb_connections(corp) == 1
    assert app.listing("/pt/", bob)[0] == 207
    assert smb_connections(corp) == 2
    for _ in range(3):  # later requests reuse each user's own
        assert app.request("GET", "/pt/finance/readme.txt", alice)[0] == 200
        assert app.request("GET", "/pt/eng/readme.txt", bob)[0] == 200
    assert smb_connections(corp) == 2
    # another spelling of alice is the same account: the same session
    assert app.request("GET", "/pt/finance/readme.txt",
                       basic(corp.alice.upn, corp.alice.password))[0] == 200
    assert smb_connections(corp) == 2
    assert smbclient._pool._SMB_CONNECTIONS == {}  # smbclient's global pool: never used


def test_a_wrong_password_is_refused_before_any_connection(app: App,
                                                           corp: samba_ad.Domain) -> None:
    assert app.request("GET", "/pt/finance/readme.txt", as_user(corp.alice))[0] == 200
    wrong = basic("CORP\\alice", "not-" + corp.alice.password)
    assert app.request("GET", "/pt/finance/readme.txt", wrong)[0] == 401
    assert smb_connections(corp) == 1


def test_connections_close_when_the_session_ends(app: App, corp: samba_ad.Domain) -> None:
    alice, bob = as_user(corp.alice), as_user(corp.bob)
    assert app.listing("/pt/finance/", alice)[0] == 207
    assert app.listing("/pt/eng/", bob)[0] == 207
    assert smb_connections(corp) == 2
    # IDLE_S without a request, and the reaper's look (a quarter of it) later: closed
    assert eventually(lambda: smb_connections(corp) == 0, timeout=IDLE_S + 3)
    # alice comes back: a new session, signed in again
    assert app.request("GET", "/pt/finance/readme.txt", alice) == (200, FINANCE)
    assert smb_connections(corp) == 1


def test_a_download_keeps_its_session_open(app: App, corp: samba_ad.Domain) -> None:
    alice = as_user(corp.alice)
    status, first, body = app.start("GET", "/pt/finance/readme.txt", alice)
    assert status == 200  # the file stays open until the body is read to its end
    time.sleep(IDLE_S + 1.5)
    assert smb_connections(corp) == 1
    assert first + b"".join(body) == FINANCE.encode()
    getattr(body, "close", lambda: None)()
    assert eventually(lambda: smb_connections(corp) == 0, timeout=IDLE_S + 3)


def test_a_config_reload_ends_every_session(app: App, corp: samba_ad.Domain,
                                            tmp_path: Path) -> None:
    raw = raw_config(corp, tmp_path)
    raw["server"]["auth"]["pass_through_idle_seconds"] = 3600  # no end by idling here
    app.reload(raw)
    assert app.listing("/pt/", as_user(corp.alice))[0] == 207
    assert smb_connections(corp) == 1
    raw["server"]["auth"]["cache_seconds"] = 30
    app.reload(raw)
    assert smb_connections(corp) == 0  # at once: nothing was in use


# -- a changed password -----------------------------------------------------------------

def set_password(corp: samba_ad.Domain, account: samba_ad.Account, password: str) -> None:
    """What an admin (or the user at their PC) does in AD."""
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(corp.ca_file),
                    valid_names=[corp.server_name])
    server = ldap3.Server(corp.address, port=636, use_ssl=True, tls=tls)
    with ldap3.Connection(server, f"{corp.netbios}\\{corp.admin.user}", corp.admin.password,
                          auto_bind=True) as conn:
        assert conn.extend.microsoft.modify_password(corp.dn(account.user), password)


def test_a_changed_password_is_checked_by_the_file_server(app: App,
                                                          corp: samba_ad.Domain) -> None:
    mike, second, third = corp.mike, "Brass-Lantern-88!", "Quartz-Meadow-29!"
    first = as_user(mike)
    assert app.listing("/pt/", first)[0] == 207
    set_password(corp, mike, second)
    try:
        # the new password: a session of its own, signed in with it
        assert app.listing("/pt/", basic("CORP\\mike", second))[0] == 207
        assert smb_connections(corp) == 2
        # Samba (like Windows) still takes the previous password for NTLM for a while
        # ("old password allowed period"); one more change and the first is gone
        set_password(corp, mike, third)
        assert eventually(lambda: smb_connections(corp) == 0, timeout=IDLE_S + 3)
        # the sign-in cache (cache_seconds) still takes the first password; the first
        # session ended, and a new connection asks the file server, which refuses it
        status, said = app.listing("/pt/", first)
        assert status == 403 and "the file server refused your account (CORP\\mike)" in said
        assert smb_connections(corp) == 0
        assert app.listing("/pt/", basic("CORP\\mike", third))[0] == 207
    finally:
        set_password(corp, mike, mike.password)


def test_the_password_reaches_no_log(app: App, corp: samba_ad.Domain,
                                     caplog: pytest.LogCaptureFixture) -> None:
    for logger in ("", "smbprotocol", "smbclient", "spnego"):  # the SMB libraries' too
        caplog.set_level(logging.DEBUG, logger=logger)
    alice = as_user(corp.alice)
    assert app.listing("/pt/finance/", alice)[0] == 207
    assert app.request("GET", "/pt/eng/readme.txt", alice)[0] == 403
    assert eventually(lambda: smb_connections(corp) == 0, timeout=IDLE_S + 3)  # logged off
    assert "smbprotocol" in caplog.text  # the libraries did log, at debug
    assert corp.alice.password not in caplog.text
