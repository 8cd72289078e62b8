"""Real WebDAV clients against the server: cadaver (neon) and rclone's webdav backend."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.live import two_tenant_server

LOGIN, PASSWORD = "alice@acme.example", "alice-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("clients")
    with two_tenant_server(base) as live:
        yield live


def run(args: list[str], home: Path, stdin: str = "") -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120,
                            env={"HOME": str(home), "PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_cadaver_session(server, tmp_path):
    cadaver = shutil.which("cadaver")
    assert cadaver, "cadaver is not installed: run scripts/test.sh"
    (tmp_path / ".netrc").write_text(f"machine 127.0.0.1 login {LOGIN} password {PASSWORD}\n")
    (tmp_path / ".netrc").chmod(0o600)
    local = tmp_path / "upload.txt"
    local.write_text("sent by cadaver\n")
    fetched = tmp_path / "fetched.txt"
    script = (f"mkcol cadaver-dir\ncd cadaver-dir\nput {local} upload.txt\n"
              f"move upload.txt renamed.txt\nls\nget renamed.txt {fetched}\n"
              "lock renamed.txt\nunlock renamed.txt\nquit\n")
    output = run([cadaver, f"{server.url}/projects/"], tmp_path, script)
    assert "renamed.txt" in output
    assert fetched.read_text() == "sent by cadaver\n"
    stored = server.base / "acme-projects" / "cadaver-dir" / "renamed.txt"
    assert stored.read_text() == "sent by cadaver\n"


def test_rclone_sync_and_check(server, tmp_path):
    rclone = shutil.which("rclone")
    assert rclone, "rclone is not installed: run scripts/test.sh"
    obscured = run([rclone, "obscure", PASSWORD], tmp_path).strip()
    remote = f":webdav,url='{server.url}/home/',vendor=other,user='{LOGIN}',pass='{obscured}':"
    source = tmp_path / "tree"
    (source / "a" / "b").mkdir(parents=True)
    for index in range(30):
        (source / "a" / f"f{index}.txt").write_text(f"file {index}\n" * (index + 1))
    (source / "a" / "b" / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    run([rclone, "sync", str(source), remote + "synced"], tmp_path)
    run([rclone, "check", str(source), remote + "synced"], tmp_path)
    back = tmp_path / "back"
    run([rclone, "copy", remote + "synced", str(back)], tmp_path)
    assert (back / "a" / "b" / "big.bin").read_bytes() == (source / "a" / "b" / "big.bin"
                                                            ).read_bytes()
    stored = server.base / "acme-homes" / "alice" / "synced" / "a" / "f29.txt"
    assert stored.read_text() == "file 29\n" * 30
