"""A standalone Samba file server (smbd) on 127.0.0.1 for the tests.

:func:`server` starts, once per test process, Debian's ``smbd`` as root on a
free port with a private smb.conf: every directory (shares, passdb, locks,
state, logs, pid files) lives under a temporary directory, NetBIOS is off and
it binds to loopback only. The system's smb.conf and services are never used;
the Debian package itself must not start them either (see
scripts/samba-policy-rc.sh, run by scripts/test.sh before installing).

Accounts and shares (each account has a Unix user, made with ``useradd -M``
once per machine, and an entry in the private passdb):

* ``acme`` - only :data:`ACME` may connect; ``globex`` - only :data:`GLOBEX`;
* ``common`` - both connect, :data:`ACME` may write, :data:`GLOBEX` only read
  (a write is refused by the share: ACCESS_DENIED);
* ``conformance`` - :data:`ACME`; every caller gets a fresh folder of its own
  (:func:`fresh_folder`), used as the mount's ``path``;
* ``dfs`` - a DFS namespace root (``msdfs root = yes``) whose links are symlinks
  (:data:`DFS_LINKS`): ``projects`` to ``dfsdata`` on this server, ``replicated``
  to ``replica`` on :func:`second_server` (smbd on ::1, the same port) and then on
  this one (both serve the same folder: a replicated target, for failover),
  ``remote`` to ``remote`` on the second server only;
* ``azurefiles`` - like an Azure file share: encryption required (so SMB 3 only),
  one account named like a storage account whose password is an 88-character
  base64 key (:data:`AZURE`).

``samba-dcerpcd`` (which smbd would start on demand for RPC pipes and which
outlives it) is not started: the tests need file access only, not share
enumeration. A missing Samba is a failure, never a skip.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import emulator

DEBIAN_PACKAGES = "samba smbclient"
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Account:
    user: str
    password: str


ACME = Account("msmb_acme", "acme-smb-secret")
GLOBEX = Account("msmb_globex", "globex-smb-secret")
#: a storage account's name and key (64 random bytes in base64: 88 characters, as Azure's)
AZURE = Account("mosaicazfiles", base64.b64encode(secrets.token_bytes(64)).decode())
ACCOUNTS = (ACME, GLOBEX, AZURE)

#: share name -> (accounts that may connect, accounts that may only read)
SHARES: dict[str, tuple[tuple[Account, ...], tuple[Account, ...]]] = {
    "acme": ((ACME,), ()),
    "globex": ((GLOBEX,), ()),
    "common": ((ACME, GLOBEX), (GLOBEX,)),
    "conformance": ((ACME,), ()),
    "dfs": ((ACME,), ()),
    "dfsdata": ((ACME,), ()),
    "replica": ((ACME,), ()),
    "azurefiles": ((AZURE,), ()),
}
#: share name -> its lines beyond path, access and ACL
SHARE_OPTIONS: dict[str, tuple[str, ...]] = {
    "dfs": ("msdfs root = yes",),
    # per share, as Azure Files: encryption needs SMB 3, so a 2.x client is refused
    "azurefiles": ("smb encrypt = required",),
}
#: link name in the ``dfs`` share -> its targets (a referral carries no port: the
#: second target server listens on ::1 with the first one's port)
DFS_LINKS = {
    "projects": r"msdfs:127.0.0.1\dfsdata",
    "replicated": r"msdfs:::1\replica,127.0.0.1\replica",
    "remote": r"msdfs:::1\remote",
}
#: shares of :func:`second_server` -> the main server's share whose folder it serves
#: (None: a folder of its own)
SECOND_SHARES: dict[str, str | None] = {"replica": "replica", "remote": None}


def _binary(name: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise RuntimeError(f"{name} is not installed: apt-get install {DEBIAN_PACKAGES} "
                           "(scripts/test.sh does)")
    return found


def _share_section(name: str, base: Path, folder: Path | None = None) -> str:
    allowed, read_only = SHARES.get(name, ((ACME,), ()))
    lines = [f"[{name}]", f"path = {folder or base / 'shares' / name}", "read only = no",
             "valid users = " + " ".join(a.user for a in allowed), *SHARE_OPTIONS.get(name, ())]
    if read_only:
        lines.append("read list = " + " ".join(a.user for a in read_only))
    return "\n".join(lines) + "\n"


def smb_conf(base: Path, port: int, interface: str = "127.0.0.1",
             sections: str | None = None) -> str:
    """The private configuration: a standalone server on loopback, state under ``base``;
    ``sections``: its shares (default: every share of :data:`SHARES`)."""
    state = base / "state"
    rpc_low = emulator.free_port()
    glob = f"""[global]
server role = standalone server
workgroup = MOSAICTEST
interfaces = {interface}
bind interfaces only = yes
smb ports = {port}
disable netbios = yes
rpc start on demand helpers = no
rpc server dynamic port range = {rpc_low}-{rpc_low + 20}
lock directory = {state}/lock
state directory = {state}/state
cache directory = {state}/cache
private dir = {state}/private
pid directory = {state}/pid
ncalrpc dir = {state}/ncalrpc
log file = {state}/log.%m
log level = 1
passdb backend = tdbsam:{state}/private/passdb.tdb
load printers = no
printing = bsd
printcap name = /dev/null
disable spoolss = yes
server min protocol = SMB2_10
server smb encrypt = if_required
host msdfs = yes
acl allow execute always = yes
map to guest = never
"""
    if sections is None:
        sections = "\n".join(_share_section(name, base) for name in SHARES)
    return glob + "\n" + sections


def _wait_until_gone(group: int, seconds: float = 2.0) -> None:
    """Until no process of ``group`` is left: a child killed a moment ago may still hold
    its client's connection open (a client would see the server up), or be a zombie
    whose sockets are closed already (hence the bound)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def _ensure_unix_user(user: str) -> None:
    """smbd maps every SMB account to a Unix user; made once per machine."""
    if subprocess.run(["id", user], capture_output=True).returncode != 0:
        subprocess.run([_binary("useradd"), "-M", "-s", "/usr/sbin/nologin", user],
                       check=True, capture_output=True)


class SambaServer:
    """One smbd on a free loopback port; :meth:`stop` and :meth:`start` keep its data."""

    name = "smbd"

    def __init__(self, interface: str = "127.0.0.1", port: int | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="mosaic-samba-"))
        self.interface = interface
        self.port = port or emulator.free_port()
        self.conf = self.base / "smb.conf"
        self._process: subprocess.Popen[bytes] | None = None
        self._prepare()

    def _prepare(self) -> None:
        self.base.chmod(0o755)  # mkdtemp's 0700 would keep the share users out
        for sub in ("lock", "state", "cache", "private", "pid", "ncalrpc"):
            (self.base / "state" / sub).mkdir(parents=True)
        self.conf.write_text(smb_conf(self.base, self.port))
        self._add_accounts()
        for name, (allowed, _read_only) in SHARES.items():
            folder = self.base / "shares" / name
            folder.mkdir(parents=True)
            shutil.chown(folder, user=allowed[0].user)
            folder.chmod(0o755)
        for link, targets in DFS_LINKS.items():
            (self.base / "shares" / "dfs" / link).symlink_to(targets)

    def _add_accounts(self) -> None:
        for account in ACCOUNTS:
            _ensure_unix_user(account.user)
            subprocess.run([_binary("smbpasswd"), "-c", str(self.conf), "-s", "-a", account.user],
                           input=f"{account.password}\n{account.password}\n".encode(),
                           check=True, capture_output=True)

    def share_dir(self, share: str) -> Path:
        return self.base / "shares" / share

    def start(self) -> SambaServer:
        log = open(self.base / "state" / "smbd.out", "ab")  # noqa: SIM115 (kept by Popen)
        # -F --no-process-group: a child of this process that a signal to it stops;
        # _NO_WINBINDD: a standalone server has no winbindd to ask
        self._process = subprocess.Popen(
            [_binary("smbd"), "-F", "--no-process-group", "--debug-stdout", "-s", str(self.conf)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "_NO_WINBINDD": "1"},
            start_new_session=True)  # smbd signals its whole process group when it ends
        log.close()
        try:
            emulator.wait_until_ready(self.name, {self.name: self._process}, self.answers,
                                      READY_TIMEOUT_S, lambda _n: self._last_words())
        except BaseException:
            self.stop(kill=True)
            raise
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection((self.interface, self.port), timeout=1):
                return True
        except OSError:
            return False

    def _last_words(self) -> str:
        out = self.base / "state" / "smbd.out"
        return out.read_text(errors="replace")[-2000:].strip() if out.exists() else ""

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown) or SIGKILL (a crash) to smbd and the children
        serving each connection (its own process group): after this no client's
        connection is served any more."""
        process, self._process = self._process, None
        if process is not None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            emulator.stop(process, kill)
            with suppress(ProcessLookupError):  # a child still finishing its request
                os.killpg(process.pid, signal.SIGKILL)
            _wait_until_gone(process.pid)
        self._stop_dcerpcd()

    def pause(self) -> None:
        """SIGSTOP smbd and its children: connections stay open, nothing is answered
        (a hung file server)."""
        if self._process is not None:
            os.killpg(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            os.killpg(self._process.pid, signal.SIGCONT)

    def offsets_open_on(self, path: Path) -> list[int]:
        """The file offset of each descriptor smbd's processes hold open on ``path``.

        A folder a client enumerates is open in the smbd child serving it from the
        CREATE to the CLOSE, its offset past 0 once smbd has read part of it; a
        handle kept only for CHANGE_NOTIFY stays at 0."""
        if self._process is None:
            return []
        group, offsets = self._process.pid, []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.getpgid(int(pid)) != group:
                    continue
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                        first_line = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("\n")[0]
                        offsets.append(int(first_line.split()[1]))  # "pos:\t<offset>"
            except (OSError, ValueError, IndexError):  # the process or descriptor ended
                continue
        return offsets

    def _stop_dcerpcd(self) -> None:
        """samba-dcerpcd is no child of smbd: if it ran anyway, end it by its own pid file."""
        pid_file = self.base / "state" / "pid" / "samba-dcerpcd.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


class SecondSambaServer(SambaServer):
    """A second file server for DFS targets: smbd on ::1 with the main one's port
    (a referral names a server but no port, and smbprotocol keeps the caller's),
    serving :data:`SECOND_SHARES`."""

    name = "smbd (::1)"

    def __init__(self, main: SambaServer) -> None:
        self._main = main
        super().__init__("::1", main.port)

    def _prepare(self) -> None:
        self.base.chmod(0o755)
        for sub in ("lock", "state", "cache", "private", "pid", "ncalrpc"):
            (self.base / "state" / sub).mkdir(parents=True)
        sections = []
        for name, served in SECOND_SHARES.items():
            folder = self._main.share_dir(served) if served else self.base / "shares" / name
            if not served:
                folder.mkdir(parents=True)
                shutil.chown(folder, user=ACME.user)
            sections.append(_share_section(name, self.base, folder))
        self.conf.write_text(smb_conf(self.base, self.port, "::1", "\n".join(sections)))
        self._add_accounts()


def _start() -> SambaServer:
    server = SambaServer()
    try:
        return server.start()
    except BaseException:
        server.remove()
        raise


_shared = emulator.OnePerProcess(_start, SambaServer.remove)


def server() -> SambaServer:
    """This test process's smbd, started on first use."""
    return _shared()


def _start_second() -> SambaServer:
    second = SecondSambaServer(server())
    try:
        return second.start()
    except BaseException:
        second.remove()
        raise


_second = emulator.OnePerProcess(_start_second, SambaServer.remove)


def second_server() -> SambaServer:
    """This test process's second smbd (::1, the main one's port), started on first use;
    a test that stops it starts it again (:meth:`SambaServer.start`)."""
    return _second()


def dfs_provider(path: str, account: Account = ACME, **extra: Any) -> dict[str, Any]:
    """An ``smb`` mount of the DFS namespace path ``//127.0.0.1/dfs/<path>``,
    named by its ``unc``; starts both servers."""
    second_server()
    spec: dict[str, Any] = {
        "type": "smb", "unc": f"\\\\127.0.0.1\\dfs\\{path}", "port": server().port,
        "credentials": {"kind": "service_account", "username": account.user,
                        "password": account.password},
    }
    return {**spec, **extra}


def azure_files_provider(path: str = "", key: str | None = None,
                         **extra: Any) -> dict[str, Any]:
    """An ``azure_files`` mount of the Azure-like share on the test smbd."""
    spec: dict[str, Any] = {
        "type": "azure_files", "account": AZURE.user, "account_key": key or AZURE.password,
        "share": "azurefiles", "endpoint": "127.0.0.1", "port": server().port,
    }
    if path:
        spec["path"] = path
    return {**spec, **extra}


def fresh_folder(share: str = "conformance", owner: Account = ACME) -> str:
    """A new empty folder at the top of ``share`` (owned by ``owner``): its name."""
    name = f"t-{secrets.token_hex(6)}"
    folder = server().share_dir(share) / name
    folder.mkdir()
    shutil.chown(folder, user=owner.user)
    return name


def provider(share: str, account: Account = ACME, path: str = "",
             **extra: Any) -> dict[str, Any]:
    """The provider spec of an ``smb`` mount on ``share`` of the test smbd."""
    spec: dict[str, Any] = {
        "type": "smb", "host": "127.0.0.1", "port": server().port, "share": share,
        "credentials": {"kind": "service_account", "username": account.user,
                        "password": account.password},
    }
    if path:
        spec["path"] = path
    return {**spec, **extra}


def smbclient_command(share: str, account: Account, command: str) -> str:
    """Run Samba's own client (``smbclient -c``) against ``share``: another user of
    the file server, outside Mosaic. Returns its output; fails on an error."""
    done = subprocess.run(
        [_binary("smbclient"), f"//127.0.0.1/{share}", "-p", str(server().port),
         "-U", f"{account.user}%{account.password}", "-m", "SMB3", "-c", command],
        capture_output=True, timeout=30)
    said = (done.stdout + done.stderr).decode(errors="replace")
    # smbclient exits 0 after a failed command: its NT_STATUS line tells
    if done.returncode != 0 or "NT_STATUS_" in said:
        raise RuntimeError(f"smbclient -c {command!r} failed: "
                           f"{said[-500:]}")
    return done.stdout.decode(errors="replace")


@pytest.fixture(scope="session")
def samba() -> Iterator[SambaServer]:
    yield server()
