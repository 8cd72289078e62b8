"""Kerberos single sign-on (HTTP Negotiate) with the Samba AD DC as the KDC.

``kinit`` gets a real ticket; curl (``--negotiate``) and python-gssapi send it
to a real Mosaic server; the principal must be the one a password login of
the same account gets (same user, same groups, same permissions).
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from mosaic.config.schema import Config
from tests.support import kerberos, samba_ad
from tests.support.kerberos import SERVICE_HOST, kinit, negotiate_header
from tests.support.live import Live, live_server

LOCK_BODY = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
             b"</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>")


@pytest.fixture(scope="module")
def corp() -> samba_ad.Domain:
    return samba_ad.domain()


@pytest.fixture
def kerberos_env(corp: samba_ad.Domain, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return kerberos.private_credentials(corp, tmp_path, monkeypatch)


def config(corp: samba_ad.Domain, tmp_path: Path, **kerberos: Any) -> Config:
    (tmp_path / "acme" / "finance").mkdir(parents=True)
    return Config.model_validate({"server": {"data_dir": str(tmp_path / "data")}, "tenants": {
        "acme": {
            "hosts": [SERVICE_HOST], "root": {"type": "local", "root": str(tmp_path / "acme")},
            "active_directory": [{
                "name": corp.dns_name, "netbios": corp.netbios, "urls": [corp.ldaps_url],
                "ca_file": str(corp.ca_file), "server_name": corp.server_name,
                "service_account": {"user": corp.svc_mosaic.upn,
                                    "password": corp.svc_mosaic.password}}],
            "kerberos": {"spn": corp.http_spn, "keytab": str(corp.keytab), **kerberos},
            "permissions": {"/finance": {"@Finance": "write", "*": "none"}},
        },
        "globex": {"hosts": ["files.globex.example"], "root": {"type": "memory"}},
    }})


@pytest.fixture
def server(corp: samba_ad.Domain, tmp_path: Path, kerberos_env: dict[str, str]) -> Iterator[Live]:
    with live_server(config(corp, tmp_path)) as live:
        yield live


def url(live: Live, path: str = "/") -> str:
    return f"http://{SERVICE_HOST}:{live.port}{path}"


def request(live: Live, method: str, path: str, **headers: str) -> requests.Response:
    # No DNS: connect to 127.0.0.1 and name the service host in Host.
    return requests.request(method, f"http://127.0.0.1:{live.port}{path}",
                            headers={"Host": f"{SERVICE_HOST}:{live.port}", **headers},
                            timeout=30)


def curl(live: Live, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--negotiate", "-u", ":", "--resolve",
         f"{SERVICE_HOST}:{live.port}:127.0.0.1", "-o", "/dev/null", "-w", "%{http_code}",
         *args], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **env},
        timeout=60, check=False)


def test_a_401_offers_negotiate_before_basic(server: Live) -> None:
    answer = request(server, "PROPFIND", "/", Depth="0")
    assert answer.status_code == 401
    assert answer.raw.headers.getlist("WWW-Authenticate") == ["Negotiate",
                                                              'Basic realm="Mosaic"']
    other = requests.request("PROPFIND", f"http://127.0.0.1:{server.port}/", timeout=30,
                             headers={"Host": "files.globex.example", "Depth": "0"})
    assert other.raw.headers.getlist("WWW-Authenticate") == ['Basic realm="Mosaic"']


def test_curl_signs_in_with_a_ticket(server: Live, corp: samba_ad.Domain,
                                     kerberos_env: dict[str, str]) -> None:
    kinit(corp.alice, kerberos_env)
    done = curl(server, kerberos_env, "-X", "PROPFIND", "-H", "Depth: 0", url(server))
    assert done.stdout == "207", done.stderr
    # the ticket's account gets its groups: Finance through Accounting
    done = curl(server, kerberos_env, "-T", "-", url(server, "/finance/from-curl.txt"))
    assert done.stdout == "201", done.stderr


def test_a_ticket_is_the_same_principal_as_a_password(server: Live, corp: samba_ad.Domain,
                                                      kerberos_env: dict[str, str]) -> None:
    kinit(corp.bob, kerberos_env)
    by_ticket = request(server, "PUT", "/finance/bob.txt", Authorization=negotiate_header())
    by_password = requests.put(f"http://127.0.0.1:{server.port}/finance/bob.txt", timeout=30,
                               auth=("CORP\\bob", corp.bob.password),
                               headers={"Host": SERVICE_HOST})
    # bob is not in Finance: /finance is hidden from him either way
    assert by_ticket.status_code == by_password.status_code
    assert by_ticket.status_code in (403, 409)
    kinit(corp.alice, kerberos_env)
    answer = request(server, "PUT", "/finance/alice.txt", Authorization=negotiate_header())
    assert answer.status_code == 201
    # mutual authentication: the server proves itself with a reply token
    assert answer.headers["WWW-Authenticate"].startswith("Negotiate ")
    lock = requests.request(
        "LOCK", f"http://127.0.0.1:{server.port}/finance/alice.txt", data=LOCK_BODY, timeout=30,
        headers={"Host": SERVICE_HOST, "Authorization": negotiate_header(),
                 "Timeout": "Second-60", "Content-Type": "application/xml"})
    assert lock.status_code == 200
    token = lock.headers["Lock-Token"]
    stranger = requests.request("UNLOCK", f"http://127.0.0.1:{server.port}/finance/alice.txt",
                                auth=("CORP\\ivan", corp.ivan.password), timeout=30,
                                headers={"Host": SERVICE_HOST, "Lock-Token": token})
    assert stranger.status_code == 403  # another account does not own it
    unlock = requests.request("UNLOCK", f"http://127.0.0.1:{server.port}/finance/alice.txt",
                              auth=("alice@corp.example.test", corp.alice.password),
                              headers={"Host": SERVICE_HOST, "Lock-Token": token}, timeout=30)
    assert unlock.status_code == 204  # one account, one lock owner, however it signed in


@pytest.mark.parametrize("token", ["", "!!!", base64.b64encode(b"not a token").decode(),
                                   base64.b64encode(b"\x60\x82" + b"\xff" * 300).decode()])
def test_a_bad_token_is_a_401(server: Live, token: str,
                              caplog: pytest.LogCaptureFixture) -> None:
    answer = request(server, "PROPFIND", "/", Authorization=f"Negotiate {token}", Depth="0")
    assert answer.status_code == 401
    assert "Traceback" not in caplog.text


def test_basic_still_works_beside_kerberos(server: Live, corp: samba_ad.Domain) -> None:
    answer = requests.request("PROPFIND", f"http://127.0.0.1:{server.port}/", timeout=30,
                              auth=("CORP\\carol", corp.carol.password),
                              headers={"Host": SERVICE_HOST, "Depth": "0"})
    assert answer.status_code == 207


def test_a_ticket_for_another_tenant_host_is_refused(server: Live, corp: samba_ad.Domain,
                                                     kerberos_env: dict[str, str]) -> None:
    kinit(corp.alice, kerberos_env)
    answer = requests.request("PROPFIND", f"http://127.0.0.1:{server.port}/", timeout=30,
                              headers={"Host": "files.globex.example", "Depth": "0",
                                       "Authorization": negotiate_header()})
    assert answer.status_code == 401


def test_a_disabled_account_is_refused_even_with_a_ticket(corp: samba_ad.Domain,
                                                          tmp_path: Path) -> None:
    from mosaic.auth.authenticator import Authenticator

    cfg = config(corp, tmp_path)
    auth = Authenticator(lambda: cfg)
    source = auth.directories.source(cfg, "acme", 0)
    assert source.lookup("dave") is None  # disabled: a ticket issued before stays valid
    assert source.lookup("alice") is not None
