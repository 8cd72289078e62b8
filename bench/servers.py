"""Starting the servers under test: one subprocess each, on 127.0.0.1 only.

* Mosaic: ``mosaic serve --config FILE`` with one tenant ``bench`` whose root
  and ``/mnt`` mount are two local folders; the tree lives in one of them.
* Stock wsgidav: its own CLI with a config file - FilesystemProvider, default
  settings (8 KiB blocks, 50 cheroot threads, in-memory locks), Basic auth via
  simple_dc; only ``verbose: 1`` so it does not log every request.
* rclone: ``rclone serve webdav`` with ``--user/--pass`` and its defaults.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .davclient import Dav
from .settings import PASSWORD, USER

BIN = Path(sys.executable).parent
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Column:
    """One column of the result table: a server configuration and a URL prefix."""

    name: str
    family: str  # mosaic | wsgidav | rclone
    prefix: str = ""  # where the test tree appears in the URL space
    workers: int = 1
    full: bool = True  # False: the concurrent workloads only


@dataclass
class Running:
    column: Column
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self) -> Dav:
        return Dav("127.0.0.1", self.port, auth_header())


def auth_header() -> str:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return f"Basic {token}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@cache
def password_hash() -> str:
    # Mosaic's production hasher (argon2id, 64 MiB): its cost is part of the stack.
    from mosaic.core.passwords import hash_password

    return hash_password(PASSWORD)


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def mosaic_command(column: Column, work: Path, tree: Path, port: int) -> list[str]:
    """``tree`` is the tenant root, or the /mnt mount when the prefix is /mnt."""
    in_mount = column.prefix == "/mnt"
    root = work / "root" if in_mount else tree
    mount = tree if in_mount else work / "mount"
    for folder in (root, mount):
        folder.mkdir(parents=True, exist_ok=True)
    config = {
        "server": {"listen": f"127.0.0.1:{port}", "data_dir": str(work / "data"),
                   "workers": column.workers},
        "tenants": {"bench": {
            "root": {"type": "local", "root": str(root)},
            "mounts": {"/mnt": {"provider": {"type": "local", "root": str(mount)}}},
            "users": {USER: {"password_hash": password_hash()}},
        }},
    }
    # Its own folder, as in production (/etc/mosaic): Mosaic watches the config's
    # folder, and opening a sibling data folder would wake that watcher.
    (work / "etc").mkdir(exist_ok=True)
    path = _write_yaml(work / "etc" / "mosaic.yaml", config)
    return [str(BIN / "mosaic"), "serve", "--config", str(path)]


def wsgidav_command(column: Column, work: Path, tree: Path, port: int) -> list[str]:
    config = {
        "host": "127.0.0.1",
        "port": port,
        "provider_mapping": {"/": str(tree)},
        "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}},
        "verbose": 1,
    }
    path = _write_yaml(work / "wsgidav.yaml", config)
    return [str(BIN / "wsgidav"), "--config", str(path)]


def rclone_command(column: Column, work: Path, tree: Path, port: int) -> list[str]:
    rclone = shutil.which("rclone")
    if rclone is None:
        raise RuntimeError("rclone not found: apt-get install -y rclone")
    return [rclone, "serve", "webdav", "--addr", f"127.0.0.1:{port}",
            "--user", USER, "--pass", PASSWORD, str(tree)]


COMMANDS = {"mosaic": mosaic_command, "wsgidav": wsgidav_command, "rclone": rclone_command}


def tree_dir(column: Column, work: Path) -> Path:
    """The folder that holds the test tree for this column."""
    return work / "tree"


@contextmanager
def running(column: Column, work: Path) -> Iterator[Running]:
    """Start the column's server on a free port, wait until it answers, stop it after."""
    port = free_port()
    argv = COMMANDS[column.family](column, work, tree_dir(column, work), port)
    log = work / "server.log"
    env = {**os.environ, "RCLONE_CONFIG": str(work / "rclone.conf")}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=work,
                                   env=env, start_new_session=True)
    server = Running(column, process, port, log)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(process)


def wait_ready(server: Running) -> None:
    """Poll until an authenticated PROPFIND of the tree answers 207."""
    deadline = time.monotonic() + READY_TIMEOUT
    path = server.column.prefix + "/read"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.column.name} exited:\n{tail(server.log)}")
        with suppress(OSError), server.client() as dav:
            status, _ = dav.request("PROPFIND", path, headers={"Depth": "0"})
            if status == 207:
                return
            raise RuntimeError(f"{server.column.name}: PROPFIND {path} answered {status}")
        time.sleep(0.2)
    raise RuntimeError(f"{server.column.name} not ready after {READY_TIMEOUT:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Mosaic's supervisor passes it on to its workers), then kill the group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # leftovers of the group we started
    process.wait()


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
