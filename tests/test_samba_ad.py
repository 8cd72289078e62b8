"""The Samba AD fixture (tests/support/samba_ad.py) against real clients: ldap3 binds
over LDAPS and StartTLS with the certificate verified, the AD sub-code of every kind
of refused bind, nested groups, Kerberos (kinit, kvno, the exported keytab), the
DC's own share and its NT ACLs, a second domain running beside the first, and a
stop that leaves no process behind."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
from pathlib import Path

import ldap3
import psutil
import pytest
from ldap3.core.exceptions import LDAPSocketOpenError
from ldap3.utils.conv import escape_filter_chars

from tests.support import samba_ad
from tests.support.samba_ad import Account, ADDomain, Domain, OtherDomain

NESTED = "1.2.840.113556.1.4.1941"  # LDAP_MATCHING_RULE_IN_CHAIN


@pytest.fixture(scope="module")
def corp() -> Domain:
    return samba_ad.domain()


@pytest.fixture(scope="module")
def other() -> OtherDomain:
    return samba_ad.other_domain()


def tls(domain: ADDomain, ca_file: Path | None = None) -> ldap3.Tls:
    """Verification on: the CA file, and the host name checked against server_name."""
    return ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(ca_file or domain.ca_file),
                     valid_names=[domain.server_name])


def ldaps(domain: ADDomain, user: str, password: str) -> ldap3.Connection:
    """An LDAPS connection, not bound yet."""
    server = ldap3.Server(domain.ldaps_url, use_ssl=True, tls=tls(domain), get_info=ldap3.NONE)
    return ldap3.Connection(server, user=user, password=password, raise_exceptions=False)


def bound(domain: ADDomain, account: Account) -> ldap3.Connection:
    conn = ldaps(domain, account.upn, account.password)
    assert conn.bind(), conn.result
    return conn


def entries(conn: ldap3.Connection, base: str, query: str,
            *attributes: str) -> list[dict[str, str]]:
    """Search results only (AD adds continuation references to subtree searches), each
    attribute's values as one string (no schema read: ldap3 cannot tell single-valued
    attributes without it)."""
    conn.search(base, query, attributes=list(attributes))
    found = [e for e in conn.response if e["type"] == "searchResEntry"]
    return [{"dn": e["dn"], **{k: " ".join(map(str, v)) if isinstance(v, list) else v
                              for k, v in e["attributes"].items()}} for e in found]


def sub_code(domain: ADDomain, user: str, password: str) -> str:
    """The AD sub-code ("data 52e") of a refused bind."""
    conn = ldaps(domain, user, password)
    assert not conn.bind()
    assert conn.result["description"] == "invalidCredentials", conn.result
    found = re.search(r"data ([0-9a-f]+)", conn.result["message"])
    assert found, conn.result["message"]
    return found.group(1)


def test_ldaps_bind_by_upn_and_down_level_name(corp: Domain) -> None:
    for user in (corp.alice.upn, rf"{corp.netbios}\{corp.alice.user}"):
        conn = ldaps(corp, user, corp.alice.password)
        assert conn.bind(), (user, conn.result)
        (me,) = entries(conn, corp.base_dn, f"(sAMAccountName={corp.alice.user})",
                        "displayName", "userPrincipalName")
        assert me["dn"] == corp.dn("alice") == f"CN=alice,{corp.users_ou_dn}"
        assert me["displayName"] == "Alice Archer"
        assert me["userPrincipalName"] == "alice@corp.example.test"
        conn.unbind()


def test_certificate_names_the_dc_and_its_address(corp: Domain) -> None:
    context = ssl.create_default_context(cafile=str(corp.ca_file))  # check_hostname on
    with socket.create_connection((corp.address, 636), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=corp.server_name) as tls_socket:
        names = {value for _kind, value in tls_socket.getpeercert()["subjectAltName"]}
    assert {"dc1.corp.example.test", "dc1", "corp.example.test", "localhost",
            "127.0.0.1"} <= names
    with socket.create_connection((corp.address, 636), timeout=5) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(raw, server_hostname="intruder.corp.example.test")
    # ldap3 checks the host it connects to (127.0.0.1, a SAN) without valid_names too
    server = ldap3.Server(corp.ldaps_url, use_ssl=True, get_info=ldap3.NONE, tls=ldap3.Tls(
        validate=ssl.CERT_REQUIRED, ca_certs_file=str(corp.ca_file)))
    assert ldap3.Connection(server, corp.bob.upn, corp.bob.password).bind()


def test_another_ca_is_refused(corp: Domain, other: OtherDomain) -> None:
    server = ldap3.Server(corp.ldaps_url, use_ssl=True, tls=tls(corp, other.ca_file),
                          get_info=ldap3.NONE)
    with pytest.raises(LDAPSocketOpenError):
        ldap3.Connection(server, corp.alice.upn, corp.alice.password).bind()


def test_start_tls_on_389(corp: Domain) -> None:
    server = ldap3.Server(corp.ldap_url, tls=tls(corp), get_info=ldap3.NONE)
    plain = ldap3.Connection(server, corp.alice.upn, corp.alice.password)
    assert not plain.bind()  # simple binds need TLS
    assert plain.result["description"] == "strongerAuthRequired"
    conn = ldap3.Connection(server, rf"CORP\{corp.alice.user}", corp.alice.password)
    conn.open()
    assert conn.start_tls()
    assert conn.bind(), conn.result


@pytest.mark.parametrize(("who", "code"), [
    ("alice", "52e"), ("dave", "533"), ("erin", "775"), ("frank", "773"), ("gina", "701"),
    ("hank", "530")])
def test_refused_bind_carries_the_ad_sub_code(corp: Domain, who: str, code: str) -> None:
    account: Account = getattr(corp, who)
    password = "Not-The-Password-1!" if code == "52e" else account.password
    assert sub_code(corp, account.upn, password) == code


def test_unknown_user_looks_like_a_wrong_password(corp: Domain) -> None:
    assert sub_code(corp, "nobody@corp.example.test", corp.alice.password) == "52e"


def test_password_and_lockout_policy(corp: Domain) -> None:
    conn = bound(corp, corp.admin)
    conn.search(corp.base_dn, "(objectClass=domain)", ldap3.BASE,
                attributes=["lockoutThreshold", "lockoutDuration", "lockOutObservationWindow",
                            "maxPwdAge"])
    policy = conn.entries[0]
    minutes = 60 * 10**7  # AD intervals: negative 100 ns ticks
    assert int(policy.lockoutThreshold.value) == samba_ad.LOCKOUT_THRESHOLD
    assert -int(policy.lockoutDuration.raw_values[0]) == samba_ad.LOCKOUT_DURATION_MIN * minutes
    assert (-int(policy.lockOutObservationWindow.raw_values[0])
            == samba_ad.RESET_LOCKOUT_AFTER_MIN * minutes)
    assert int(policy.maxPwdAge.raw_values[0]) == -0x8000000000000000  # never expires


def test_threshold_wrong_passwords_lock_an_account(corp: Domain) -> None:
    """The policy is real: LOCKOUT_THRESHOLD wrong passwords lock the spare account."""
    spare = corp.lena
    for _ in range(samba_ad.LOCKOUT_THRESHOLD):
        assert sub_code(corp, spare.upn, "Not-The-Password-1!") == "52e"
    assert sub_code(corp, spare.upn, spare.password) == "775"


def test_nested_groups(corp: Domain) -> None:
    conn = bound(corp, corp.svc_mosaic)

    def groups(user: str) -> set[str]:
        query = f"(&(objectClass=group)(member:{NESTED}:={escape_filter_chars(corp.dn(user))}))"
        return {e["cn"] for e in entries(conn, corp.base_dn, query, "cn")}

    assert groups("alice") == {"Accounting", "Finance", "Staff"}
    assert groups("ivan") == {"Finance", "Staff"}
    assert groups("bob") == {"Engineering"}
    assert groups("carol") == set()  # Domain Users is a primary group: not a member value
    in_ou = entries(conn, corp.users_ou_dn, "(objectClass=user)", "sAMAccountName")
    assert {e["sAMAccountName"] for e in in_ou} == {"alice", "bob", "ivan"}


def kerberos_env(domain: ADDomain, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "KRB5_CONFIG": str(domain.krb5_conf),
            "KRB5CCNAME": f"FILE:{tmp_path / 'ccache'}"}


def kinit(domain: ADDomain, account: Account, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["kinit", f"{account.user}@{domain.realm}"], env=env,
                          input=f"{account.password}\n", capture_output=True, text=True,
                          timeout=30)


def test_kinit_and_a_service_ticket_for_http(corp: Domain, tmp_path: Path) -> None:
    env = kerberos_env(corp, tmp_path)
    assert kinit(corp, corp.alice, env).returncode == 0
    # -k: the ticket is decrypted with the exported keytab, so the two agree
    done = subprocess.run(["kvno", "-k", str(corp.keytab), corp.http_spn], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "keytab entry valid" in done.stdout
    tickets = subprocess.run(["klist", "-e"], env=env, capture_output=True, text=True,
                             check=True).stdout
    assert f"{corp.http_spn}@{corp.realm}" in tickets and "aes256-cts" in tickets
    refused = kinit(corp, corp.dave, env)
    assert refused.returncode != 0 and "revoked" in refused.stderr


def test_keytab_holds_aes_keys_only(corp: Domain) -> None:
    listing = subprocess.run(["klist", "-ke", str(corp.keytab)], capture_output=True,
                             text=True, check=True).stdout
    keys = [line for line in listing.splitlines() if f"{corp.http_spn}@" in line]
    assert keys and all("aes" in line for line in keys), listing
    assert any("aes256-cts-hmac-sha1-96" in line for line in keys)


def smbclient(domain: ADDomain, share: str, user: str, password: str, command: str) -> str:
    """Samba's smbclient against the DC's own file server: what it said (smbclient
    exits 0 after a failed command; its NT_STATUS line tells)."""
    done = subprocess.run(
        ["smbclient", f"//{domain.address}/{share}", "-p", str(domain.smb_port),
         "-U", f"{user}%{password}", "-m", "SMB3", "-c", command],
        capture_output=True, text=True, timeout=30)
    return done.stdout + done.stderr


def smb_get(domain: Domain, account: Account, path: str) -> str:
    """``get <path> -`` on the DC's share as CORP\\<account>: the file's text, or the error."""
    return smbclient(domain, domain.share, rf"{domain.netbios}\{account.user}",
                     account.password, f"get {path} -")


@pytest.mark.parametrize(("who", "readable"), [
    ("alice", "finance"), ("ivan", "finance"), ("bob", "eng"), ("carol", None)])
def test_share_acls_follow_groups(corp: Domain, who: str, readable: str | None) -> None:
    for folder, (_group, text) in samba_ad.PT_FOLDERS.items():
        said = smb_get(corp, getattr(corp, who), f"{folder}/readme.txt")
        if folder == readable:
            assert text in said
        else:
            assert "NT_STATUS_ACCESS_DENIED" in said and text not in said


def test_second_domain_runs_beside_the_first(corp: Domain, other: OtherDomain,
                                             tmp_path: Path) -> None:
    assert (other.address, other.realm) == ("127.0.0.2", "OTHER.EXAMPLE.TEST")
    for domain, account in ((corp, corp.alice), (other, other.olga)):
        conn = bound(domain, account)
        conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["defaultNamingContext"])
        assert conn.entries[0].defaultNamingContext.value == domain.base_dn
    conn = bound(other, other.oscar)
    query = f"(&(objectClass=group)(member:{NESTED}:={escape_filter_chars(other.dn('olga'))}))"
    assert [e["dn"] for e in entries(conn, other.base_dn, query)] == [
        "CN=Finance,CN=Users,DC=other,DC=example,DC=test"]
    # the same names, other directories: CORP's bob is nobody in OTHER; OTHER's alice,
    # who has CORP's alice's password too (the isolation tests' twin), is OTHER's own
    assert sub_code(other, rf"OTHER\{corp.bob.user}", corp.bob.password) == "52e"
    assert other.alice.password == corp.alice.password
    bound(other, other.alice).unbind()
    assert sub_code(corp, rf"CORP\{other.olga.user}", other.olga.password) == "52e"
    assert kinit(other, other.olga, kerberos_env(other, tmp_path)).returncode == 0
    # each DC's smbd asks its own winbindd (each has its own /run/samba)
    listed = smbclient(other, "netlogon", r"OTHER\olga", other.olga.password, "ls")
    assert "NT_STATUS" not in listed and "blocks available" in listed
    assert "NT_STATUS_LOGON_FAILURE" in smbclient(corp, "netlogon", r"CORP\olga",
                                                  other.olga.password, "ls")


def test_a_second_dc_on_the_same_address_is_refused(corp: Domain) -> None:
    twin = samba_ad.DomainController(samba_ad.CORP)
    try:
        with pytest.raises(RuntimeError, match=r"127\.0\.0\.1:389 is taken \(pid \d+: samba"):
            twin.start()
    finally:
        twin.remove()


def test_stop_leaves_no_process(other: OtherDomain) -> None:
    controller = samba_ad.other_controller()
    # listing the shares makes smbd start samba-dcerpcd (on demand, a daemon of its own)
    listed = subprocess.run(
        ["smbclient", "-L", f"//{other.address}", "-p", str(other.smb_port),
         "-U", rf"OTHER\{other.oscar.user}%{other.oscar.password}"],
        capture_output=True, text=True, timeout=30).stdout
    assert "netlogon" in listed
    started = controller.processes()
    names = {p.name() for p in started}
    assert {"samba", "smbd", "winbindd", "samba-dcerpcd"} <= names, names
    controller.stop()
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert controller.processes() == []
    with pytest.raises(OSError):
        socket.create_connection((other.address, 636), timeout=1).close()
    controller.start()  # for any test after this one
    assert bound(samba_ad.other_domain(), other.olga).bound
