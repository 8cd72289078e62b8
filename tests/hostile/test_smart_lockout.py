"""Smart lockout over a real server: guessing locks the guesser, never the user everywhere."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.support import ServerProcess, basic, raw_request, two_tenant_process

ATTACKER = "127.0.0.2"
ALICE = "127.0.0.3"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with two_tenant_process(tmp_path) as process:  # the default auth settings
        yield process
    assert process.tracebacks() == 0


def propfind(server: ServerProcess, login: str, password: str, source: str) -> int:
    request = (f"PROPFIND / HTTP/1.1\r\nHost: acme.localhost\r\n{basic(login, password)}"
               "Depth: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").encode()
    return raw_request(server.port, request, source=source).status


def test_fifty_failures_elsewhere_do_not_stop_alice(server: ServerProcess) -> None:
    started = time.monotonic()
    for attempt in range(50):  # distinct guesses: a repeated one counts once
        assert propfind(server, "alice@acme", f"guess{attempt}", ATTACKER) == 401
    guessing = time.monotonic() - started

    started = time.monotonic()
    assert propfind(server, "alice@acme", "alice-secret", ALICE) == 207
    alice = time.monotonic() - started
    print(f"\n50 failed logins in {guessing:.2f}s; alice from elsewhere in {alice:.3f}s")
    assert alice < 0.5  # at once: not even slowed down

    # The guesser's own address is locked for alice, even with her password.
    assert propfind(server, "alice@acme", "alice-secret", ATTACKER) == 401
    log = server.log()
    assert log.count("login throttled") == 1
    assert "guess" not in log and "alice-secret" not in log


def test_spraying_names_from_one_address_locks_that_address(tmp_path: Path) -> None:
    """A few failures of different users (an office behind one NAT address) lock nothing;
    ``address_max_failures`` of them lock the address for everyone."""
    others = ["alice@acme", "carol@acme", "alice@globex", "dave@globex", "carol@acme"]
    with two_tenant_process(tmp_path, auth={"address_max_failures": 6}) as server:
        for attempt, login in enumerate(others):
            assert propfind(server, login, f"guess{attempt}", ATTACKER) == 401
        assert propfind(server, "bob@acme", "bob-secret", ATTACKER) == 207
        assert propfind(server, "dave@globex", "guess", ATTACKER) == 401  # the 6th
        assert propfind(server, "bob@acme", "bob-secret", ATTACKER) == 401
        assert propfind(server, "bob@acme", "bob-secret", ALICE) == 207
    assert server.tracebacks() == 0
