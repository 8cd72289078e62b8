"""How the tests' Samba AD domains are made (for tests/support/samba_ad.py).

A :class:`DomainSpec` says what a domain holds. :func:`cached_archive` returns a
gzipped tar of that domain provisioned and populated, built on first use and kept
under ``$MOSAIC_TEST_CACHE`` (default /var/tmp/mosaic-test-cache), named by a hash
of everything that goes into it (the spec, samba_ad_populate.py, the smb.conf
template, Samba's version, :data:`CACHE_VERSION`): a changed input builds a new
one. An archive unused for :data:`UNUSED_FOR_S` is deleted (not at once: two
checkouts of different versions may share the machine). Building takes ~5 s per
domain (``samba-tool domain provision`` is most of it); restoring ~0.1 s.

The cache holds no port and no path: :func:`prepare` writes the smb.conf and
krb5.conf of every restored copy, for its directory and its ports. The shares'
NT ACLs live in xattrs (``security.NTACL``) and POSIX ACLs: tar keeps both.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import emulator

DEBIAN_PACKAGES = "samba-ad-dc samba-ad-provision krb5-user ldap-utils winbind smbclient"
#: Samba's Python bindings exist for Debian's own interpreter only, never for a venv
SYSTEM_PYTHON = "/usr/bin/python3"
POPULATE_SCRIPT = Path(__file__).with_name("samba_ad_populate.py")
CACHE_DIR = Path(os.environ.get("MOSAIC_TEST_CACHE", "/var/tmp/mosaic-test-cache"))
#: raise when the cached domains must be rebuilt for a reason the hash cannot see
CACHE_VERSION = 1
TAR_OPTIONS = ("--xattrs", "--xattrs-include=*", "--acls", "--gzip")
UNUSED_FOR_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Account:
    user: str
    password: str
    upn: str


@dataclass(frozen=True)
class UserSpec:
    """A user to create: its account, names (displayName "<given> <surname>"),
    its container (an OU of the domain, else CN=Users), its groups, and the state
    it is put in (see samba_ad_populate.set_state)."""

    account: Account
    given_name: str
    surname: str
    ou: str | None = None
    member_of: tuple[str, ...] = ()
    state: str | None = None
    spn: str | None = None
    enctypes: int | None = None


@dataclass(frozen=True)
class GroupSpec:
    name: str
    member_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class FolderSpec:
    """A folder of the DC's share that one group only may read, and its files."""

    name: str
    group: str
    files: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DomainSpec:
    """Everything a provisioned domain is made of."""

    realm: str
    netbios: str
    host: str
    address: str
    admin_password: str
    lockout_threshold: int
    lockout_duration_min: int
    reset_lockout_after_min: int
    ous: tuple[str, ...] = ()
    groups: tuple[GroupSpec, ...] = ()
    users: tuple[UserSpec, ...] = ()
    share: str | None = None
    folders: tuple[FolderSpec, ...] = ()
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

    def dn(self, name: str) -> str:
        """The DN of one of the spec's users or groups."""
        for user in self.users:
            if user.account.user == name:
                return f"CN={name},{user.ou or 'CN=Users'},{self.base_dn}"
        if any(group.name == name for group in self.groups):
            return f"CN={name},CN=Users,{self.base_dn}"
        raise KeyError(f"{name} is no user or group of {self.realm}")

    def names(self) -> list[str]:
        return [u.account.user for u in self.users] + [g.name for g in self.groups]


@dataclass(frozen=True)
class Ports:
    """The DC's ports that are not fixed in Samba's source: chosen at every start."""

    smb: int
    kdc: int
    kpasswd: int
    rpc_low: int

    @classmethod
    def free(cls) -> Ports:
        return cls(*(emulator.free_port() for _ in range(4)))


def binary(name: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise RuntimeError(f"{name} is not installed: apt-get install {DEBIAN_PACKAGES} "
                           "(scripts/test.sh does)")
    return found


def run(command: list[str], what: str, stdin: bytes | None = None) -> str:
    """Run ``command``; its output, or a failure with the end of what it said."""
    done = subprocess.run(command, input=stdin, capture_output=True, timeout=300)
    if done.returncode != 0:
        said = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
        raise RuntimeError(f"{what} failed ({done.returncode}): {said}")
    return done.stdout.decode(errors="replace")


# ---- configuration ----------------------------------------------------------------


def smb_conf(spec: DomainSpec, base: Path, ports: Ports) -> str:
    """The DC's smb.conf. ``interfaces`` has a netmask: Samba takes a bare address
    only if an interface has it, and lo has 127.0.0.1 alone; with "/8" it binds
    127.0.0.2 too (that address only). The pid, ncalrpc and winbindd socket
    directories stay at /run/samba, which is ``base/run`` for the DC (samba_ad.py)."""
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


def krb5_conf(spec: DomainSpec, ports: Ports) -> str:
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


def prepare(spec: DomainSpec, base: Path, ports: Ports) -> None:
    """Write the DC's smb.conf and krb5.conf (etc/) for ``base`` and ``ports``."""
    for sub in ("etc", "run", "log", "cache"):
        (base / sub).mkdir(exist_ok=True)
    (base / "etc" / "smb.conf").write_text(smb_conf(spec, base, ports))
    (base / "etc" / "krb5.conf").write_text(krb5_conf(spec, ports))


# ---- certificates -----------------------------------------------------------------


def tls_files(spec: DomainSpec, folder: Path) -> None:
    """ca.pem (its key is thrown away), and the DC's key.pem and cert.pem, which the
    CA signs, naming the DC's FQDN, short name, realm, localhost, 127.0.0.1, ::1 and
    its own address."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"Mosaic test CA {spec.realm}")
    ca = (_builder(ca_name, ca_name, ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
              encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName(name) for name in (spec.fqdn, spec.host, spec.dns_name, "localhost")]
    names += [x509.IPAddress(ipaddress.ip_address(address))
              for address in dict.fromkeys(("127.0.0.1", "::1", spec.address))]
    cert = (_builder(_name(spec.fqdn), ca_name, key.public_key())
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


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name,
             public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650)))


# ---- provisioning and the cache ---------------------------------------------------


def cache_key(spec: DomainSpec) -> str:
    digest = hashlib.sha256()
    for part in (str(CACHE_VERSION), run([binary("samba"), "-V"], "samba -V"),
                 json.dumps(asdict(spec), sort_keys=True), POPULATE_SCRIPT.read_text(),
                 smb_conf(spec, Path("/base"), Ports(1, 2, 3, 4))):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def cached_archive(spec: DomainSpec) -> Path:
    """The archive of ``spec``'s provisioned domain, built when missing (by one test
    process at a time: the others wait on the lock, then find it)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    prefix = f"samba-ad-{spec.netbios.lower()}-"
    archive = CACHE_DIR / f"{prefix}{cache_key(spec)}.tar.gz"
    with open(CACHE_DIR / "samba-ad.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not archive.exists():
            _provision(spec, archive)
        archive.touch()  # used: its mtime says when last
        for stale in CACHE_DIR.glob(f"{prefix}*.tar*"):
            if time.time() - stale.stat().st_mtime > UNUSED_FOR_S:
                stale.unlink()
    return archive


def restore(spec: DomainSpec, base: Path) -> None:
    run([binary("tar"), *TAR_OPTIONS, "-C", str(base), "-xf", str(cached_archive(spec))],
        "tar -x")


def populate_input(spec: DomainSpec, base: Path) -> dict[str, object]:
    """What samba_ad_populate.py reads on its standard input."""
    return {
        "conf": str(base / "etc" / "smb.conf"),
        "policy": {"lockout_threshold": spec.lockout_threshold,
                   "lockout_duration_min": spec.lockout_duration_min,
                   "reset_lockout_after_min": spec.reset_lockout_after_min},
        "ous": list(spec.ous),
        "groups": [{"name": g.name, "member_of": list(g.member_of)} for g in spec.groups],
        "users": [{"user": u.account.user, "password": u.account.password,
                   "given_name": u.given_name, "surname": u.surname, "ou": u.ou,
                   "member_of": list(u.member_of), "state": u.state, "spn": u.spn,
                   "enctypes": u.enctypes} for u in spec.users],
        "share": spec.share and {
            "name": spec.share, "path": str(base / "shares" / spec.share),
            "folders": {f.name: {"group": f.group, "files": dict(f.files)}
                        for f in spec.folders}},
        "keytab": spec.keytab_principal and {
            "path": str(base / "private" / "http.keytab"), "principal": spec.keytab_principal},
    }


def _provision(spec: DomainSpec, archive: Path) -> None:
    _check_system_python()
    work = Path(tempfile.mkdtemp(prefix="mosaic-ad-provision-"))
    try:
        base = work / "dc"
        run([binary("samba-tool"), "domain", "provision", f"--targetdir={base}",
             f"--realm={spec.realm}", f"--domain={spec.netbios}", "--server-role=dc",
             "--dns-backend=NONE", "--use-rfc2307", f"--host-name={spec.host}",
             f"--host-ip={spec.address}", f"--adminpass={spec.admin_password}",
             f"--option=log file = {work}/provision.log"],
            "samba-tool domain provision")
        tls_files(spec, base / "private" / "tls")
        prepare(spec, base, Ports.free())
        # -I: not the script's folder on sys.path (tests/support/samba.py is no samba)
        run([SYSTEM_PYTHON, "-I", str(POPULATE_SCRIPT)], "samba_ad_populate.py",
            json.dumps(populate_input(spec, base)).encode())
        partial = archive.with_name(f"{archive.name}.{os.getpid()}.partial")
        run([binary("tar"), *TAR_OPTIONS, "-C", str(base), "-cf", str(partial), "."], "tar")
        partial.replace(archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_system_python() -> None:
    usable = Path(SYSTEM_PYTHON).exists() and subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", "import samba.samdb"], capture_output=True).returncode == 0
    if not usable:
        raise RuntimeError(f"{SYSTEM_PYTHON} cannot import samba: apt-get install "
                           f"{DEBIAN_PACKAGES} (scripts/test.sh does)")
