"""The Authenticator, alone and behind HttpAuthentication inside a real WsgiDAVApp."""

from __future__ import annotations

import base64
import io
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from mosaic.auth.authenticator import Authenticator, Client
from mosaic.auth.principal import Principal
from mosaic.auth.throttle import LoginThrottle, SlowDown
from mosaic.config.schema import Config
from mosaic.core import passwords
from mosaic.dav.authentication import HttpAuthentication

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse"
HASH = passwords.hash_password(PASSWORD, FAST)
ACME = {"HTTP_HOST": "files.acme.example", "REQUEST_METHOD": "PROPFIND",
        "REMOTE_ADDR": "192.0.2.10"}


def make_config(*, alice_enabled: bool = True, **auth: object) -> Config:
    """acme and globex, each with an ``alice`` who has the same password."""
    def tenant(name: str, netbios: str, **users: dict[str, Any]) -> dict[str, Any]:
        return {"domains": [f"{name}.example"], "netbios": [netbios],
                "hosts": [f"files.{name}.example"], "root": {"type": "memory"},
                "groups": ["admins"], "users": users}

    alice = {"password_hash": HASH, "enabled": alice_enabled}
    return Config.model_validate({"server": {"auth": auth}, "tenants": {
        "acme": tenant("acme", "ACME", alice=alice,
                       root={"password_hash": HASH, "groups": ["admins"]}),
        "globex": tenant("globex", "GLOBEX", alice={"password_hash": HASH}),
    }})


class Live:
    """What the lead wires as config["mosaic"]["get_config"]: the config may be swapped."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self) -> Config:
        return self.config


def make_dc(config: Config) -> tuple[Authenticator, Live]:
    live = Live(config)
    return Authenticator(live), live


def login(dc: Authenticator, name: str, password: str = PASSWORD,
          **environ: str) -> dict[str, Any] | None:
    """{"mosaic.principal": ...} after a successful login, None on failure."""
    env: dict[str, Any] = {**ACME, **environ}
    principal = dc.authenticate(name, password, Client(env["REMOTE_ADDR"], env["HTTP_HOST"]))
    return {"mosaic.principal": principal} if principal else None


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Spy on argon2 verifications (the identity source calls passwords.verify_password)."""
    calls: list[str] = []
    real = passwords.verify_password

    def spy(password_hash: str, plain: str) -> bool:
        calls.append(plain)
        return real(password_hash, plain)

    monkeypatch.setattr(passwords, "verify_password", spy)
    return calls


# -- domain controller -----------------------------------------------------------

@pytest.mark.parametrize("name", ["alice", "ALICE", "alice@acme.example", "ACME\\alice",
                                  "alice@acme", "acme\\alice"])
def test_successful_login_sets_principal_and_roles(name: str) -> None:
    dc, _ = make_dc(make_config())
    env = login(dc, name)
    assert env is not None
    assert env["mosaic.principal"] == Principal("acme", "alice", frozenset(), None)


def test_groups_come_with_the_principal() -> None:
    dc, _ = make_dc(make_config())
    env = login(dc, "root")
    assert env is not None and env["mosaic.principal"].groups == frozenset({"admins"})


@pytest.mark.parametrize(("name", "password"), [
    ("alice", PASSWORD + "x"), ("nobody", PASSWORD), ("alice@nowhere.example", PASSWORD),
])
def test_failed_login_gives_no_principal(name: str, password: str) -> None:
    dc, _ = make_dc(make_config())
    assert login(dc, name, password) is None


@pytest.mark.parametrize("name", ["alice@globex.example", "GLOBEX\\alice", "alice@globex"])
def test_same_credentials_never_cross_tenants(name: str) -> None:
    dc, _ = make_dc(make_config())
    assert login(dc, name) is None  # globex login through acme's host name
    env = login(dc, name, HTTP_HOST="files.globex.example")
    assert env is not None and env["mosaic.principal"].tenant == "globex"
    env = login(dc, "alice", HTTP_HOST="files.globex.example")
    assert env is not None and env["mosaic.principal"].tenant == "globex"
    env = login(dc, "alice")
    assert env is not None and env["mosaic.principal"].tenant == "acme"


def test_disabled_user_is_refused() -> None:
    dc, _ = make_dc(make_config(alice_enabled=False))
    assert login(dc, "alice") is None


def test_cache_spares_the_second_verification(verify_calls: list[str]) -> None:
    dc, _ = make_dc(make_config())
    for name in ("alice", "ALICE", "ACME\\alice", "alice@acme.example"):
        assert login(dc, name) is not None
    assert len(verify_calls) == 1
    assert login(dc, "alice", PASSWORD + "x") is None  # a wrong password is still checked
    assert len(verify_calls) == 2
    assert login(dc, "alice", HTTP_HOST="files.globex.example") is not None
    assert len(verify_calls) == 3  # another tenant's alice is another entry


def test_simultaneous_logins_of_one_user_verify_once(verify_calls: list[str]) -> None:
    dc, _ = make_dc(make_config())
    start = threading.Barrier(8)

    def connect(_: int) -> bool:
        start.wait()
        return login(dc, "alice") is not None

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(connect, range(8)))
    assert len(verify_calls) == 1


def test_argon2_verifications_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    running, peak, guard = [0], [0], threading.Lock()
    real = passwords.DEFAULT_HASHER

    class SlowHasher:
        def verify(self, password_hash: str, plain: str) -> bool:
            with guard:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with guard:
                running[0] -= 1
            return real.verify(password_hash, plain)

    monkeypatch.setattr(passwords, "DEFAULT_HASHER", SlowHasher())
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: passwords.verify_password(HASH, PASSWORD), range(8)))
    assert peak[0] == 2


def test_cache_can_be_disabled(verify_calls: list[str]) -> None:
    dc, _ = make_dc(make_config(cache_seconds=0))
    for _ in range(3):
        assert login(dc, "alice") is not None
    assert len(verify_calls) == 3


def test_config_swap_empties_the_cache() -> None:
    dc, live = make_dc(make_config())
    assert login(dc, "alice") is not None
    live.config = make_config(alice_enabled=False)
    assert login(dc, "alice") is None


def test_clear_cache_forces_verification(verify_calls: list[str]) -> None:
    dc, _ = make_dc(make_config())
    assert login(dc, "alice") is not None
    dc.clear_cache()
    assert login(dc, "alice") is not None
    assert len(verify_calls) == 2


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttled_login_is_refused_without_verifying(
        verify_calls: list[str], caplog: pytest.LogCaptureFixture) -> None:
    dc, _ = make_dc(make_config(max_failures=2, lockout_seconds=30))
    clock = Clock()
    dc.throttle = LoginThrottle(clock=clock)
    for attempt in range(2):
        assert login(dc, "alice", f"guess{attempt}") is None
    assert len(verify_calls) == 2
    assert login(dc, "alice") is None  # right password, but locked
    assert len(verify_calls) == 2
    assert "alice" in caplog.text and "192.0.2.10" in caplog.text
    assert "guess" not in caplog.text and PASSWORD not in caplog.text
    clock.now += 30
    assert login(dc, "alice") is not None


def test_a_stale_password_retried_counts_once(verify_calls: list[str]) -> None:
    dc, _ = make_dc(make_config(max_failures=2))
    for _ in range(50):  # a client that keeps sending a password changed elsewhere
        assert login(dc, "alice", "old password") is None
    assert verify_calls == ["old password"]  # checked once, then refused from memory
    assert login(dc, "alice") is not None  # one failure: the pair is not locked
    assert login(dc, "alice", "another guess") is None
    assert len(verify_calls) == 3


def test_a_remembered_refusal_ends(verify_calls: list[str]) -> None:
    dc, live = make_dc(make_config(refusal_cache_seconds=0))
    for _ in range(2):
        assert login(dc, "alice", "old password") is None
    assert len(verify_calls) == 2
    dc, live = make_dc(make_config())
    assert login(dc, "alice", "old password") is None
    live.config = make_config()  # a reload forgets refusals (the password may be right now)
    assert login(dc, "alice", "old password") is None
    assert len(verify_calls) == 4


class RecordedSleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_guessing_from_one_address_cannot_lock_the_user_out_elsewhere(
        verify_calls: list[str]) -> None:
    dc, _ = make_dc(make_config(max_failures=3, user_slowdown_after=3, slowdown_seconds=2))
    dc.slow_down = SlowDown(sleep=(sleeps := RecordedSleeps()))
    for attempt in range(50):
        assert login(dc, "alice", f"guess{attempt}", REMOTE_ADDR="192.0.2.66") is None
    assert len(verify_calls) == 3  # then refused before any password check
    assert login(dc, "alice", REMOTE_ADDR="192.0.2.66") is None  # that pair is locked
    assert login(dc, "alice", REMOTE_ADDR="192.0.2.10") is not None
    assert sleeps == []  # and not even slowed down from an address without failures


def test_a_failing_address_of_a_user_under_attack_is_slowed_down() -> None:
    dc, _ = make_dc(make_config(max_failures=3, user_slowdown_after=3, slowdown_seconds=2,
                                max_slowed_logins=1))
    dc.slow_down = SlowDown(sleep=(sleeps := RecordedSleeps()))
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        assert login(dc, "alice", "guess " + address, REMOTE_ADDR=address) is None
    assert login(dc, "alice", REMOTE_ADDR="192.0.2.1") is not None  # slowed, not refused
    assert sleeps == [2]


def test_a_slowed_login_finding_no_place_to_wait_is_refused() -> None:
    dc, _ = make_dc(make_config(max_failures=3, user_slowdown_after=3, max_slowed_logins=0))
    dc.slow_down = SlowDown(sleep=(sleeps := RecordedSleeps()))
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        assert login(dc, "alice", "guess " + address, REMOTE_ADDR=address) is None
    assert login(dc, "alice", REMOTE_ADDR="192.0.2.1") is None
    assert login(dc, "alice", REMOTE_ADDR="192.0.2.4") is not None
    assert sleeps == []


def test_unresolvable_logins_count_against_the_address() -> None:
    dc, _ = make_dc(make_config(address_max_failures=2))
    for name in ("x@nowhere.example", "y@nowhere.example"):
        assert login(dc, name) is None
    assert login(dc, "alice") is None
    assert login(dc, "alice", REMOTE_ADDR="192.0.2.99") is not None


def test_concurrent_logins_get_their_own_answers(verify_calls: list[str]) -> None:
    dc, _ = make_dc(make_config(max_failures=1000, address_max_failures=1000,
                                user_slowdown_after=1000))
    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(25):
            good = (n + i) % 3 != 0
            tenant_host = "files.globex.example" if n % 2 else "files.acme.example"
            env = login(dc, "alice", PASSWORD if good else "wrong", HTTP_HOST=tenant_host,
                        REMOTE_ADDR=f"192.0.2.{n}")
            expected = ("globex" if n % 2 else "acme") if good else None
            got = env["mosaic.principal"].tenant if env else None
            if got != expected:
                errors.append(f"thread {n} try {i}: {got} != {expected}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert verify_calls.count(PASSWORD) <= 8 * 2  # cached after the first success per tenant


# -- end to end: a real WsgiDAVApp --------------------------------------------------

def make_app(root: Path, live: Live) -> WsgiDAVApp:
    return WsgiDAVApp({
        "provider_mapping": {"/": str(root)},
        "middleware_stack": [HttpAuthentication, RequestResolver],
        "mosaic": {"authenticator": Authenticator(live)},
        "lock_storage": True,
        "logging": {"enable": False},
        "verbose": 1,
    })


def call(app: WsgiDAVApp, method: str, path: str, user: str | None = None,
         password: str = PASSWORD, body: bytes = b"",
         **headers: str) -> tuple[int, dict[str, str], bytes]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "files.acme.example", "SERVER_PORT": "443", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "files.acme.example", "REMOTE_ADDR": "192.0.2.10",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "https",
        "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "wsgi.version": (1, 0), "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/xml" if body.startswith(b"<?xml") else "",
    }
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        environ["HTTP_AUTHORIZATION"] = f"Basic {token}"
    environ.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
    status: list[str] = []
    response_headers: dict[str, str] = {}

    def start_response(line: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
        status.append(line)
        response_headers.update(hdrs)

    chunks: Iterable[bytes] = app(environ, start_response)
    data = b"".join(chunks)
    return int(status[0].split()[0]), response_headers, data


LOCK_BODY = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
             b"</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>")


@pytest.fixture
def app(tmp_path: Path) -> WsgiDAVApp:
    (tmp_path / "doc.txt").write_bytes(b"v1")
    return make_app(tmp_path, Live(make_config()))


def test_e2e_authentication(app: WsgiDAVApp) -> None:
    status, headers, _ = call(app, "PROPFIND", "/", DEPTH="1")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="Mosaic"'
    assert call(app, "PROPFIND", "/", "alice", PASSWORD + "x", DEPTH="1")[0] == 401
    assert call(app, "PROPFIND", "/", "alice@globex.example", DEPTH="1")[0] == 401
    status, _, body = call(app, "PROPFIND", "/", "alice@acme.example", DEPTH="1")
    assert status == 207 and b"doc.txt" in body
    status, _, body = call(app, "GET", "/doc.txt", "ACME\\alice")
    assert (status, body) == (200, b"v1")


@pytest.mark.parametrize("header", [
    "Basic", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
    "basic " + base64.b64encode("alice:pa\u00df".encode("latin-1")).decode(),
])
def test_e2e_malformed_basic_header_is_401(app: WsgiDAVApp, header: str) -> None:
    status, headers, _ = call(app, "PROPFIND", "/", AUTHORIZATION=header, DEPTH="0")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="Mosaic"'


def test_e2e_non_ascii_password(tmp_path: Path) -> None:
    hashed = passwords.hash_password("pa\u00dfw\u00f6rt", FAST)
    config = make_config()
    acme = config.tenants["acme"]
    users = {**acme.users, "alice": acme.users["alice"].model_copy(
        update={"password_hash": SecretStr(hashed)})}
    tenants = {**config.tenants, "acme": acme.model_copy(update={"users": users})}
    app = make_app(tmp_path, Live(config.model_copy(update={"tenants": tenants})))
    assert call(app, "PROPFIND", "/", "alice", "pa\u00dfw\u00f6rt", DEPTH="0")[0] == 207


def test_e2e_options_needs_no_credentials(app: WsgiDAVApp) -> None:
    status, headers, _ = call(app, "OPTIONS", "/")
    assert status == 200
    assert "PROPFIND" in headers["Allow"]


def test_e2e_lock_owner_is_canonical(app: WsgiDAVApp) -> None:
    status, headers, _ = call(app, "LOCK", "/doc.txt", "alice@acme.example", body=LOCK_BODY,
                              TIMEOUT="Second-60")
    assert status == 200
    token = headers["Lock-Token"]
    [lock] = app.lock_manager.get_url_lock_list("/doc.txt")
    assert lock["principal"] == "alice@acme"
    # Other spellings of the same login are the same lock owner.
    status, _, _ = call(app, "PUT", "/doc.txt", "ACME\\ALICE", body=b"v2", IF=f"({token})")
    assert status in (200, 204)
    assert call(app, "UNLOCK", "/doc.txt", "alice", LOCK_TOKEN=token)[0] == 204
