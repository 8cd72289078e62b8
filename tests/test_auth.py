"""mosaic.auth building blocks: passwords, login resolution, identity, cache, throttle."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from argon2 import PasswordHasher

from mosaic.auth.cache import CredentialCache
from mosaic.auth.identity import LocalIdentitySource
from mosaic.auth.login import ResolvedLogin, resolve_login
from mosaic.auth.principal import Principal
from mosaic.auth.throttle import GO, Attempt, LoginThrottle, SlowDown, Verdict
from mosaic.config.schema import AuthSettings, Config, User
from mosaic.core import passwords

# Cheap parameters for test hashes only; verification reads them from the hash.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse"
HASH = passwords.hash_password(PASSWORD, FAST)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def user(**extra: object) -> dict[str, object]:
    return {"password_hash": HASH, **extra}


def two_tenants(**auth: object) -> Config:
    """acme and globex, each with an ``alice`` who has the same password."""
    return Config.model_validate({
        "server": {"auth": auth},
        "tenants": {
            "acme": {
                "domains": ["acme.example"], "netbios": ["ACME"],
                "hosts": ["files.acme.example"], "root": {"type": "memory"},
                "groups": ["staff", "admins"],
                "users": {
                    "alice": user(groups=["staff"]),
                    "Bob": user(display_name="Bob Builder", groups=["admins"]),
                    "carol": user(enabled=False),
                    "kate": user(),
                },
            },
            "globex": {
                "domains": ["globex.example"], "netbios": ["GX"],
                "hosts": ["files.globex.example"], "root": {"type": "memory"},
                "users": {"alice": user()},
            },
        },
    })


def one_tenant() -> Config:
    return Config.model_validate({"tenants": {"solo": {
        "hosts": ["solo.example"], "root": {"type": "memory"}, "users": {"alice": user()}}}})


# -- passwords ---------------------------------------------------------------

def test_hash_round_trip() -> None:
    hashed = passwords.hash_password("s3cret", FAST)
    assert hashed.startswith("$argon2id$")
    assert "s3cret" not in hashed
    assert passwords.verify_password(hashed, "s3cret")
    assert not passwords.verify_password(hashed, "s3cret ")


@pytest.mark.parametrize("bad_hash", ["", "plain", "$argon2id$v=19$m=8,t=1,p=1$broken"])
def test_verify_returns_false_for_malformed_hash(bad_hash: str) -> None:
    assert passwords.verify_password(bad_hash, "anything") is False


def test_default_hasher_is_production_strength() -> None:
    assert passwords.needs_rehash(HASH)  # the cheap test hash is below the default
    assert not passwords.needs_rehash(passwords.hash_password("x"))
    assert passwords.needs_rehash("not a hash")


# -- login resolution ----------------------------------------------------------

@pytest.mark.parametrize(("login", "expected"), [
    ("alice@acme.example", ("acme", "alice")),
    ("ALICE@Acme.EXAMPLE", ("acme", "ALICE")),
    ("ACME\\alice", ("acme", "alice")),
    ("acme\\alice", ("acme", "alice")),
    ("ACME\\\\alice", ("acme", "alice")),  # doubled backslash from old Windows clients
    ("GX\\alice", ("globex", "alice")),
    ("alice@globex.example", ("globex", "alice")),
    ("alice@acme", ("acme", "alice")),  # tenant id as implicit domain
    ("globex\\alice", ("globex", "alice")),  # tenant id as implicit NetBIOS name
])
def test_login_forms(login: str, expected: tuple[str, str]) -> None:
    assert resolve_login(two_tenants(), login, None)[:2] == ResolvedLogin(*expected)[:2]


@pytest.mark.parametrize("login", [
    "", "@acme.example", "alice@", "\\alice", "ACME\\", "ACME\\alice@acme.example",
    "alice@unknown.example", "UNKNOWN\\alice", "alice\0@acme.example", "ali\tce@acme",
    "acme.example\\alice",  # a domain is not a NetBIOS name
    "alice@gx",  # nor the other way round
    "alice",  # bare name, two tenants, no Host
])
def test_unresolvable_logins(login: str) -> None:
    assert resolve_login(two_tenants(), login, None) is None


@pytest.mark.parametrize(("host", "tenant"), [
    ("files.acme.example", "acme"),
    ("files.acme.example:8443", "acme"),
    ("FILES.Globex.example", "globex"),
    ("files.globex.example.", "globex"),
])
def test_bare_login_selects_tenant_by_host(host: str, tenant: str) -> None:
    assert resolve_login(two_tenants(), "alice", host)[:2] == (tenant, "alice")


def test_bare_login_on_unknown_host_fails_with_several_tenants() -> None:
    assert resolve_login(two_tenants(), "alice", "10.0.0.1:8080") is None


@pytest.mark.parametrize("host", [None, "[::1]:8080", "solo.example", "other.example"])
def test_single_tenant_takes_bare_logins(host: str | None) -> None:
    assert resolve_login(one_tenant(), "alice", host)[:2] == ("solo", "alice")


@pytest.mark.parametrize("login", ["alice@globex.example", "GX\\alice", "alice@globex"])
def test_login_for_other_tenant_through_host_name_fails(login: str) -> None:
    assert resolve_login(two_tenants(), login, "files.acme.example") is None
    assert resolve_login(two_tenants(), login, "files.globex.example") is not None


def test_qualified_login_through_neutral_host_works() -> None:
    assert resolve_login(two_tenants(), "ACME\\alice", "192.0.2.7")[:2] == ("acme", "alice")


def test_qualifier_claimed_by_two_tenants_is_ambiguous() -> None:
    base = two_tenants()
    tenants = dict(base.tenants)
    tenants["globex"] = tenants["globex"].model_copy(update={"domains": ["acme"]})
    config = base.model_copy(update={"tenants": tenants})
    assert resolve_login(config, "alice@acme", None) is None
    assert resolve_login(config, "ACME\\alice", None)[:2] == ("acme", "alice")
    # unless the host name picks one of the tenants that claim it
    assert resolve_login(config, "alice@acme", "files.globex.example")[:2] == ("globex", "alice")
    assert resolve_login(config, "alice@acme", "files.acme.example")[:2] == ("acme", "alice")


# -- identity ------------------------------------------------------------------

def acme_source() -> LocalIdentitySource:
    return LocalIdentitySource("acme", two_tenants().tenants["acme"])


def test_local_user_principal() -> None:
    principal = acme_source().authenticate("alice", PASSWORD)
    assert principal == Principal("acme", "alice", frozenset({"staff"}), None)
    assert principal.canonical == "alice@acme"


@pytest.mark.parametrize("typed", ["bob", "BOB", "Bob"])
def test_user_lookup_ignores_case_but_keeps_configured_spelling(typed: str) -> None:
    principal = acme_source().authenticate(typed, PASSWORD)
    assert principal is not None
    assert (principal.user, principal.display_name) == ("Bob", "Bob Builder")
    assert principal.groups == frozenset({"admins"})


def test_unicode_lookalike_is_not_a_user() -> None:
    # KELVIN SIGN lower-cases to "k" under Unicode rules.
    assert acme_source().authenticate("\u212aate", PASSWORD) is None
    assert acme_source().authenticate("KATE", PASSWORD) is not None


def test_wrong_password_is_refused() -> None:
    assert acme_source().authenticate("alice", PASSWORD + "!") is None


@pytest.mark.parametrize("name", ["carol", "nobody"])
def test_disabled_or_unknown_user_costs_a_verification(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    burned: list[str] = []
    monkeypatch.setattr(passwords, "verify_dummy", burned.append)
    assert acme_source().authenticate(name, PASSWORD) is None
    assert burned == [PASSWORD]


def test_users_differing_only_in_case_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    tenant = two_tenants().tenants["globex"]
    users = {"dave": User.model_validate(user()), "Dave": User.model_validate(user())}
    source = LocalIdentitySource("globex", tenant.model_copy(update={"users": users}))
    assert source.authenticate("dave", PASSWORD) is None
    assert "differ only in case" in caplog.text


def test_same_credentials_in_two_tenants_stay_apart() -> None:
    config = two_tenants()
    for tenant_id in ("acme", "globex"):
        source = LocalIdentitySource(tenant_id, config.tenants[tenant_id])
        principal = source.authenticate("alice", PASSWORD)
        assert principal is not None
        assert principal.tenant == tenant_id


# -- credential cache ----------------------------------------------------------

ALICE = Principal("acme", "alice", frozenset(), None)


def test_cache_hit_only_for_same_tenant_user_and_password() -> None:
    cache = CredentialCache()
    cache.put("acme", "alice", PASSWORD, ALICE, ttl=60)
    assert cache.get("acme", "alice", PASSWORD) is ALICE
    assert cache.get("acme", "alice", PASSWORD + "x") is None
    assert cache.get("globex", "alice", PASSWORD) is None
    assert cache.get("acme", "bob", PASSWORD) is None


def test_cache_never_stores_the_password() -> None:
    cache, other = CredentialCache(), CredentialCache()
    for c in (cache, other):
        c.put("acme", "alice", PASSWORD, ALICE, ttl=60)
    [key] = list(cache._entries)
    assert isinstance(key, bytes) and len(key) == 32
    assert PASSWORD.encode() not in key
    assert PASSWORD not in repr(vars(cache))
    assert key not in other._entries  # the HMAC secret is random per process/cache


def test_cache_expiry() -> None:
    clock = FakeClock()
    cache = CredentialCache(clock=clock)
    cache.put("acme", "alice", PASSWORD, ALICE, ttl=60)
    clock.now += 59
    assert cache.get("acme", "alice", PASSWORD) is ALICE
    clock.now += 1
    assert cache.get("acme", "alice", PASSWORD) is None
    assert len(cache) == 0


def test_cache_ttl_zero_disables_caching() -> None:
    cache = CredentialCache()
    cache.put("acme", "alice", PASSWORD, ALICE, ttl=0)
    assert cache.get("acme", "alice", PASSWORD) is None


def test_cache_is_a_bounded_lru() -> None:
    cache = CredentialCache(max_entries=3)
    for name in ("a", "b", "c"):
        cache.put("acme", name, PASSWORD, ALICE, ttl=60)
    assert cache.get("acme", "a", PASSWORD) is ALICE  # "b" is now least recently used
    cache.put("acme", "d", PASSWORD, ALICE, ttl=60)
    assert len(cache) == 3
    assert cache.get("acme", "b", PASSWORD) is None
    assert all(cache.get("acme", n, PASSWORD) for n in ("a", "c", "d"))


def test_cache_clear_and_stale_generation() -> None:
    cache = CredentialCache()
    cache.put("acme", "alice", PASSWORD, ALICE, ttl=60)
    generation = cache.generation
    cache.clear()
    assert len(cache) == 0
    cache.put("acme", "alice", PASSWORD, ALICE, ttl=60, generation=generation)
    assert cache.get("acme", "alice", PASSWORD) is None
    cache.put("acme", "alice", PASSWORD, ALICE, ttl=60, generation=cache.generation)
    assert cache.get("acme", "alice", PASSWORD) is ALICE


# -- throttle ------------------------------------------------------------------

POLICY = AuthSettings(max_failures=3, address_max_failures=3, user_slowdown_after=3,
                      failure_window_seconds=60, lockout_seconds=30, slowdown_seconds=1)
#: Address locks out of the way, to see the other counters alone.
LENIENT_ADDRESSES = POLICY.model_copy(update={"address_max_failures": 1000})


def test_failures_lock_the_user_at_that_address_only(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(3):
        assert throttle.check(Attempt("acme", "alice", "10.0.0.1"), LENIENT_ADDRESSES) == GO
        throttle.failed(Attempt("acme", "alice", "10.0.0.1"), LENIENT_ADDRESSES)
    assert throttle.check(Attempt("acme", "alice", "10.0.0.1"), LENIENT_ADDRESSES).refused
    # The same user elsewhere, and another user at that address: not refused.
    assert not throttle.check(Attempt("acme", "alice", "10.9.9.9"), LENIENT_ADDRESSES).refused
    assert throttle.check(Attempt("acme", "bob", "10.0.0.1"), LENIENT_ADDRESSES) == GO
    [record] = [r for r in caplog.records if "throttled" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "'alice'" in record.getMessage() and "10.0.0.1" in record.getMessage()
    clock.now += 30
    assert not throttle.check(Attempt("acme", "alice", "10.0.0.1"), LENIENT_ADDRESSES).refused


def test_failures_across_addresses_only_slow_down_the_failing_ones(
        caplog: pytest.LogCaptureFixture) -> None:
    """Anyone can fail for alice from anywhere: that never locks alice out."""
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    for i in range(100):  # two failures from each of 50 addresses: under every lock
        throttle.failed(Attempt("acme", "alice", f"10.0.{i // 2}.1"), LENIENT_ADDRESSES)
    assert throttle.check(Attempt("acme", "alice", "10.9.9.9"), LENIENT_ADDRESSES) == GO
    assert throttle.check(Attempt("globex", "alice", "10.0.0.1"), LENIENT_ADDRESSES) == GO
    assert throttle.check(Attempt("acme", "alice", "10.0.7.1"), LENIENT_ADDRESSES) == \
        Verdict(delay=1)
    slowed = [r for r in caplog.records if "slowed down" in r.getMessage()]
    assert len(slowed) == 1  # one line for the whole spray
    clock.now += 61
    assert throttle.check(Attempt("acme", "alice", "10.0.7.1"), LENIENT_ADDRESSES) == GO


def test_a_user_under_attack_is_not_slowed_from_a_clean_address() -> None:
    throttle = LoginThrottle(clock=FakeClock())
    for i in range(3):
        throttle.failed(Attempt("acme", "alice", f"10.0.0.{i}"), LENIENT_ADDRESSES)
    # bob's failure makes the address suspect: alice's attempts from it wait.
    throttle.failed(Attempt("acme", "bob", "10.8.8.8"), LENIENT_ADDRESSES)
    assert throttle.check(Attempt("acme", "alice", "10.8.8.8"), LENIENT_ADDRESSES).delay == 1
    assert throttle.check(Attempt("acme", "alice", "10.9.9.9"), LENIENT_ADDRESSES) == GO


def test_slow_down_bounds_the_logins_waiting_at_once() -> None:
    release = threading.Event()
    slow_down = SlowDown(sleep=lambda _seconds: release.wait(5))
    waiting = [threading.Thread(target=slow_down.wait, args=(1, 2)) for _ in range(2)]
    for thread in waiting:
        thread.start()
    while slow_down._waiting < 2:
        time.sleep(0.01)
    started = time.monotonic()
    assert not slow_down.wait(1, 2)  # refused at once, not queued
    assert time.monotonic() - started < 0.5
    release.set()
    for thread in waiting:
        thread.join()
    assert slow_down.wait(1, 2)


def test_throttle_counts_failures_for_the_whole_window() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    attempt = Attempt("acme", "alice", None)
    for _ in range(3):
        throttle.failed(attempt, POLICY)
    clock.now += 30  # lockout over, failures still inside the window
    throttle.failed(attempt, POLICY)
    assert not throttle.allowed(attempt)
    clock.now += 61  # window passed: a fresh allowance
    for _ in range(2):
        throttle.failed(attempt, POLICY)
    assert throttle.allowed(attempt)


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(5):
        throttle.failed(Attempt("acme", "alice", None), POLICY)
        clock.now += 31  # at most two failures in any 60 s
    assert throttle.allowed(Attempt("acme", "alice", None))


def test_throttle_per_address_across_users() -> None:
    throttle = LoginThrottle(clock=FakeClock())
    for name in ("u1", "u2", "u3"):
        throttle.failed(Attempt("acme", name, "198.51.100.1"), POLICY)
    assert not throttle.allowed(Attempt("acme", "alice", "198.51.100.1"))
    assert throttle.check(Attempt("acme", "alice", "198.51.100.1"), POLICY).refused
    assert throttle.allowed(Attempt("acme", "alice", "198.51.100.2"))


def test_success_clears_the_pair_but_not_the_address() -> None:
    throttle = LoginThrottle(clock=FakeClock())
    for _ in range(2):
        throttle.failed(Attempt("acme", "alice", "192.0.2.1"), POLICY)
    throttle.succeeded(Attempt("acme", "alice", "192.0.2.1"))
    policy = POLICY.model_copy(update={"address_max_failures": 5})
    for _ in range(2):
        throttle.failed(Attempt("acme", "alice", "192.0.2.1"), policy)
    assert throttle.allowed(Attempt("acme", "alice", "192.0.2.1"))  # 2 of 3 since the success
    throttle.failed(Attempt("acme", "mallory", "192.0.2.1"), policy)
    assert not throttle.allowed(Attempt("acme", "alice", "192.0.2.1"))  # the address: 5 of 5


def test_throttle_prunes_old_keys() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    for i in range(50):
        throttle.failed(Attempt("acme", f"user{i}", None), POLICY)
    assert len(throttle) == 100  # each user's count and its pair
    clock.now += 61
    throttle.failed(Attempt("acme", "late", None), POLICY)
    assert len(throttle) == 2


def test_throttle_memory_is_bounded_and_keeps_lockouts() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock, max_keys=10)
    victim = Attempt("acme", "alice", None)
    for _ in range(3):
        throttle.failed(victim, POLICY)
    for i in range(100):
        throttle.failed(Attempt("acme", f"flood{i}", f"203.0.113.{i}"), POLICY)
        assert len(throttle) <= 10
    assert not throttle.allowed(victim)
