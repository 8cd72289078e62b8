"""Active Directory sign-in without a directory: config, routing, and DCs that fail.

What needs a real domain lives in tests/test_active_directory.py (Samba AD DC).
Here the DCs are loopback ports that refuse or never answer, which is what a
dead or hung DC looks like from the client's side.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from argon2 import PasswordHasher
from pydantic import ValidationError

from mosaic.auth.authenticator import Authenticator, Client, route_login
from mosaic.auth.directory.codes import bind_refusal
from mosaic.auth.errors import DirectoryUnavailable
from mosaic.auth.login import resolve_login
from mosaic.config.loader import load_config
from mosaic.config.schema import Config
from mosaic.core import passwords

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "break-glass password"


@pytest.fixture
def refused_port() -> int:
    """A loopback port nobody listens on: connection refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a hung DC)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for sock in held:
        sock.close()
    server.close()


def domain(*urls: str, **options: Any) -> dict[str, Any]:
    return {"name": "corp.example.test", "netbios": "CORP", "urls": list(urls),
            "upn_suffixes": ["example.com"], **options}


def config(*domains: dict[str, Any], permissions: dict[str, Any] | None = None,
           **auth: Any) -> Config:
    return Config.model_validate({"server": {"auth": auth}, "tenants": {
        "acme": {"domains": ["acme.example"], "netbios": ["ACME"], "hosts": ["files.acme"],
                 "root": {"type": "memory"}, "groups": ["admins"],
                 "users": {"root": {"password_hash": passwords.hash_password(PASSWORD, FAST),
                                    "groups": ["admins"]}},
                 "active_directory": list(domains), "permissions": permissions or {}},
        "globex": {"domains": ["globex.example"], "hosts": ["files.globex"],
                   "root": {"type": "memory"}},
    }})


# -- AD's reasons ------------------------------------------------------------------

@pytest.mark.parametrize(("message", "words"), [
    ("80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 52e, v4563",
     "wrong password (or no such user) (52e)"),
    ("AcceptSecurityContext error, data 775, v893", "account locked out (775)"),
    ("... data 533, ...", "account disabled (533)"),
    ("... data 701 ...", "account expired (701)"),
    ("... data 773 ...", "password must be changed at next logon (773)"),
    ("... data 532 ...", "password expired (532)"),
    ("... data 530 ...", "outside the account's logon hours (530)"),
    ("... data 0000052e ...", "wrong password (or no such user) (52e)"),
    ("... data 999 ...", "credentials refused (AD code 999) (999)"),
    ("something else", "credentials refused ()"),
    (None, "credentials refused ()"),
])
def test_bind_refusals_are_told_apart(message: str | None, words: str) -> None:
    code, reason = bind_refusal(message)
    assert f"{reason} ({code})" == words


# -- the config -----------------------------------------------------------------------

@pytest.mark.parametrize(("url", "complaint"), [
    ("http://dc1.corp.example.test", "expected ldaps://"),
    ("ldaps://", "names no host"),
    ("ldaps://svc:secret@dc1.corp.example.test", "credentials do not belong in the URL"),
    ("ldaps://dc1.corp.example.test/DC=corp", "base DN is `base_dn`"),
    ("ldaps://dc1.corp.example.test:99999", "out of range"),
])
def test_a_bad_dc_url_is_refused_clearly(url: str, complaint: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(domain(url))
    text = str(caught.value)
    assert "tenants.acme.active_directory.0.urls.0" in text and complaint in text
    assert "secret" not in text


def test_a_domain_needs_a_dc_and_a_distinguished_name() -> None:
    with pytest.raises(ValidationError, match="at least 1 item"):
        config(domain())
    with pytest.raises(ValidationError, match="expected a distinguished name"):
        config(domain("ldaps://dc1", base_dn="corp.example.test"))
    with pytest.raises(ValidationError, match="repeat a suffix"):
        config(domain("ldaps://dc1", upn_suffixes=["CORP.example.test"]))


def test_search_base_defaults_from_the_domain_name() -> None:
    ad = config(domain("ldaps://dc1")).tenants["acme"].active_directory[0]
    assert ad.search_base == "DC=corp,DC=example,DC=test"


@pytest.mark.parametrize("principal", ["@CORP\\Finance", "@corp\\finance", "@Finance",
                                       "CORP\\alice", "@admins", "root", "*"])
def test_permission_rules_may_name_directory_users_and_groups(principal: str) -> None:
    config(domain("ldaps://dc1"), permissions={"/finance": {principal: "write"}})


@pytest.mark.parametrize(("principal", "complaint"), [
    ("@OTHER\\Finance", "names the domain 'OTHER', which is not one of the tenant's "
                        "active_directory domains (netbios: corp)"),
    ("OTHER\\alice", "names the domain 'OTHER'"),
    ("alice", "a directory user is named DOMAIN\\user"),
])
def test_permission_rules_naming_unknown_domains_are_refused(principal: str,
                                                             complaint: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(domain("ldaps://dc1"), permissions={"/finance": {principal: "write"}})
    assert complaint in str(caught.value)


def test_without_a_directory_groups_must_still_be_declared() -> None:
    with pytest.raises(ValidationError, match="undeclared group 'Finance'"):
        config(permissions={"/finance": {"@Finance": "write"}})
    with pytest.raises(ValidationError, match="not one of the tenant's active_directory"):
        config(permissions={"/finance": {"CORP\\alice": "write"}})


# -- which source checks a login ----------------------------------------------------------

@pytest.mark.parametrize(("login", "host", "source"), [
    ("alice@corp.example.test", None, 0),  # the domain's name is a UPN suffix
    ("alice@EXAMPLE.com", None, 0),  # and so are its upn_suffixes
    ("CORP\\alice", None, 0),
    ("alice", "files.acme", 0),  # bare: no local alice, so the first domain
    ("root", "files.acme", None),  # a local user (break-glass) wins for a bare name
    ("root@acme.example", None, None),  # and through the tenant's own domain
    ("CORP\\root", None, 0),  # but a name qualified with the domain goes to it
])
def test_logins_route_to_one_source(login: str, host: str | None, source: int | None) -> None:
    cfg = config(domain("ldaps://dc1"))
    target = resolve_login(cfg, login, host)
    assert target is not None and target.tenant_id == "acme"
    assert route_login(cfg.tenants["acme"], target).directory == source


def test_a_directory_name_never_routes_into_another_tenant() -> None:
    cfg = config(domain("ldaps://dc1"))
    assert resolve_login(cfg, "CORP\\alice", "files.globex") is None
    assert resolve_login(cfg, "alice@corp.example.test", "files.globex") is None


# -- DCs that fail --------------------------------------------------------------------

def authenticator(cfg: Config) -> Authenticator:
    return Authenticator(lambda: cfg)


def test_a_dead_dc_is_skipped_and_named_once(refused_port: int, silent_port: int,
                                             caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(domain(f"ldaps://127.0.0.1:{refused_port}", f"ldap://127.0.0.1:{silent_port}",
                        connect_timeout_seconds=0.5, timeout_seconds=1,
                        dc_retry_seconds=30))
    auth = authenticator(cfg)
    started = time.monotonic()
    with pytest.raises(DirectoryUnavailable) as caught:
        auth.authenticate("CORP\\alice", "secret", Client("192.0.2.1"))
    first = time.monotonic() - started
    assert first < 3  # refused at once, then the hung one's timeouts
    assert str(refused_port) in caught.value.reason and str(silent_port) in caught.value.reason
    assert caught.value.retry_after == 30
    started = time.monotonic()
    for _ in range(20):  # both are skipped now: no DC is asked, no time is spent
        with pytest.raises(DirectoryUnavailable, match="every DC failed"):
            auth.authenticate("CORP\\alice", "secret", Client("192.0.2.1"))
    assert time.monotonic() - started < 0.5
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2  # one line per DC going down, not one per login
    assert "secret" not in caplog.text


def test_unavailable_directories_are_not_failed_logins(refused_port: int) -> None:
    cfg = config(domain(f"ldaps://127.0.0.1:{refused_port}", dc_retry_seconds=0),
                 max_failures=2, address_max_failures=2)
    auth = authenticator(cfg)
    for _ in range(5):
        with pytest.raises(DirectoryUnavailable):
            auth.authenticate("CORP\\alice", "secret", Client("192.0.2.1"))
    # nothing was locked: the local break-glass account signs in from that address
    assert auth.authenticate("root", PASSWORD, Client("192.0.2.1", "files.acme")) is not None


def test_hung_dcs_do_not_pile_up_threads(silent_port: int) -> None:
    cfg = config(domain(f"ldaps://127.0.0.1:{silent_port}", connect_timeout_seconds=1,
                        timeout_seconds=1, max_concurrent_logins=2, dc_retry_seconds=0))
    auth = authenticator(cfg)
    before = threading.active_count()
    outcomes: list[str] = []

    def sign_in(n: int) -> float:
        started = time.monotonic()
        try:
            auth.authenticate(f"CORP\\user{n}", "secret", Client(f"192.0.2.{n}"))
            outcomes.append("answered")
        except DirectoryUnavailable as exc:
            outcomes.append("busy" if "already waiting" in exc.reason else "down")
        return time.monotonic() - started

    with ThreadPoolExecutor(max_workers=12) as pool:
        durations = list(pool.map(sign_in, range(12)))
    assert max(durations) < 4  # a slot wait (1 s) or a TLS handshake timeout (1 s), not 12
    assert outcomes.count("busy") >= 1 and "answered" not in outcomes
    time.sleep(0.2)
    assert threading.active_count() <= before + 1


@pytest.mark.parametrize("scheme", ["ldaps", "ldap"])
def test_a_hung_dc_costs_the_connect_timeout(silent_port: int, scheme: str) -> None:
    """connect_timeout_seconds bounds the TCP and TLS set-up (the LDAPS handshake, the
    StartTLS exchange), not timeout_seconds, which is for each bind and search."""
    cfg = config(domain(f"{scheme}://127.0.0.1:{silent_port}", connect_timeout_seconds=0.5,
                        timeout_seconds=10))
    auth = authenticator(cfg)
    started = time.monotonic()
    with pytest.raises(DirectoryUnavailable, match="timed out"):
        auth.authenticate("CORP\\alice", "secret", Client("192.0.2.1"))
    assert time.monotonic() - started < 2


# -- check-config ---------------------------------------------------------------------

def check_config(tmp_path: Path, tenant: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    raw = {"server": {"data_dir": str(tmp_path / "data")},
           "tenants": {"acme": {"root": {"type": "memory"}, **tenant}}}
    path = tmp_path / "mosaic.yaml"
    path.write_text(yaml.safe_dump(raw))
    return subprocess.run([sys.executable, "-m", "mosaic", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_check_config_reads_the_service_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "svc.secret"
    secret.write_text("Lookup-Only-Svc-2026!\n")
    done = check_config(tmp_path, {"active_directory": [domain(
        "ldaps://dc1.corp.example.test", service_account={"user": "svc@corp.example.test",
                                                          "password_file": str(secret)})]})
    assert done.returncode == 0, done.stderr
    cfg = load_config(tmp_path / "mosaic.yaml")
    service = cfg.tenants["acme"].active_directory[0].service_account
    assert service is not None
    assert service.password.get_secret_value() == "Lookup-Only-Svc-2026!"
    assert "Lookup-Only" not in repr(cfg)


@pytest.mark.parametrize(("files", "complaint"), [
    ({"ca_file": "missing.pem"}, "tenants.acme.active_directory.0.ca_file: cannot read "),
    ({"ca_file": "not-pem.txt"}, "tenants.acme.active_directory.0.ca_file: "),
    ({"keytab": "missing.keytab"}, "tenants.acme.kerberos.keytab: cannot read "),
])
def test_check_config_names_unreadable_sign_in_files(tmp_path: Path, files: dict[str, str],
                                                     complaint: str) -> None:
    (tmp_path / "not-pem.txt").write_text("hello")
    ad = domain("ldaps://dc1.corp.example.test",
                service_account={"user": "svc@corp.example.test", "password": "x"})
    if "ca_file" in files:
        ad["ca_file"] = str(tmp_path / files["ca_file"])
    tenant: dict[str, Any] = {"active_directory": [ad]}
    if "keytab" in files:
        tenant["kerberos"] = {"spn": "HTTP/files.acme.example",
                              "keytab": str(tmp_path / files["keytab"])}
    done = check_config(tmp_path, tenant)
    assert done.returncode == 1
    assert complaint in done.stderr
    assert "holds no PEM certificate" in done.stderr or "cannot read" in done.stderr


def test_kerberos_needs_a_service_account(tmp_path: Path) -> None:
    done = check_config(tmp_path, {
        "active_directory": [domain("ldaps://dc1.corp.example.test")],
        "kerberos": {"spn": "HTTP/files.acme.example", "keytab": "/etc/hostname"}})
    assert done.returncode == 1
    assert "kerberos needs an active_directory domain with a service_account" in done.stderr
