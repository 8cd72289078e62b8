"""The `mosaic` command as an admin uses it: first start, check-config, hash-password, reload."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from mosaic.core.passwords import verify_password
from tests.support import tenants

REPO = Path(__file__).resolve().parent.parent


def mosaic(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mosaic", *args], capture_output=True,
                          text=True, timeout=60, cwd=kwargs.pop("cwd", REPO), **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Running:
    """``mosaic serve`` in a subprocess, its output in a file."""

    def __init__(self, args: list[str], cwd: Path, port: int) -> None:
        self.log = cwd / f"serve-{port}.log"
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("w") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "mosaic", "serve", *args],
                                            cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                requests.options(self.url + "/", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise AssertionError(self.output())

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0, self.output()


def test_first_start_prints_the_admin_password_once(tmp_path):
    port = free_port()
    first = Running(["--listen", f"127.0.0.1:{port}", "--workers", "1"], tmp_path, port)
    try:
        match = re.search(r"user 'admin', password: (\S+)", first.output())
        assert match, first.output()
        password = match.group(1)
        admin = requests.Session()
        admin.auth = ("admin", password)
        assert admin.put(first.url + "/hello.txt", data=b"hi").status_code == 201
        assert admin.request("PROPFIND", first.url + "/", headers={"Depth": "1"}).status_code \
            == 207
    finally:
        first.stop()
    data = tmp_path / "mosaic-data"
    assert (data / "tenants" / "default" / "hello.txt").read_bytes() == b"hi"
    assert password not in (data / "admin.hash").read_text()
    assert oct((data / "admin.hash").stat().st_mode & 0o777) == "0o600"
    second = Running(["--listen", f"127.0.0.1:{port}", "--workers", "1"], tmp_path, port)
    try:
        assert "password" not in second.output().lower()
        assert requests.get(second.url + "/hello.txt", auth=("admin", password)).content == b"hi"
    finally:
        second.stop()


def test_check_config_accepts_the_examples(monkeypatch, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    fake_hash = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA"
    (secrets / "initech-admin.hash").write_text(fake_hash + "\n")
    env = {**os.environ, "MOSAIC_BOB_HASH": "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA",
           "MOSAIC_SECRETS": str(secrets)}
    for example in ("config/single-tenant.yaml", "config/msp.yaml"):
        # The examples name a production machine's files (TLS, /var/lib).
        result = mosaic("check-config", "--schema-only", example, env=env)
        assert result.returncode == 0, result.stderr
        assert "OK" in result.stdout


def test_check_config_reports_every_problem_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "server:\n"
        "  listen: nowhere\n"           # line 2
        "tenants:\n"
        "  acme:\n"
        "    root: {type: local, rot: /x}\n"   # line 5
        "    colour: blue\n"            # line 6
    )
    result = mosaic("check-config", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith(f"{bad}:2:") and "listen" in line for line in lines), lines
    assert any(line.startswith(f"{bad}:5:") and "rot" in line for line in lines), lines
    assert any(line.startswith(f"{bad}:6:") and "colour" in line for line in lines), lines


def test_hash_password_reads_stdin_and_prints_a_verifiable_hash():
    result = mosaic("hash-password", "--stdin", input="correct horse\n")
    assert result.returncode == 0
    digest = result.stdout.strip()
    assert digest.startswith("$argon2id$") and "correct horse" not in digest
    assert verify_password(digest, "correct horse")


def test_reload_applies_a_good_config_and_keeps_running_on_a_bad_one(tmp_path):
    config = tenants.two_tenants(tmp_path)
    port = free_port()
    config["server"].update(listen=f"127.0.0.1:{port}", workers=1)
    path = tmp_path / "mosaic.yaml"
    path.write_text(yaml.safe_dump(config))
    server = Running(["--config", str(path)], tmp_path, port)
    dave = ("dave@globex.example", "dave-secret")
    try:
        assert requests.get(server.url + "/", auth=dave).status_code == 200
        path.write_text("tenants: [this is: not valid\n")  # syntax error: keep running
        server.process.send_signal(signal.SIGHUP)
        _eventually(lambda: "problem" in server.output().lower()
                    or "error" in server.output().lower())
        assert requests.get(server.url + "/", auth=dave).status_code == 200
        del config["tenants"]["globex"]["users"]["dave"]
        path.write_text(yaml.safe_dump(config))  # the file watcher picks this up
        _eventually(lambda: requests.get(server.url + "/", auth=dave).status_code == 401)
        assert requests.get(server.url + "/",
                            auth=("alice@globex.example", "alice-secret")).status_code == 200
    finally:
        server.stop()


def _eventually(condition, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail("condition not met in time")
