"""Real Samba Active Directory domain controllers on loopback for the tests.

:func:`domain` starts, once per test process, Debian's ``samba`` (the AD DC binary,
which runs its own LDAP server, KDC and kpasswd, and smbd and winbindd as
children) as root for the domain ``CORP.EXAMPLE.TEST`` (NetBIOS ``CORP``, DC
``dc1.corp.example.test``) on 127.0.0.1; :func:`other_domain` starts a second,
unrelated DC for ``OTHER.EXAMPLE.TEST`` on 127.0.0.2 (both may run at once). What
they hold is :data:`CORP` and :data:`OTHER`; each is described by a frozen
:class:`Domain` / :class:`OtherDomain` (URLs, CA file, krb5.conf, ports, accounts).

Every file of a DC lives under a temporary directory: its databases, smb.conf,
pid files, sockets (``ncalrpc dir``, ``winbindd socket directory``), logs. The
DC binds its own loopback address only (``bind interfaces only``), NetBIOS is off
and the services it does not need are too (``-nbt -wrepl -dns -dnsupdate
-ntp_signd -kcc``). The system's smb.conf, /run/samba, /var/lib/samba and
services are never used; the Debian package itself must not start them (see
scripts/samba-policy-rc.sh, run by scripts/test.sh before installing).

Ports: LDAP (389, 636, 3268, 3269) and the endpoint mapper (135) are fixed in
Samba's source: another server listening there on the DC's address fails the
start with a message naming it. SMB, Kerberos (TCP and UDP), kpasswd and the
dynamic RPC range are free ports chosen at every start and written into the
restored smb.conf and the generated krb5.conf.

Provisioning (``samba-tool domain provision`` and :mod:`samba_ad_populate`, run
by Debian's /usr/bin/python3: Samba's Python bindings exist for that one only)
takes ~5-9 s, so its result is cached as a tar (xattrs and ACLs kept: the shares'
NT ACLs live in xattrs) under ``$MOSAIC_TEST_CACHE`` (default
/var/tmp/mosaic-test-cache), named by a hash of everything that goes into it;
each test process restores it into a fresh directory (a clean domain every
run) and starts it in about a second.

``samba`` runs in the foreground (``-i``) with a pipe as its standard input: when
this process ends, even by SIGKILL, the pipe closes and samba stops itself and its
children. :meth:`DomainController.stop` closes it too, then kills whatever of the
DC is left (its process group, and any process whose command line names its
smb.conf, such as an on-demand ``samba-dcerpcd``).

A missing package is a failure with the command that installs it, never a skip.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import emulator

DEBIAN_PACKAGES = "samba-ad-dc samba-ad-provision krb5-user ldap-utils winbind smbclient"
SYSTEM_PYTHON = "/usr/bin/python3"
POPULATE_SCRIPT = Path(__file__).with_name("samba_ad_populate.py")
CACHE_DIR = Path(os.environ.get("MOSAIC_TEST_CACHE", "/var/tmp/mosaic-test-cache"))
#: raise when the cached domain must be rebuilt for a reason the cache key cannot see
CACHE_VERSION = 1
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
#: Samba's fixed ports (LDAP, LDAPS, global catalog, endpoint mapper)
FIXED_PORTS = (389, 636, 3268, 3269, 135)
#: one process for LDAP, KDC, RPC... (plus smbd and winbindd): the default
#: prefork model starts ~40 processes, too many for a 2-core test machine
PROCESS_MODEL = "single"
#: starts with fresh ports when one chosen as free was taken meanwhile (samba binds
#: without SO_REUSEADDR: even a TIME_WAIT connection on the port refuses it)
START_ATTEMPTS = 3

#: The domain's lockout policy: LOCKOUT_THRESHOLD wrong passwords within
#: RESET_LOCKOUT_AFTER_MIN minutes lock an account for LOCKOUT_DURATION_MIN minutes
#: (``samba-tool domain passwordsettings set --account-lockout-*``); passwords never
#: expire (``--max-pwd-age=0``). A locked-out account binds with AD sub-code 775.
LOCKOUT_THRESHOLD = 5
LOCKOUT_DURATION_MIN = 1
RESET_LOCKOUT_AFTER_MIN = 1


@dataclass(frozen=True)
class Account:
    user: str
    password: str
    upn: str


@dataclass(frozen=True)
class _User:
    """A user to create: its account, names (displayName "<given> <surname>"),
    where it lives (an OU under the domain, else CN=Users), its groups and the
    state it is put in (see samba_ad_populate.set_state)."""

    account: Account
    given_name: str
    surname: str
    ou: str | None = None
    member_of: tuple[str, ...] = ()
    state: str | None = None
    spn: str | None = None
    enctypes: int | None = None


@dataclass(frozen=True)
class _Group:
    name: str
    member_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Folder:
    """A folder of the DC's share that one group only may read, and its files."""

    group: str
    files: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Spec:
    """Everything a provisioned domain is made of (its hash names the cache)."""

    realm: str
    netbios: str
    host: str
    address: str
    admin_password: str
    ous: tuple[str, ...] = ()
    groups: tuple[_Group, ...] = ()
    users: tuple[_User, ...] = ()
    share: str | None = None
    folders: tuple[tuple[str, _Folder], ...] = ()
    keytab_principal: str | None = None

    @property
    def dns_name(self) -> str:
        return self.realm.lower()

    @property
    def base_dn(self) -> str:
        return ",".join(f"DC={part}" for part in self.dns_name.split("."))

    @property
    def fqdn(self) -> str:
        return f"{self.host}.{self.dns_name}"

    def upn(self, user: str) -> str:
        return f"{user}@{self.dns_name}"

    def dn(self, name: str) -> str:
        """The DN of one of the spec's users or groups."""
        for user in self.users:
            if user.account.user == name:
                return f"CN={name},{user.ou or 'CN=Users'},{self.base_dn}"
        if any(group.name == name for group in self.groups):
            return f"CN={name},CN=Users,{self.base_dn}"
        raise KeyError(f"{name} is no user or group of {self.realm}")


def _account(user: str, password: str, realm: str) -> Account:
    return Account(user, password, f"{user}@{realm.lower()}")


# Passwords: fixed (a throwaway domain on loopback), and complex enough for Samba's
# default policy (3 character classes, none containing the user's or display name).
CORP_REALM = "CORP.EXAMPLE.TEST"
ADMIN = _account("Administrator", "Adm1n-Mosaic-Test-2026!", CORP_REALM)
ALICE = _account("alice", "Copper-Kettle-41!", CORP_REALM)
BOB = _account("bob", "Maple-Harbor-72!", CORP_REALM)
CAROL = _account("carol", "Silver-Lantern-63!", CORP_REALM)
DAVE = _account("dave", "Quiet-Meadow-58!", CORP_REALM)
ERIN = _account("erin", "Amber-Compass-37!", CORP_REALM)
FRANK = _account("frank", "Granite-Orchid-24!", CORP_REALM)
GINA = _account("gina", "Velvet-Canyon-19!", CORP_REALM)
HANK = _account("hank", "Cobalt-Whistle-86!", CORP_REALM)
IVAN = _account("ivan", "Hollow-Prairie-95!", CORP_REALM)
LENA = _account("lena", "Paper-Glacier-53!", CORP_REALM)
SVC_MOSAIC = _account("svc-mosaic", "Lookup-Only-Svc-2026!", CORP_REALM)
SVC_HTTP = _account("svc-http", "Negotiate-Svc-2026!", CORP_REALM)
HTTP_SPN = "HTTP/mosaic.corp.example.test"
USERS_OU = "OU=Mosaic Users"
#: msDS-SupportedEncryptionTypes: AES128 (8) | AES256 (16), no RC4
AES_ONLY = 24
#: folder of the DC's ``pt`` share -> (the one group that may read it, its readme.txt)
PT_FOLDERS = {
    "finance": ("Finance", "Finance only: the quarterly numbers.\n"),
    "eng": ("Engineering", "Engineering only: the build notes.\n"),
}

CORP = _Spec(
    realm=CORP_REALM, netbios="CORP", host="dc1", address="127.0.0.1",
    admin_password=ADMIN.password, ous=(USERS_OU,),
    groups=(_Group("Staff"), _Group("Finance", ("Staff",)), _Group("Accounting", ("Finance",)),
            _Group("Engineering")),
    users=(
        _User(ALICE, "Alice", "Archer", USERS_OU, ("Accounting",)),
        _User(BOB, "Bob", "Builder", USERS_OU, ("Engineering",)),
        _User(CAROL, "Carol", "Carter"),
        _User(DAVE, "Dave", "Disabled", state="disabled"),
        _User(ERIN, "Erin", "Locked", state="locked"),
        _User(FRANK, "Frank", "Changeme", state="must_change"),
        _User(GINA, "Gina", "Expired", state="expired"),
        _User(HANK, "Hank", "Nohours", state="no_logon_hours"),
        _User(IVAN, "Ivan", "Ivanov", USERS_OU, ("Finance",)),
        _User(LENA, "Lena", "Spare"),
        _User(SVC_MOSAIC, "Mosaic", "Lookup"),
        _User(SVC_HTTP, "Mosaic", "Web", spn=HTTP_SPN, enctypes=AES_ONLY),
    ),
    share="pt",
    folders=tuple((name, _Folder(group, (("readme.txt", text),)))
                  for name, (group, text) in PT_FOLDERS.items()),
    keytab_principal=HTTP_SPN,
)

OTHER_REALM = "OTHER.EXAMPLE.TEST"
OTHER_ADMIN = _account("Administrator", "Adm1n-Other-Test-2026!", OTHER_REALM)
OLGA = _account("olga", "Birch-Lagoon-28!", OTHER_REALM)
OSCAR = _account("oscar", "Tundra-Falcon-64!", OTHER_REALM)

OTHER = _Spec(
    realm=OTHER_REALM, netbios="OTHER", host="dc2", address="127.0.0.2",
    admin_password=OTHER_ADMIN.password,
    groups=(_Group("Finance"),),  # the same name as CORP's, on purpose
    users=(_User(OLGA, "Olga", "Other", member_of=("Finance",)),
           _User(OSCAR, "Oscar", "Other")),
)


@dataclass(frozen=True)
class ADDomain:
    """A running domain controller, as its clients see it. Paths are under the DC's
    temporary directory; set ``KRB5_CONFIG`` to :attr:`krb5_conf` for Kerberos."""

    realm: str
    netbios: str
    dns_name: str
    base_dn: str
    #: the DC's host name, which its certificate names (also :attr:`server_name`)
    dc_fqdn: str
    #: the name to verify the DC's certificate against (its SANs: this name, the
    #: short name, the realm in lower case, localhost, 127.0.0.1, ::1)
    server_name: str
    #: the loopback address the DC binds; there is no DNS: clients use the address
    address: str
    ldaps_url: str
    #: plain LDAP, for StartTLS (AD refuses simple binds without TLS)
    ldap_url: str
    ca_file: Path
    admin: Account
    kdc_host: str
    kdc_port: int
    kpasswd_port: int
    krb5_conf: Path
    smb_port: int
    #: user or group name -> DN
    dns: tuple[tuple[str, str], ...] = field(repr=False)

    def dn(self, name: str) -> str:
        """The DN of a user or group of this domain (``alice``, ``Finance``)."""
        for known, dn in self.dns:
            if known == name:
                return dn
        raise KeyError(f"{name} is no user or group of {self.realm}")


@dataclass(frozen=True)
class Domain(ADDomain):
    """CORP.EXAMPLE.TEST: groups Staff > Finance > Accounting (nested) and
    Engineering; the users below (alice, bob, ivan in :attr:`users_ou_dn`, the
    others in CN=Users), each failing a bind with its own AD sub-code."""

    users_ou_dn: str
    #: the keytab of :attr:`http_spn` (AES keys only), for a GSSAPI acceptor
    keytab: Path
    http_spn: str
    #: the DC's own SMB share with folders finance/ (Finance only) and eng/
    #: (Engineering only), each holding a readme.txt (:data:`PT_FOLDERS`)
    share: str
    alice: Account  # Accounting, so Finance and Staff through nesting
    bob: Account  # Engineering
    carol: Account  # Domain Users only
    dave: Account  # disabled: 533
    erin: Account  # locked out: 775
    frank: Account  # must change password: 773
    gina: Account  # account expired: 701
    hank: Account  # no logon hours: 530
    ivan: Account  # Finance directly
    lena: Account  # Domain Users only: a spare that a test may lock out
    svc_mosaic: Account  # a service account for LDAP searches
    svc_http: Account  # holds http_spn, AES only


@dataclass(frozen=True)
class OtherDomain(ADDomain):
    """OTHER.EXAMPLE.TEST: a group Finance (named as CORP's) holding olga; oscar."""

    olga: Account
    oscar: Account


def _binary(name: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise RuntimeError(f"{name} is not installed: apt-get install {DEBIAN_PACKAGES} "
                           "(scripts/test.sh does)")
    return found


def _run(command: list[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(command, capture_output=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        said = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
        raise RuntimeError(f"{what} failed ({done.returncode}): {said}")
    return done


# ---- certificates ---------------------------------------------------------------


def _tls_files(spec: _Spec, folder: Path) -> None:
    """A CA (its key thrown away) and the DC's certificate it signs, with SANs."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Mosaic test CA {spec.realm}")])
    ca = (_certificate(ca_name, ca_name, ca_key.public_key(), now)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
              encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName(name) for name in (spec.fqdn, spec.host, spec.dns_name, "localhost")]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    if spec.address != "127.0.0.1":
        names.append(x509.IPAddress(ipaddress.ip_address(spec.address)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec.fqdn)])
    cert = (_certificate(subject, ca_name, key.public_key(), now)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "cert.pem").write_bytes(cert.public_bytes(pem))
    key_file = folder / "key.pem"
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)  # samba refuses a key others may read


def _certificate(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
                 now: datetime.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650)))


# ---- configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class _Ports:
    smb: int
    kdc: int
    kpasswd: int
    rpc_low: int

    @classmethod
    def free(cls) -> _Ports:
        return cls(emulator.free_port(), emulator.free_port(), emulator.free_port(),
                   emulator.free_port())


def _smb_conf(spec: _Spec, base: Path, ports: _Ports) -> str:
    """The DC's smb.conf: written at provisioning and again at every restore (paths
    and ports change), never taken from the cache. ``interfaces`` has a netmask:
    Samba accepts a bare address only if an interface has it, and lo has 127.0.0.1
    alone; with "/8" it binds 127.0.0.2 too (that address only)."""
    shares = [f"[sysvol]\npath = {base}/state/sysvol\nread only = no\n",
              f"[netlogon]\npath = {base}/state/sysvol/{spec.dns_name}/scripts\nread only = no\n"]
    if spec.share:
        shares.append(f"[{spec.share}]\npath = {base}/shares/{spec.share}\nread only = no\n")
    return f"""[global]
netbios name = {spec.host.upper()}
realm = {spec.realm}
workgroup = {spec.netbios}
server role = active directory domain controller
server services = -nbt -wrepl -dns -dnsupdate -ntp_signd -kcc
disable netbios = yes
interfaces = {spec.address}/8
bind interfaces only = yes
smb ports = {ports.smb}
krb5 port = {ports.kdc}
kpasswd port = {ports.kpasswd}
rpc server dynamic port range = {ports.rpc_low}-{ports.rpc_low + 20}
idmap_ldb:use rfc2307 = yes
private dir = {base}/private
lock directory = {base}
state directory = {base}/state
cache directory = {base}/cache
binddns dir = {base}/bind-dns
log file = {base}/log/log.%m
log level = 1
tls enabled = yes
tls keyfile = {base}/private/tls/key.pem
tls certfile = {base}/private/tls/cert.pem
tls cafile = {base}/private/tls/ca.pem
load printers = no
printing = bsd
printcap name = /dev/null
disable spoolss = yes
server min protocol = SMB2_10

""" + "\n".join(shares)


def _krb5_conf(spec: _Spec, ports: _Ports) -> str:
    """For clients (kinit, kvno, GSSAPI): the realm's KDC on the DC's port, always over
    TCP (``udp_preference_limit = 1``: the port was checked free for TCP only; MIT 1.20
    does not understand a ``tcp/`` prefix on an address), no DNS, AES only."""
    aes = "aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96"
    return f"""[libdefaults]
    default_realm = {spec.realm}
    dns_lookup_realm = false
    dns_lookup_kdc = false
    rdns = false
    dns_canonicalize_hostname = false
    udp_preference_limit = 1
    default_tkt_enctypes = {aes}
    default_tgs_enctypes = {aes}
    permitted_enctypes = {aes}

[realms]
    {spec.realm} = {{
        kdc = {spec.address}:{ports.kdc}
        kpasswd_server = {spec.address}:{ports.kpasswd}
        admin_server = {spec.address}:{ports.kpasswd}
    }}

[domain_realm]
    .{spec.dns_name} = {spec.realm}
    {spec.dns_name} = {spec.realm}
"""


# ---- provisioning and its cache -------------------------------------------------


def _samba_version() -> str:
    return _run([_binary("samba"), "-V"], "samba -V").stdout.decode().strip()


def _cache_key(spec: _Spec) -> str:
    digest = hashlib.sha256()
    for part in (str(CACHE_VERSION), _samba_version(), json.dumps(asdict(spec), sort_keys=True),
                 POPULATE_SCRIPT.read_text(), _smb_conf(spec, Path("/base"), _Ports(1, 2, 3, 4))):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def _cached_archive(spec: _Spec) -> Path:
    """The tar of ``spec``'s provisioned domain, built when missing (one process at a
    time: the others wait on the lock, then find it)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    archive = CACHE_DIR / f"samba-ad-{spec.netbios.lower()}-{_cache_key(spec)}.tar"
    with open(CACHE_DIR / "samba-ad.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not archive.exists():
            _provision(spec, archive)
            for stale in CACHE_DIR.glob(f"samba-ad-{spec.netbios.lower()}-*.tar"):
                if stale != archive:
                    stale.unlink()  # made from other inputs: never used again
    return archive


def _populate_spec(spec: _Spec, base: Path) -> dict[str, object]:
    """What samba_ad_populate.py reads on its standard input."""
    return {
        "conf": str(base / "etc" / "smb.conf"),
        "policy": {"lockout_threshold": LOCKOUT_THRESHOLD,
                   "lockout_duration_min": LOCKOUT_DURATION_MIN,
                   "reset_lockout_after_min": RESET_LOCKOUT_AFTER_MIN},
        "ous": list(spec.ous),
        "groups": [{"name": g.name, "member_of": list(g.member_of)} for g in spec.groups],
        "users": [{"user": u.account.user, "password": u.account.password,
                   "given_name": u.given_name, "surname": u.surname, "ou": u.ou,
                   "member_of": list(u.member_of), "state": u.state, "spn": u.spn,
                   "enctypes": u.enctypes} for u in spec.users],
        "share": spec.share and {
            "name": spec.share, "path": str(base / "shares" / spec.share),
            "folders": {name: {"group": f.group, "files": dict(f.files)}
                        for name, f in spec.folders}},
        "keytab": spec.keytab_principal and {
            "path": str(base / "private" / "http.keytab"), "principal": spec.keytab_principal},
    }


def _provision(spec: _Spec, archive: Path) -> None:
    if not Path(SYSTEM_PYTHON).exists() or subprocess.run(
            [SYSTEM_PYTHON, "-c", "import samba.samdb"], capture_output=True).returncode:
        raise RuntimeError(f"{SYSTEM_PYTHON} cannot import samba: apt-get install "
                           f"{DEBIAN_PACKAGES} (scripts/test.sh does)")
    work = Path(tempfile.mkdtemp(prefix="mosaic-ad-provision-"))
    try:
        base = work / "dc"
        _run([_binary("samba-tool"), "domain", "provision", f"--targetdir={base}",
              f"--realm={spec.realm}", f"--domain={spec.netbios}", "--server-role=dc",
              "--dns-backend=NONE", "--use-rfc2307", f"--host-name={spec.host}",
              f"--host-ip={spec.address}", f"--adminpass={spec.admin_password}",
              f"--option=interfaces = {spec.address}", "--option=bind interfaces only = yes",
              f"--option=log file = {work}/provision.log"],
             "samba-tool domain provision")
        _tls_files(spec, base / "private" / "tls")
        _prepare(spec, base, _Ports.free())
        _run([SYSTEM_PYTHON, "-I", str(POPULATE_SCRIPT)], "samba_ad_populate.py",
             input=json.dumps(_populate_spec(spec, base)).encode())
        partial = archive.with_suffix(f".{os.getpid()}.partial")
        _run([_binary("tar"), "--xattrs", "--xattrs-include=*", "--acls", "-C", str(base),
              "-cf", str(partial), "."], "tar")
        partial.replace(archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prepare(spec: _Spec, base: Path, ports: _Ports) -> None:
    """Write the DC's configuration for ``ports`` (at provisioning and at every restore)."""
    for sub in ("etc", "run", "log", "cache"):
        (base / sub).mkdir(exist_ok=True)
    (base / "etc" / "smb.conf").write_text(_smb_conf(spec, base, ports))
    (base / "etc" / "krb5.conf").write_text(_krb5_conf(spec, ports))


# ---- running ----------------------------------------------------------------------


def _listener(address: str, port: int) -> str | None:
    """Who listens on ``address:port`` (a description), None when nobody does."""
    try:
        with socket.create_connection((address, port), timeout=1):
            pass
    except OSError:
        return None
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            with suppress(psutil.Error):
                return f"pid {conn.pid}: {' '.join(psutil.Process(conn.pid).cmdline())}"
    return "an unknown process"


class _PortTaken(RuntimeError):
    """One of the DC's free ports was taken before samba bound it."""


class DomainController:
    """One running DC restored from the cache into its own temporary directory."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.base = Path(tempfile.mkdtemp(prefix=f"mosaic-ad-{spec.netbios.lower()}-"))
        self.base.chmod(0o755)  # the share's users (idmapped uids) must traverse it
        self.conf = self.base / "etc" / "smb.conf"
        self.ports = _Ports.free()
        self._process: subprocess.Popen[bytes] | None = None
        self._said_before = 0

    def restore(self) -> DomainController:
        archive = _cached_archive(self.spec)
        _run([_binary("tar"), "--xattrs", "--xattrs-include=*", "--acls", "-C", str(self.base),
              "-xf", str(archive)], "tar -x")
        _prepare(self.spec, self.base, self.ports)
        return self

    def start(self) -> DomainController:
        for port in FIXED_PORTS:
            holder = _listener(self.spec.address, port)
            if holder is not None:
                raise RuntimeError(
                    f"{self.spec.address}:{port} is taken ({holder}): Samba's LDAP and "
                    "endpoint mapper ports are fixed, so no second DC can start there "
                    "(a DC left over by a killed test run stops when it notices)")
        Path("/run/samba").mkdir(exist_ok=True)  # where base/run is mounted, for samba only
        attempt = 1
        while True:
            try:
                return self._start_once()
            except _PortTaken:
                if attempt == START_ATTEMPTS:
                    raise
            attempt += 1
            self.ports = _Ports.free()  # one was taken between choosing and binding
            _prepare(self.spec, self.base, self.ports)

    def _start_once(self) -> DomainController:
        out = self.base / "log" / "samba.out"
        self._said_before = out.stat().st_size if out.exists() else 0
        log = open(out, "ab")  # noqa: SIM115 (kept by Popen)
        # unshare: a mount namespace of the DC's own whose /run/samba is base/run:
        # smbd reaches winbindd only through /run/samba/winbindd (built into
        # libwbclient), so two DCs need two of them, and the host's stays untouched.
        # -i: the foreground, logs to stdout, and samba ends (with smbd, winbindd...)
        # when its standard input closes: when this process ends, however it ends
        self._process = subprocess.Popen(
            [_binary("unshare"), "--mount", "--propagation", "private", "--pid", "--fork",
             "--kill-child", "--mount-proc", "--",
             "/bin/sh", "-c", 'mount --bind "$1" /run/samba && shift && exec "$@"', "sh",
             str(self.base / "run"), _binary("samba"), "-i", "-M", PROCESS_MODEL,
             "-s", str(self.conf)],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "KRB5_CONFIG": str(self.base / "etc" / "krb5.conf")},
            start_new_session=True)
        log.close()
        try:
            emulator.wait_until_ready(f"samba AD DC {self.spec.realm}", {"samba": self._process},
                                      self.answers, READY_TIMEOUT_S,
                                      lambda _n: self._last_words())
        except BaseException as error:
            self.stop()
            if "ADDRESS_ALREADY_ASSOCIATED" in str(error):
                raise _PortTaken(str(error)) from error
            raise
        return self

    def answers(self) -> bool:
        for port in (636, self.ports.smb, self.ports.kdc):
            try:
                with socket.create_connection((self.spec.address, port), timeout=1):
                    pass
            except OSError:
                return False
        return True

    def _last_words(self) -> str:
        """The end of what samba said since the last start."""
        out = self.base / "log" / "samba.out"
        if not out.exists():
            return ""
        with open(out, "rb") as said:
            said.seek(self._said_before)
            return said.read().decode(errors="replace")[-2000:].strip()

    def _stragglers(self) -> list[psutil.Process]:
        """Processes of this DC still alive: samba's process group, and anything naming
        its smb.conf (smbd and winbindd make sessions of their own; samba-dcerpcd is
        nobody's child)."""
        found = []
        for process in psutil.process_iter(["cmdline"]):
            with suppress(psutil.Error):
                in_group = (self._group is not None
                            and os.getpgid(process.pid) == self._group)
                if in_group or any(str(self.conf) in arg
                                   for arg in process.info["cmdline"] or ()):
                    found.append(process)
        return found

    _group: int | None = None

    def stop(self) -> None:
        """End every process of the DC: samba stops its children when its standard
        input closes; whatever is still there after STOP_TIMEOUT_S is killed."""
        process, self._process = self._process, None
        if process is not None:
            self._group = process.pid
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while (left := self._stragglers()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for straggler in left:
            with suppress(psutil.Error):
                straggler.send_signal(signal.SIGKILL)
        psutil.wait_procs(left, timeout=5)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def domain(self) -> ADDomain:
        spec, base = self.spec, self.base
        common = dict(
            realm=spec.realm, netbios=spec.netbios, dns_name=spec.dns_name,
            base_dn=spec.base_dn, dc_fqdn=spec.fqdn, server_name=spec.fqdn,
            address=spec.address, ldaps_url=f"ldaps://{spec.address}:636",
            ldap_url=f"ldap://{spec.address}:389", ca_file=base / "private" / "tls" / "ca.pem",
            admin=_account("Administrator", spec.admin_password, spec.realm),
            kdc_host=spec.address, kdc_port=self.ports.kdc, kpasswd_port=self.ports.kpasswd,
            krb5_conf=base / "etc" / "krb5.conf", smb_port=self.ports.smb,
            dns=tuple((name, spec.dn(name)) for name in
                      [u.account.user for u in spec.users] + [g.name for g in spec.groups]),
        )
        accounts = {u.account.user.replace("-", "_"): u.account for u in spec.users}
        if spec is CORP:
            return Domain(**common, users_ou_dn=f"{USERS_OU},{spec.base_dn}",  # type: ignore[arg-type]
                          keytab=base / "private" / "http.keytab", http_spn=HTTP_SPN,
                          share=spec.share or "", **accounts)
        return OtherDomain(**common, **accounts)  # type: ignore[arg-type]


def _start(spec: _Spec) -> DomainController:
    controller = DomainController(spec)
    try:
        return controller.restore().start()
    except BaseException:
        controller.remove()
        raise


_corp = emulator.OnePerProcess(lambda: _start(CORP), DomainController.remove)
_other = emulator.OnePerProcess(lambda: _start(OTHER), DomainController.remove)


def controller() -> DomainController:
    """This test process's CORP DC, started on first use."""
    return _corp()


def other_controller() -> DomainController:
    """This test process's OTHER DC, started on first use."""
    return _other()


def domain() -> Domain:
    """CORP.EXAMPLE.TEST, started on first use (once per test process)."""
    found = _corp().domain()
    assert isinstance(found, Domain)
    return found


def other_domain() -> OtherDomain:
    """OTHER.EXAMPLE.TEST on 127.0.0.2, started on first use; runs beside :func:`domain`."""
    found = _other().domain()
    assert isinstance(found, OtherDomain)
    return found


@pytest.fixture(scope="session")
def ad_domain() -> Iterator[Domain]:
    yield domain()
