"""argon2id password hashing for local users.

Hashes carry their own parameters, so verification works for any hash however
it was made; only *new* hashes use ``DEFAULT_HASHER``. Tests pass a cheap
hasher to :func:`hash_password` instead of weakening the production one.
"""

from __future__ import annotations

import functools
import secrets
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

#: argon2-cffi's RFC 9106 "low memory" profile: argon2id, t=3, m=64 MiB, p=4.
DEFAULT_HASHER = PasswordHasher()


def hash_password(plain: str, hasher: PasswordHasher | None = None) -> str:
    """Return an argon2id hash of ``plain`` suitable for ``User.password_hash``."""
    return (hasher or DEFAULT_HASHER).hash(plain)


#: argon2 verifications running at once per process. Each takes the hash's
#: memory cost (64 MiB by default): unbounded, a burst of logins would take
#: gigabytes; two keep both cores busy.
CONCURRENT_VERIFICATIONS = threading.BoundedSemaphore(2)


def verify_password(password_hash: str, plain: str) -> bool:
    """True if ``plain`` matches ``password_hash``; False on mismatch or a malformed hash.

    Never raises for a bad password or hash: a broken hash in the config must
    lock that user out, not turn a login into a 500.
    """
    try:
        with CONCURRENT_VERIFICATIONS:
            return DEFAULT_HASHER.verify(password_hash, plain)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True if the hash was made with weaker parameters than ``DEFAULT_HASHER``."""
    try:
        return DEFAULT_HASHER.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


def verify_dummy(plain: str) -> None:
    """Spend one verification on a hash nobody knows the password of.

    Called for unknown or disabled users so that a failed login takes as long
    as a wrong password would: response time must not reveal which user
    names exist.
    """
    verify_password(_dummy_hash(DEFAULT_HASHER), plain)


@functools.lru_cache(maxsize=4)
def _dummy_hash(hasher: PasswordHasher) -> str:
    # Made lazily with the live hasher so its cost tracks the real hashes'.
    return hasher.hash(secrets.token_urlsafe(32))
