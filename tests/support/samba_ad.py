"""Real Samba Active Directory domain controllers on loopback for the tests.

:func:`domain` starts, once per test process, Debian's ``samba`` (the AD DC: its
own LDAP server, KDC and kpasswd, with smbd and winbindd as children) as root for
``CORP.EXAMPLE.TEST`` (NetBIOS ``CORP``, DC ``dc1.corp.example.test``) on
127.0.0.1, and returns a :class:`Domain`: URLs, the CA file, a krb5.conf, ports and
the accounts. :func:`other_domain` starts a second, unrelated domain,
``OTHER.EXAMPLE.TEST`` on 127.0.0.2 (:class:`OtherDomain`); both run at once. Both
are stopped when the test process exits.

What CORP holds (:data:`CORP`): groups Staff > Finance > Accounting (nested) and
Engineering; alice (Accounting), bob (Engineering), ivan (Finance) in
``OU=Mosaic Users``; carol (no group), lena (a spare a test may lock out), mike
(no group: a spare whose password a test may change) and the
refused ones in CN=Users, each failing a bind with its own AD sub-code: dave
disabled (533), erin locked out (775, for good: a password policy object of her
own never unlocks her), frank must change his password (773), gina expired (701),
hank has no logon hours (530); ``svc-mosaic`` for LDAP searches and ``svc-http``
holding ``HTTP/mosaic.corp.example.test`` (AES only, its keytab exported); and the
DC's own share ``pt``, whose finance/ only Finance may read and eng/ only
Engineering (NT ACLs). OTHER (:data:`OTHER`) holds olga (in a group Finance,
named as CORP's on purpose), oscar, and an alice with CORP's alice's password (one
name and password in two domains: the isolation tests' twin). The lockout policy is in
:data:`LOCKOUT_THRESHOLD` and the two constants after it; passwords never expire.

Everything of a DC is under a temporary directory. Each ``samba`` runs inside
``unshare --mount --pid``: a mount namespace where /run/samba is the DC's own
``run/`` (smbd reaches winbindd only at /run/samba/winbindd, a path built into
libwbclient: that is what kept AD DCs to one per machine), and a pid namespace
whose processes the kernel kills when samba ends. ``samba -i`` reads a pipe from
this process and stops when it closes: when the tests end, however they end.
The DC binds its own address only; NetBIOS, DNS, WINS, NTP signing and the KCC
are off. LDAP (389, 636, 3268, 3269) and the endpoint mapper (135) are fixed in
Samba's source: a DC already listening on the address (another test process's)
fails the start with a message naming it. SMB, Kerberos, kpasswd and the RPC
range are free ports chosen at every start.

Provisioning takes ~5 s per domain, so it is cached (tests/support/samba_ad_build.py)
and every test process restores a fresh copy (~0.2 s) and starts it (~0.5-0.8 s). A
missing package is a failure with the command that installs it, never a skip.

Use::

    d = samba_ad.domain()
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(d.ca_file),
                    valid_names=[d.server_name])
    ldap3.Connection(ldap3.Server(d.ldaps_url, use_ssl=True, tls=tls),
                     d.alice.upn, d.alice.password).bind()
    subprocess.run(["kinit", f"alice@{d.realm}"], input=d.alice.password, text=True,
                   env={**os.environ, "KRB5_CONFIG": str(d.krb5_conf), "KRB5CCNAME": ...})
    # smbclient //127.0.0.1/pt -p <d.smb_port> -U 'CORP\\alice%...'; d.keytab, d.http_spn
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.support import emulator
from tests.support.samba_ad_build import DEBIAN_PACKAGES as DEBIAN_PACKAGES
from tests.support.samba_ad_build import (
    Account,
    DomainSpec,
    FolderSpec,
    GroupSpec,
    Ports,
    UserSpec,
    binary,
    prepare,
    restore,
)

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
#: Samba's fixed ports: LDAP, LDAPS, global catalog (plain, TLS), endpoint mapper
FIXED_PORTS = (389, 636, 3268, 3269, 135)
#: one process for LDAP, the KDC, RPC... (plus smbd and winbindd): the default
#: "prefork" model starts ~40 processes, too many for a 2-core test machine
PROCESS_MODEL = "single"
#: starts again with fresh ports when one chosen as free was taken meanwhile (seen:
#: a connection in TIME_WAIT on the kpasswd port made samba's bind fail)
START_ATTEMPTS = 3
TEMP_PREFIX = "mosaic-ad-"
#: in a DC's directory: the pid of the test process that owns it
OWNER_FILE = "owner.pid"

#: The domains' lockout policy: LOCKOUT_THRESHOLD wrong passwords within
#: RESET_LOCKOUT_AFTER_MIN minutes lock an account (AD sub-code 775) for
#: LOCKOUT_DURATION_MIN minutes (``samba-tool domain passwordsettings set
#: --account-lockout-threshold=5 --account-lockout-duration=1
#: --reset-account-lockout-after=1 --max-pwd-age=0``).
LOCKOUT_THRESHOLD = 5
LOCKOUT_DURATION_MIN = 1
RESET_LOCKOUT_AFTER_MIN = 1


def _account(user: str, password: str, realm: str) -> Account:
    return Account(user, password, f"{user}@{realm.lower()}")


# Passwords: fixed (a throwaway domain on loopback), and complex enough for Samba's
# default policy (three character classes; no user or display name in them).
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
MIKE = _account("mike", "Tin-Orchard-47!", CORP_REALM)
SVC_MOSAIC = _account("svc-mosaic", "Lookup-Only-Svc-2026!", CORP_REALM)
SVC_HTTP = _account("svc-http", "Negotiate-Svc-2026!", CORP_REALM)
HTTP_SPN = "HTTP/mosaic.corp.example.test"
USERS_OU = "OU=Mosaic Users"
#: msDS-SupportedEncryptionTypes: AES128 (8) | AES256 (16), no RC4
AES_ONLY = 24
#: the DC's share, and its folders: name -> (the one group that may read it, the
#: text of its readme.txt)
SHARE = "pt"
PT_FOLDERS = {
    "finance": ("Finance", "Finance only: the quarterly numbers.\n"),
    "eng": ("Engineering", "Engineering only: the build notes.\n"),
}
_POLICY = {"lockout_threshold": LOCKOUT_THRESHOLD, "lockout_duration_min": LOCKOUT_DURATION_MIN,
           "reset_lockout_after_min": RESET_LOCKOUT_AFTER_MIN}

CORP = DomainSpec(
    realm=CORP_REALM, netbios="CORP", host="dc1", address="127.0.0.1",
    admin_password=ADMIN.password, **_POLICY, ous=(USERS_OU,),
    groups=(GroupSpec("Staff"), GroupSpec("Finance", ("Staff",)),
            GroupSpec("Accounting", ("Finance",)), GroupSpec("Engineering")),
    users=(
        UserSpec(ALICE, "Alice", "Archer", USERS_OU, ("Accounting",)),
        UserSpec(BOB, "Bob", "Builder", USERS_OU, ("Engineering",)),
        UserSpec(CAROL, "Carol", "Carter"),
        UserSpec(DAVE, "Dave", "Disabled", state="disabled"),
        UserSpec(ERIN, "Erin", "Locked", state="locked"),
        UserSpec(FRANK, "Frank", "Changeme", state="must_change"),
        UserSpec(GINA, "Gina", "Expired", state="expired"),
        UserSpec(HANK, "Hank", "Nohours", state="no_logon_hours"),
        UserSpec(IVAN, "Ivan", "Ivanov", USERS_OU, ("Finance",)),
        UserSpec(LENA, "Lena", "Spare"),
        UserSpec(MIKE, "Mike", "Spare"),
        UserSpec(SVC_MOSAIC, "Mosaic", "Lookup"),
        UserSpec(SVC_HTTP, "Mosaic", "Web", spn=HTTP_SPN, enctypes=AES_ONLY),
    ),
    share=SHARE,
    folders=tuple(FolderSpec(name, group, (("readme.txt", text),))
                  for name, (group, text) in PT_FOLDERS.items()),
    keytab_principal=HTTP_SPN,
)

OTHER_REALM = "OTHER.EXAMPLE.TEST"
OTHER_ADMIN = _account("Administrator", "Adm1n-Other-Test-2026!", OTHER_REALM)
OLGA = _account("olga", "Birch-Lagoon-28!", OTHER_REALM)
OSCAR = _account("oscar", "Tundra-Falcon-64!", OTHER_REALM)
#: another person who happens to have CORP\\alice's name and password
OTHER_ALICE = _account("alice", ALICE.password, OTHER_REALM)

OTHER = DomainSpec(
    realm=OTHER_REALM, netbios="OTHER", host="dc2", address="127.0.0.2",
    admin_password=OTHER_ADMIN.password, **_POLICY,
    groups=(GroupSpec("Finance"),),  # the same name as CORP's, on purpose
    users=(UserSpec(OLGA, "Olga", "Other", member_of=("Finance",)),
           UserSpec(OSCAR, "Oscar", "Other"),
           UserSpec(OTHER_ALICE, "Alice", "Otherwise")),
)


@dataclass(frozen=True)
class ADDomain:
    """A running domain controller, as its clients see it. Files are under the DC's
    temporary directory; Kerberos clients want ``KRB5_CONFIG=<krb5_conf>``."""

    realm: str
    netbios: str
    dns_name: str
    base_dn: str
    dc_fqdn: str
    #: the name to verify the DC's certificate against (= dc_fqdn); the certificate
    #: also names the short name, the realm in lower case, localhost, 127.0.0.1, ::1
    #: and the DC's address. There is no DNS: connect to the address.
    server_name: str
    #: the loopback address the DC binds
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
    #: user or group name -> DN (see :meth:`dn`)
    dns: tuple[tuple[str, str], ...] = field(repr=False)

    def dn(self, name: str) -> str:
        """The DN of a user or group of this domain (``alice``, ``Finance``)."""
        for known, dn in self.dns:
            if known == name:
                return dn
        raise KeyError(f"{name} is no user or group of {self.realm}")


@dataclass(frozen=True)
class Domain(ADDomain):
    """CORP.EXAMPLE.TEST (see the module's docstring for who is who)."""

    users_ou_dn: str
    #: the keytab of :attr:`http_spn` (AES keys only), for a GSSAPI acceptor
    keytab: Path
    http_spn: str
    #: the DC's own SMB share (on :attr:`smb_port`), see :data:`PT_FOLDERS`
    share: str
    alice: Account  # Accounting, so Finance and Staff through nesting
    bob: Account  # Engineering
    carol: Account  # Domain Users only
    dave: Account  # disabled: 533
    erin: Account  # locked out for good: 775
    frank: Account  # must change password: 773
    gina: Account  # account expired: 701
    hank: Account  # no logon hours: 530
    ivan: Account  # Finance directly
    lena: Account  # Domain Users only: a spare a test may lock out
    mike: Account  # Domain Users only: a spare whose password a test may change
    svc_mosaic: Account  # a service account for LDAP searches
    svc_http: Account  # holds http_spn, AES only


@dataclass(frozen=True)
class OtherDomain(ADDomain):
    """OTHER.EXAMPLE.TEST: a group Finance (named as CORP's) holding olga; oscar; alice,
    with the same password as CORP's alice (no group)."""

    olga: Account
    oscar: Account
    alice: Account


def _listener(address: str, port: int) -> str | None:
    """Who listens on ``address:port`` (a description), None when nobody does."""
    try:
        with socket.create_connection((address, port), timeout=1):
            pass
    except OSError:
        return None
    for conn in psutil.net_connections("tcp"):
        if (conn.status == psutil.CONN_LISTEN and conn.pid and conn.laddr.port == port
                and conn.laddr.ip in (address, "0.0.0.0", "::")):
            with suppress(psutil.Error):
                return f"pid {conn.pid}: {' '.join(psutil.Process(conn.pid).cmdline())}"
    return "an unknown process"


def _remove_orphans() -> None:
    """Remove the directories of DCs whose test process was killed (no atexit ran)."""
    for base in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        with suppress(OSError, ValueError):
            if not psutil.pid_exists(int((base / OWNER_FILE).read_text())):
                shutil.rmtree(base, ignore_errors=True)


class _PortTaken(RuntimeError):
    """One of the DC's free ports was taken before samba bound it."""


class DomainController:
    """One DC restored from the cache into a temporary directory of its own;
    :meth:`stop` and :meth:`start` keep its data."""

    def __init__(self, spec: DomainSpec) -> None:
        self.spec = spec
        _remove_orphans()
        self.base = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{spec.netbios.lower()}-"))
        self.base.chmod(0o755)  # the share's users (their idmapped uids) traverse it
        (self.base / OWNER_FILE).write_text(str(os.getpid()))
        self.conf = self.base / "etc" / "smb.conf"
        self.ports = Ports.free()
        self._process: subprocess.Popen[bytes] | None = None
        self._said_before = 0

    def restore(self) -> DomainController:
        restore(self.spec, self.base)
        prepare(self.spec, self.base, self.ports)
        return self

    def start(self) -> DomainController:
        for port in FIXED_PORTS:
            holder = _listener(self.spec.address, port)
            if holder is not None:
                raise RuntimeError(
                    f"{self.spec.address}:{port} is taken ({holder}): Samba's LDAP and "
                    "endpoint mapper ports are fixed, so only one DC can listen on "
                    f"{self.spec.address} (another test process's DC stops with it)")
        Path("/run/samba").mkdir(exist_ok=True)  # the mount point of the DC's run/
        attempt = 1
        while True:
            try:
                return self._start_once()
            except _PortTaken:
                if attempt == START_ATTEMPTS:
                    raise
            attempt += 1
            self.ports = Ports.free()
            prepare(self.spec, self.base, self.ports)

    def _start_once(self) -> DomainController:
        out = self.base / "log" / "samba.out"
        self._said_before = out.stat().st_size if out.exists() else 0
        with open(out, "ab") as log:
            self._process = subprocess.Popen(
                self._command(), stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "KRB5_CONFIG": str(self.base / "etc" / "krb5.conf")},
                start_new_session=True)
        try:
            emulator.wait_until_ready(f"samba AD DC {self.spec.realm}", {"samba": self._process},
                                      self.answers, READY_TIMEOUT_S,
                                      lambda _name: self._last_words())
        except BaseException as error:
            self.stop()
            if "ADDRESS_ALREADY_ASSOCIATED" in str(error):
                raise _PortTaken(str(error)) from error
            raise
        return self

    def _command(self) -> list[str]:
        """samba in a mount namespace where /run/samba is base/run and a pid namespace
        that ends with it (--kill-child: with unshare too); ``-i``: in the foreground,
        logging to stdout, ending when its standard input closes."""
        # Private before the bind, so it never shows outside. unshare's own
        # "--propagation private" fails where / is no mount point (a chroot, as in
        # a fresh-machine check): make private the mount that holds /run/samba.
        mount_run = ('{ mount --make-rprivate / 2>/dev/null || mount --make-rprivate '
                     '"$(findmnt -n -o TARGET --target /run/samba)"; } && '
                     'mount --bind "$1" /run/samba && shift && exec "$@"')
        return [binary("unshare"), "--mount", "--propagation", "unchanged", "--pid", "--fork",
                "--kill-child", "--mount-proc", "--", "/bin/sh", "-c", mount_run, "sh",
                str(self.base / "run"), binary("samba"), "-i", "-M", PROCESS_MODEL,
                "-s", str(self.conf)]

    def answers(self) -> bool:
        """Whether LDAPS, SMB and the KDC accept connections, and winbindd does: smbd
        asks it to check every SMB login (NT_STATUS_INTERNAL_ERROR until it listens,
        0.3-0.5 s after the rest)."""
        if not (self.base / "run" / "winbindd" / "pipe").exists():
            return False
        for port in (636, self.ports.smb, self.ports.kdc):
            try:
                with socket.create_connection((self.spec.address, port), timeout=1):
                    pass
            except OSError:
                return False
        return True

    def _last_words(self) -> str:
        """The end of what samba said since it was last started."""
        out = self.base / "log" / "samba.out"
        with suppress(OSError), open(out, "rb") as said:
            said.seek(self._said_before)
            return said.read().decode(errors="replace")[-2000:].strip()
        return ""

    def processes(self) -> list[psutil.Process]:
        """The DC's processes that are still there: samba's pid namespace, and anything
        naming its smb.conf (smbd, winbindd, samba-dcerpcd) as a safety net."""
        found = []
        namespace = self._namespace()
        for process in psutil.process_iter(["cmdline"]):
            with suppress(psutil.Error, OSError):
                if ((namespace and os.readlink(f"/proc/{process.pid}/ns/pid") == namespace)
                        or any(str(self.conf) in arg for arg in process.info["cmdline"] or ())):
                    found.append(process)
        return found

    def _namespace(self) -> str | None:
        if self._process is None:
            return None
        with suppress(psutil.Error, OSError):
            for child in psutil.Process(self._process.pid).children():
                return os.readlink(f"/proc/{child.pid}/ns/pid")
        return None

    def stop(self) -> None:
        """End every process of the DC: closing samba's standard input stops it and its
        children (the kernel ends whatever is left in its pid namespace); anything
        still there after STOP_TIMEOUT_S is killed."""
        left = self.processes()
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()  # --kill-child: samba gets SIGKILL too
                process.wait()
        _gone, alive = psutil.wait_procs(left, timeout=STOP_TIMEOUT_S)
        for straggler in alive:
            with suppress(psutil.Error):
                straggler.send_signal(signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def domain_fields(self) -> dict[str, object]:
        """The :class:`ADDomain` fields of this DC."""
        spec, base = self.spec, self.base
        return dict(
            realm=spec.realm, netbios=spec.netbios, dns_name=spec.dns_name,
            base_dn=spec.base_dn, dc_fqdn=spec.fqdn, server_name=spec.fqdn,
            address=spec.address, ldaps_url=f"ldaps://{spec.address}:636",
            ldap_url=f"ldap://{spec.address}:389", ca_file=base / "private" / "tls" / "ca.pem",
            admin=_account("Administrator", spec.admin_password, spec.realm),
            kdc_host=spec.address, kdc_port=self.ports.kdc, kpasswd_port=self.ports.kpasswd,
            krb5_conf=base / "etc" / "krb5.conf", smb_port=self.ports.smb,
            dns=tuple((name, spec.dn(name)) for name in spec.names()))


def _start(spec: DomainSpec) -> DomainController:
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
    """CORP.EXAMPLE.TEST on 127.0.0.1, started on first use (once per test process)."""
    running = controller()
    return Domain(
        **running.domain_fields(),  # type: ignore[arg-type]
        users_ou_dn=f"{USERS_OU},{CORP.base_dn}",
        keytab=running.base / "private" / "http.keytab", http_spn=HTTP_SPN, share=SHARE,
        alice=ALICE, bob=BOB, carol=CAROL, dave=DAVE, erin=ERIN, frank=FRANK, gina=GINA,
        hank=HANK, ivan=IVAN, lena=LENA, mike=MIKE, svc_mosaic=SVC_MOSAIC, svc_http=SVC_HTTP)


def other_domain() -> OtherDomain:
    """OTHER.EXAMPLE.TEST on 127.0.0.2, started on first use; runs beside :func:`domain`."""
    return OtherDomain(**other_controller().domain_fields(),  # type: ignore[arg-type]
                       olga=OLGA, oscar=OSCAR, alice=OTHER_ALICE)


@pytest.fixture(scope="session")
def ad_domain() -> Iterator[Domain]:
    yield domain()
