"""What the hostile suite shares: raw HTTP over a socket and a real ``mosaic serve`` process.

A hostile request is written byte for byte (no client library would send a
chunk size of ``-5``), and its answer is read back as plain bytes. The server
runs as a separate process, as in production, so that its log, its workers'
memory and its process tree can be inspected.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

#: What a Python traceback looks like in a log file.
TRACEBACK = re.compile(r"^Traceback \(most recent call last\):", re.MULTILINE)


@dataclass
class Reply:
    """One raw HTTP answer; ``status`` is 0 when the server closed without answering."""

    status: int
    headers: dict[str, str]
    body: bytes
    #: True when the server closed the connection after this answer.
    closed: bool


def basic(login: str, password: str) -> str:
    token = base64.b64encode(f"{login}:{password}".encode()).decode()
    return f"Authorization: Basic {token}\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_request(port: int, data: bytes, timeout: float = 10.0,
                source: str = "127.0.0.1") -> Reply:
    """Send ``data`` as is on a new connection and read one answer.

    ``source`` picks the client's loopback address (any of 127.0.0.0/8), so a
    test can play several client addresses.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(source, 0)) as sock:
        # The server may answer and close before it has read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return read_reply(sock)


def read_reply(sock: socket.socket) -> Reply:
    """Read one answer: the head, then a Content-Length body or up to the close."""
    buffer = b""
    try:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return Reply(0, {}, buffer, True)
            buffer += chunk
    except (ConnectionResetError, TimeoutError):
        return Reply(0, {}, buffer, True)
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", -1))
    closed = False
    try:
        while length < 0 or len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            body += chunk
        if not closed:
            sock.settimeout(0.5)
            closed = sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        closed = True
    return Reply(status, headers, body, closed)


@dataclass
class ServerProcess:
    """``python -m mosaic serve`` on a config written from a dict; the log in a file."""

    config: dict[str, Any]
    base: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.config["server"]["listen"].rpartition(":")[2])

    @property
    def config_path(self) -> Path:
        return self.base / "mosaic.yaml"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def start(self, wait: bool = True) -> ServerProcess:
        self.config_path.write_text(yaml.safe_dump(self.config))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mosaic", "serve", "--config", str(self.config_path),
                 *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if wait:
            self.wait_until_up()
        return self

    def wait_until_up(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"mosaic exited {self.process.returncode}:\n{self.log()}")
            try:
                if raw_request(self.port, b"OPTIONS / HTTP/1.1\r\nHost: x\r\n"
                               b"Connection: close\r\n\r\n", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"mosaic did not start:\n{self.log()}")

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tracebacks(self) -> int:
        return len(TRACEBACK.findall(self.log()))

    def serving_processes(self) -> list[psutil.Process]:
        """The processes that serve requests: the workers, or the only process."""
        assert self.process is not None
        parent = psutil.Process(self.process.pid)
        return parent.children() or [parent]

    def rss_mib(self) -> float:
        return max(p.memory_info().rss for p in self.serving_processes()) / 2**20

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def two_tenant_process(base: Path, **server: Any) -> ServerProcess:
    """The shared acme/globex tenants (tests.support.tenants) on a free port, not started.

    ``server`` overrides server settings, e.g. ``workers=2``.
    """
    from tests.support import tenants

    config = tenants.two_tenants(base)
    config["server"].update(listen=f"127.0.0.1:{free_port()}", **server)
    return ServerProcess(config, base)


def read_replies(sock: socket.socket, count: int) -> list[Reply]:
    """Read ``count`` answers from one connection (each framed by Content-Length),
    leaving nothing of the next one consumed; ``closed`` says the server closed after it."""
    buffer, replies = b"", []
    while len(replies) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return [*replies, Reply(0, {}, buffer, True)]
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in
                   (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(buffer) < length and (chunk := sock.recv(65536)):
            buffer += chunk
        body, buffer = buffer[:length], buffer[length:]
        closed = headers.get("connection", "").lower() == "close"
        replies.append(Reply(int(lines[0].split()[1]), headers, body, closed))
    return replies


def wait_until_every_worker_listens(process: ServerProcess, seconds: float = 60) -> None:
    """``wait_until_up`` needs one worker; a test that reads the log needs them all
    started, or a late worker's start-up lines land among its own."""
    expected = int(process.config["server"].get("workers", 1))
    deadline = time.monotonic() + seconds
    while process.log().count("mosaic.server: listening on") < expected:
        assert time.monotonic() < deadline, process.log()
        time.sleep(0.1)


#: alice of acme (tests.support.tenants), as a ready header line
ALICE_AUTH = basic("alice@acme.example", "alice-secret").encode()
#: what a file the hostile tests try to damage holds before each of them
PREVIOUS = b"previous version of keep.txt\n"


def request(head: bytes, body: bytes = b"", auth: bool = True) -> bytes:
    """A request from ``head`` (the request line and fields, without the empty
    line): Host added, alice's credentials unless ``auth`` is False."""
    return head + b"\r\nHost: 127.0.0.1\r\n" + (ALICE_AUTH if auth else b"") + b"\r\n" + body


def keep_file(server: ServerProcess) -> Path:
    """acme's ``/keep.txt``, written afresh with :data:`PREVIOUS`."""
    path = server.base / "acme-root" / "keep.txt"
    path.write_bytes(PREVIOUS)
    return path
