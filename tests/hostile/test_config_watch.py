"""The config watcher reacts to the config file and the secret files it names,
not to every write in their folder (a log file, the SQLite database).

A real ``python -m mosaic serve`` whose log file, data directory and config
all share one folder, at log level debug: the case that looped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml
from argon2 import PasswordHasher

from mosaic.core.passwords import hash_password
from tests.hostile.support import ServerProcess, basic, raw_request, two_tenant_process

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
#: A watched change must be live within this (poll, debounce, reload).
PICKUP_SECONDS = 5.0


def propfind(server: ServerProcess, login: str, password: str) -> int:
    return raw_request(server.port, b"PROPFIND / HTTP/1.1\r\nHost: x\r\nDepth: 0\r\n"
                       + basic(login, password).encode() + b"Connection: close\r\n\r\n").status


def put(server: ServerProcess, path: str, body: bytes) -> int:
    return raw_request(server.port, f"PUT {path} HTTP/1.1\r\nHost: x\r\n"
                       f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode()
                       + basic("alice@acme.example", "alice-secret").encode() + b"\r\n"
                       + body).status


def eventually(condition, seconds: float = PICKUP_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_log_and_database_writes_beside_the_config_do_not_wake_the_watcher(
        tmp_path: Path) -> None:
    with two_tenant_process(tmp_path, workers=1, log_level="debug") as server:
        assert server.log_path.parent == server.config_path.parent
        assert Path(server.config["server"]["data_dir"]).parent == server.config_path.parent
        for number in range(5):  # SQLite writes (upload leases) in the folder
            assert put(server, f"/note-{number}.txt", b"x") == 201
        time.sleep(1.5)  # the requests' own log lines are written
        worker = server.serving_processes()[0]
        size, cpu = server.log_path.stat().st_size, sum(worker.cpu_times()[:2])
        time.sleep(3)
        growth = server.log_path.stat().st_size - size
        busy = sum(worker.cpu_times()[:2]) - cpu
        assert growth < 2048, f"log grew {growth} bytes in 3 s while idle"
        assert busy < 0.3, f"idle worker used {busy:.2f} s CPU in 3 s"
        assert "config reload" not in server.log()
        assert server.tracebacks() == 0


def test_an_editor_style_replace_of_the_config_is_picked_up(tmp_path: Path) -> None:
    with two_tenant_process(tmp_path, workers=2) as server:
        assert propfind(server, "erin@globex.example", "erin-secret") == 401
        users = server.config["tenants"]["globex"]["users"]
        users["erin"] = {"password_hash": hash_password("erin-secret", CHEAP)}
        draft = server.config_path.with_name(".mosaic.yaml.swp")
        draft.write_text(yaml.safe_dump(server.config))
        os.replace(draft, server.config_path)
        assert eventually(lambda: server.log().count("config reloaded") == 2), server.log()
        # Both workers reloaded: every new connection, whichever worker, lets erin in.
        assert all(propfind(server, "erin@globex.example", "erin-secret") == 207
                   for _ in range(6))
        assert server.tracebacks() == 0


def test_a_changed_secret_file_is_picked_up(tmp_path: Path) -> None:
    hash_file = tmp_path / "secrets" / "dave.hash"
    hash_file.parent.mkdir()
    hash_file.write_text(hash_password("first-secret", CHEAP) + "\n")
    server = two_tenant_process(tmp_path, workers=1)
    dave = server.config["tenants"]["globex"]["users"]["dave"]
    del dave["password_hash"]
    dave["password_hash_file"] = str(hash_file)
    with server:
        assert propfind(server, "dave@globex.example", "first-secret") == 207
        hash_file.write_text(hash_password("second-secret", CHEAP) + "\n")
        # Logins are not tried meanwhile: failures would throttle dave.
        assert eventually(lambda: "config reloaded" in server.log()), server.log()
        assert propfind(server, "dave@globex.example", "second-secret") == 207
