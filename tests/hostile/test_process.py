"""Process and port: one instance per address, workers that die with their
master, start-up failures that stop instead of looping, no upload left behind.

Every test drives real ``python -m mosaic serve`` processes.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from mosaic.core.capabilities import BuildContext
from mosaic.providers import local
from mosaic.server import MAX_START_FAILURES
from tests.hostile.support import (
    TRACEBACK,
    ServerProcess,
    basic,
    raw_request,
    read_reply,
    two_tenant_process,
)

ALICE = basic("alice@acme.example", "alice-secret").encode()
#: A start-up failure must end the process well within this (no retry loop).
PROMPTLY = 15.0


def mosaic(*args: str, timeout: float = PROMPTLY,
           preexec_fn: Any = None) -> subprocess.CompletedProcess[str]:
    """Run the ``mosaic`` command to its end; TimeoutExpired if it keeps running."""
    return subprocess.run([sys.executable, "-m", "mosaic", *args], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec_fn)


def written(server: ServerProcess) -> ServerProcess:
    server.config_path.write_text(yaml.safe_dump(server.config))
    return server


def output_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return (result.stdout + result.stderr).strip().splitlines()


def listeners(port: int) -> set[int]:
    """The processes holding a listening socket on ``port``."""
    return {c.pid for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid}


def family(server: ServerProcess) -> set[int]:
    assert server.process is not None
    return {server.process.pid, *(p.pid for p in psutil.Process(server.process.pid).children())}


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def wait_for_workers(server: ServerProcess, count: int) -> None:
    """Until ``count`` workers said they listen (each has built its app)."""
    def listening() -> int:
        log = server.log()
        return log.count("listening on") - log.count("workers listening on")

    wait_for(lambda: listening() >= count, 30, f"{count} workers did not start:\n{server.log()}")


# -- 1. one instance per address ------------------------------------------------


@pytest.mark.parametrize(("first_workers", "second_workers"), [(2, 1), (1, 2)])
def test_a_second_instance_on_the_port_exits_at_once_naming_the_address(
        tmp_path: Path, first_workers: int, second_workers: int) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = two_tenant_process(tmp_path / "a", workers=first_workers)
    second = two_tenant_process(tmp_path / "b", workers=second_workers)
    second.config["server"]["listen"] = first.config["server"]["listen"]
    written(second)
    with first:
        started = time.monotonic()
        result = mosaic("serve", "--config", str(second.config_path))
        assert time.monotonic() - started < PROMPTLY
        assert result.returncode != 0
        lines = output_lines(result)
        assert len(lines) == 1, lines
        assert "address in use" in lines[0] and f"127.0.0.1:{first.port}" in lines[0], lines
        assert "server.listen" in lines[0]
        assert listeners(first.port) <= family(first)
        assert not Path(second.config["server"]["data_dir"]).exists()  # it changed nothing
        assert raw_request(first.port, b"PROPFIND / HTTP/1.1\r\nHost: x\r\nDepth: 0\r\n"
                           + ALICE + b"Connection: close\r\n\r\n").status == 207
    assert first.tracebacks() == 0


def test_a_second_embedded_default_on_the_port_writes_no_password(tmp_path: Path) -> None:
    """The embedded default makes its admin password on first start: a second
    instance must find the port taken before it writes (and prints) one."""
    (tmp_path / "a").mkdir()
    first = two_tenant_process(tmp_path / "a", workers=1)
    with first:
        result = mosaic("serve", "--data-dir", str(tmp_path / "b"),
                        "--listen", first.config["server"]["listen"], "--workers", "1")
        assert result.returncode != 0
        lines = output_lines(result)
        assert len(lines) == 1 and "address in use" in lines[0], lines
        assert not (tmp_path / "b").exists()


# -- 2. workers die with their master --------------------------------------------


def test_kill_9_of_the_master_leaves_no_worker_and_a_restart_serves_alone(
        tmp_path: Path) -> None:
    server = two_tenant_process(tmp_path, workers=2).start()
    try:
        wait_for_workers(server, 2)
        assert server.process is not None
        workers = psutil.Process(server.process.pid).children()
        assert len(workers) == 2
        server.process.kill()
        server.process.wait(timeout=10)
        wait_for(lambda: not any(alive(w) for w in workers), 5, "a worker outlived its master")
        wait_for(lambda: refuses(server.port), 5, "the port still answers")
        restarted = ServerProcess(server.config, tmp_path).start()
        try:
            assert listeners(server.port) <= family(restarted)
        finally:
            restarted.stop()
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_workers_that_served_and_died_are_restarted_however_often(tmp_path: Path) -> None:
    with two_tenant_process(tmp_path, workers=2) as server:
        wait_for_workers(server, 2)
        for kill in range(MAX_START_FAILURES + 1):  # more deaths than start failures allowed
            victim = server.serving_processes()[0]
            victim.kill()
            wait_for(lambda gone=victim.pid: len(server.serving_processes()) == 2
                     and gone not in {p.pid for p in server.serving_processes()}, 10,
                     f"the worker was not replaced:\n{server.log()}")
            wait_for_workers(server, 3 + kill)
        assert server.process is not None and server.process.poll() is None
        assert server.log().count("restarting") == MAX_START_FAILURES + 1
        assert "failed to start" not in server.log()


# -- 3. start-up problems: named by check-config and serve, no loop -----------------


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Path]]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make test certificates (apt-get install openssl)"
    folder = tmp_path_factory.mktemp("pairs")
    made = []
    for name in ("one", "two"):
        cert, key = folder / f"{name}.crt", folder / f"{name}.key"
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        made.append((cert, key))
    return made


def _broken(case: str, base: Path, pairs: list[tuple[Path, Path]]) -> dict[str, Any]:
    """The server settings that break start-up in the way ``case`` names."""
    (one_cert, one_key), (_two_cert, two_key) = pairs
    garbage = base / "garbage.pem"
    garbage.write_text("not a certificate\n")
    (base / "a-file").write_text("x")
    return {
        "missing cert": {"tls": {"cert": str(base / "missing.crt"), "key": str(one_key)}},
        "missing key": {"tls": {"cert": str(one_cert), "key": str(base / "missing.key")}},
        "cert not PEM": {"tls": {"cert": str(garbage), "key": str(one_key)}},
        "key of another cert": {"tls": {"cert": str(one_cert), "key": str(two_key)}},
        "data_dir is a file": {"data_dir": str(base / "a-file")},
        "data_dir below a file": {"data_dir": str(base / "a-file" / "data")},
        "unresolvable host": {"listen": "no-such-host.invalid:8080"},
        "foreign address": {"listen": "192.0.2.1:8080"},  # TEST-NET-1: never ours
    }[case]


START_UP_CASES = {
    "missing cert": "server.tls.cert", "missing key": "server.tls.key",
    "cert not PEM": "server.tls.cert", "key of another cert": "server.tls.key",
    "data_dir is a file": "server.data_dir", "data_dir below a file": "server.data_dir",
    "unresolvable host": "server.listen", "foreign address": "server.listen",
}


@pytest.mark.parametrize("case", list(START_UP_CASES))
def test_start_up_problems_are_one_line_naming_the_key(
        tmp_path: Path, pairs: list[tuple[Path, Path]], case: str) -> None:
    key = START_UP_CASES[case]
    server = two_tenant_process(tmp_path, workers=2)
    server.config["server"].update(_broken(case, tmp_path, pairs))
    written(server)
    checked = mosaic("check-config", str(server.config_path))
    assert checked.returncode == 1
    lines = output_lines(checked)
    assert len(lines) == 1 and lines[0].startswith(f"{server.config_path}: {key}: "), lines
    served = mosaic("serve", "--config", str(server.config_path))
    assert served.returncode != 0
    lines = output_lines(served)
    assert len(lines) == 1 and f": {key}: " in lines[0], lines


@pytest.mark.parametrize(("options", "named"), [
    (["--data-dir", "{base}/a-file"], "--data-dir"),
    (["--data-dir", "{base}/data", "--listen", "nowhere"], "--listen"),
    (["--data-dir", "{base}/data", "--workers", "0"], "--workers"),
])
def test_serve_options_are_checked_like_the_file(tmp_path: Path, options: list[str],
                                                  named: str) -> None:
    (tmp_path / "a-file").write_text("x")
    result = mosaic("serve", *(option.format(base=tmp_path) for option in options))
    assert result.returncode != 0
    lines = output_lines(result)
    assert len(lines) == 1 and f": {named}: " in lines[0], lines


def test_check_config_creates_nothing_and_accepts_a_good_machine(
        tmp_path: Path, pairs: list[tuple[Path, Path]]) -> None:
    cert, key = pairs[0]
    server = two_tenant_process(tmp_path, tls={"cert": str(cert), "key": str(key)})
    written(server)
    data_dir = Path(server.config["server"]["data_dir"])
    checked = mosaic("check-config", str(server.config_path))
    assert checked.returncode == 0, checked.stderr
    assert not data_dir.exists()


def _limit_address_space() -> None:
    # Room for the master, none for a worker's 1,024 request threads (8 MiB
    # stacks): the workers fail at start where the master's checks could not see.
    limit = 1200 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("workers", [2, 1])
def test_workers_that_keep_failing_at_start_stop_the_instance(tmp_path: Path,
                                                              workers: int) -> None:
    server = written(two_tenant_process(tmp_path, workers=workers, threads=1024))
    started = time.monotonic()
    result = mosaic("serve", "--config", str(server.config_path),
                    preexec_fn=_limit_address_space)
    assert time.monotonic() - started < PROMPTLY
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "can't start new thread" in log.splitlines()[-1], log
    # Bounded: a worker per slot, then one more per failure until the limit.
    assert log.count("could not start") <= MAX_START_FAILURES + workers - 1, log
    assert not TRACEBACK.search(log), log
    assert listeners(server.port) == set()


# -- 4. leftovers of a killed upload; the schema made once ---------------------------


def _start_upload(port: int, path: str, total: int, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n".encode()
                 + ALICE + b"\r\n" + first)
    return sock


def _temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(local.TEMP_PREFIX + "*"))


def test_a_killed_upload_is_swept_at_the_mounts_next_start(tmp_path: Path) -> None:
    server = two_tenant_process(tmp_path, workers=2).start()
    root = tmp_path / "acme-root"
    try:
        sock = _start_upload(server.port, "/big.bin", 8 * 2**20, b"x" * 2**20)
        wait_for(lambda: _temp_files(root), 10, "no upload temp file appeared")
        assert server.process is not None
        server.process.kill()  # the master: its workers die with it, mid-upload
        server.process.wait(timeout=10)
        sock.close()
        wait_for(lambda: refuses(server.port), 5, "workers outlived their master")
        assert _temp_files(root), "the killed upload left nothing to sweep"
        with ServerProcess(server.config, tmp_path) as restarted:
            reply = raw_request(restarted.port, b"PROPFIND / HTTP/1.1\r\nHost: x\r\n"
                                b"Depth: 1\r\n" + ALICE + b"Connection: close\r\n\r\n")
            assert reply.status == 207
            assert _temp_files(root) == []
            assert not (root / "big.bin").exists()
    finally:
        server.stop()


def test_a_live_upload_of_another_process_is_not_swept(tmp_path: Path) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    with two_tenant_process(tmp_path, workers=2) as server:
        root = tmp_path / "acme-root"
        sock = _start_upload(server.port, "/live.bin", 2 * len(body), body)
        with sock:
            wait_for(lambda: _temp_files(root), 10, "no upload temp file appeared")
            # The same mount starting in another process (this one), on the
            # server's data directory, while the upload runs.
            context = BuildContext("acme", "/", Path(server.config["server"]["data_dir"]))
            local.build(local.Options(root=str(root)), context)
            assert len(_temp_files(root)) == 1
            sock.sendall(body)
            assert read_reply(sock).status == 201
        assert (root / "live.bin").read_bytes() == body * 2
        assert _temp_files(root) == []


def test_the_database_is_made_before_any_worker_exists(tmp_path: Path) -> None:
    server = two_tenant_process(tmp_path, workers=2).start(wait=False)
    try:
        assert server.process is not None
        master = psutil.Process(server.process.pid)
        wait_for(master.children, 30, f"no worker started:\n{server.log()}")
        database = Path(server.config["server"]["data_dir"]) / "mosaic.db"
        assert database.exists(), "the workers were started before the database existed"
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            tables = {name for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        conn.close()
        assert {"dav_locks", "dav_properties", "dav_active_writes"} <= tables
        assert mode == "wal"
        server.wait_until_up()
    finally:
        server.stop()


def test_ten_fresh_starts_with_two_workers_lose_no_worker(tmp_path: Path) -> None:
    for attempt in range(10):
        base = tmp_path / str(attempt)
        base.mkdir()
        with two_tenant_process(base, workers=2) as server:
            wait_for_workers(server, 2)
            log = server.log()
        assert "exited" not in log and "failed to start" not in log, log
        assert "database is locked" not in log and not TRACEBACK.search(log), log


def test_sigterm_stops_every_process_cleanly(tmp_path: Path) -> None:
    with two_tenant_process(tmp_path, workers=2) as server:
        wait_for_workers(server, 2)
        workers = server.serving_processes()
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0
    assert not any(alive(w) for w in workers)
    assert not listeners(server.port)
    assert os.path.exists(server.log_path) and server.tracebacks() == 0
