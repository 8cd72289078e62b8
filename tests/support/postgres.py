"""Where the PostgreSQL tests run: a given server, the local one, or a throwaway one.

`admin_url` decides, in this order:

1. ``MOSAIC_TEST_PG``, if set: an admin URL (``postgresql://user:pw@host:port/db``) used as is.
2. ``postgres@127.0.0.1:5432``, if it accepts a password-less (trust) login - as on CI.
3. A throwaway cluster made with Debian's ``initdb``/``pg_ctl`` (package ``postgresql``,
   installed by scripts/test.sh) in a temporary directory: trust auth, listening on
   127.0.0.1 only, on a free port, its Unix socket in that directory. It is stopped and
   deleted when the context exits.

``MOSAIC_TEST_PG_FORCE_LOCAL=1`` skips 1 and 2, so that path 3 can be tested on a
machine that has a server (``MOSAIC_TEST_PG_FORCE_LOCAL=1 pytest tests/test_lock_storage.py``).

When none of the three is possible, `PostgresUnavailable` says why; the caller turns it
into a test failure, never a skip.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

ENV_URL = "MOSAIC_TEST_PG"
ENV_FORCE_LOCAL = "MOSAIC_TEST_PG_FORCE_LOCAL"

#: The ``postgres`` database exists on every cluster, fresh ones included.
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: libpq's smallest useful connect timeout (it treats 1 as 2).
PROBE_TIMEOUT_S = 2
#: Where Debian's postgresql-<ver> packages put the server binaries.
DEBIAN_PG_LIB = Path("/usr/lib/postgresql")
#: System user created by Debian's postgresql-common; initdb refuses to run as root.
SYSTEM_USER = "postgres"
COMMAND_TIMEOUT_S = 120
START_ATTEMPTS = 3  # a free port can be taken between probing it and binding it

# A stock cluster made under the C locale has SQL_ASCII templates, which ICU refuses:
# pin the encoding and the libc locale (C.UTF-8 ships with Debian's glibc), and make the
# cluster's own default ICU too, as on servers set up with a real locale.
INITDB_OPTIONS = (
    "--auth=trust", f"--username={SYSTEM_USER}", "--encoding=UTF8", "--locale=C.UTF-8",
    "--locale-provider=icu", "--icu-locale=en-US", "--no-sync",
)


class PostgresUnavailable(RuntimeError):
    """No server to test against, and none could be started."""


@contextmanager
def admin_url() -> Iterator[str]:
    """Yield a superuser URL of a PostgreSQL server for the test session."""
    if not _force_local():
        given = os.environ.get(ENV_URL)
        if given:
            yield given
            return
        if accepts_trust_login(LOCAL_URL):
            yield LOCAL_URL
            return
    with throwaway_server() as url:
        yield url


def _force_local() -> bool:
    return os.environ.get(ENV_FORCE_LOCAL, "").strip().lower() in ("1", "true", "yes")


def accepts_trust_login(url: str) -> bool:
    """True if ``url`` accepts a login with no password (connection refused: False)."""
    try:
        with psycopg.connect(url, connect_timeout=PROBE_TIMEOUT_S):
            return True
    except psycopg.Error:
        return False


@contextmanager
def throwaway_server() -> Iterator[str]:
    """Run a private cluster for the duration of the context; yield its admin URL."""
    bindir = debian_bindir()
    prefix = _run_as_prefix()
    workdir = Path(tempfile.mkdtemp(prefix="mosaic-pg-"))
    try:
        if prefix:
            _give_to_system_user(workdir)
        cluster = Cluster(bindir, workdir, prefix)
        cluster.init()
        cluster.start()
        try:
            yield cluster.url
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def debian_bindir() -> Path:
    """The bin directory of the newest PostgreSQL installed the Debian way."""
    found = [p.parent for p in DEBIAN_PG_LIB.glob("*/bin/initdb") if (p.parent / "pg_ctl").exists()]
    if not found:
        raise PostgresUnavailable(
            f"no PostgreSQL server to test against: {ENV_URL} is unset and nothing accepts a"
            f" trust login on 127.0.0.1:5432 (or {ENV_FORCE_LOCAL} is set), and there is no"
            f" {DEBIAN_PG_LIB}/<version>/bin/initdb to start a throwaway one. Run"
            f" scripts/test.sh (it installs Debian's postgresql package), or set {ENV_URL}."
        )
    return max(found, key=_version_key)


def _version_key(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))


def _run_as_prefix() -> list[str]:
    """As root, run the server as the system user; otherwise as ourselves."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"initdb refuses to run as root and there is no {SYSTEM_USER!r} user;"
            " run scripts/test.sh (Debian's postgresql package creates it)"
        ) from None
    return ["runuser", "-u", SYSTEM_USER, "--"]


def _give_to_system_user(path: Path) -> None:
    entry = pwd.getpwnam(SYSTEM_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    """One private cluster: data and Unix socket under ``workdir``."""

    bindir: Path
    workdir: Path
    prefix: list[str]
    port: int = 0

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def log(self) -> Path:
        return self.workdir / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql://{SYSTEM_USER}@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), *INITDB_OPTIONS)

    def start(self) -> None:
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            try:
                self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data),
                          "-l", str(self.log), "-o", self._server_options())
                return
            except PostgresUnavailable:
                if attempt == START_ATTEMPTS - 1:
                    raise

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def _server_options(self) -> str:
        # pg_ctl hands -o to a shell: quote the one value that comes from outside.
        # fsync off: the data is thrown away anyway.
        return (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c fsync=off"
                f" -c unix_socket_directories={shlex.quote(str(self.workdir))}")

    def _run(self, tool: str, *args: str) -> None:
        command = [*self.prefix, str(self.bindir / tool), *args]
        # cwd: the system user may not be allowed into ours (e.g. /root).
        # LC_ALL: messages and defaults must not depend on a locale that is not installed.
        result = subprocess.run(
            command, cwd=self.workdir, env={**os.environ, "LC_ALL": "C.UTF-8"},
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
        )
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"throwaway PostgreSQL: {shlex.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        try:
            return "server log:\n" + "\n".join(self.log.read_text().splitlines()[-20:])
        except OSError:
            return ""
