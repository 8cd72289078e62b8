"""wsgidav domain controller: Basic logins against the live Mosaic config.

Wiring (see also :mod:`mosaic.auth.middleware`)::

    "http_authenticator": {
        "domain_controller": MosaicDomainController,
        "accept_basic": True, "accept_digest": False, "default_to_digest": False,
    },
    "mosaic": {"get_config": <zero-arg callable returning the current Config>},

The config is fetched on every call because a reload may swap it at any time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from wsgidav.dc.base_dc import BaseDomainController

from mosaic.auth.cache import CredentialCache
from mosaic.auth.identity import Principal, identity_sources
from mosaic.auth.login import ResolvedLogin, fold_case, resolve_login
from mosaic.auth.throttle import Attempt, LoginThrottle, SlowDown
from mosaic.config.schema import Config

REALM = "Mosaic"
#: environ key holding the authenticated :class:`Principal`.
PRINCIPAL_KEY = "mosaic.principal"
#: Permissions are enforced by the VFS; wsgidav only displays roles.
ROLES = ["editor"]

Environ = dict[str, Any]


VERIFY_LOCK_STRIPES = 64


class MosaicDomainController(BaseDomainController):
    """Basic-only domain controller; one realm for every path."""

    def __init__(self, wsgidav_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, config)
        get_config = (config.get("mosaic") or {}).get("get_config")
        if not callable(get_config):
            raise RuntimeError('MosaicDomainController needs config["mosaic"]["get_config"]')
        self._get_config: Callable[[], Config] = get_config
        self.cache = CredentialCache()
        self.throttle = LoginThrottle()
        self.slow_down = SlowDown()
        self._seen_config: Config | None = None
        self._seen_lock = threading.Lock()
        # Striped: bounded memory whatever the number of users.
        self._verify_locks = [threading.Lock() for _ in range(VERIFY_LOCK_STRIPES)]

    def __str__(self) -> str:
        return f"{self.__class__.__name__}(realm={REALM!r})"

    def get_domain_realm(self, path_info: str, environ: Environ | None) -> str:
        return REALM

    def require_authentication(self, realm: str, environ: Environ | None) -> bool:
        # Windows Explorer gives up on a 401 to OPTIONS, so OPTIONS is anonymous.
        # environ is None at start-up, when wsgidav asks whether shares are public.
        return environ is None or environ.get("REQUEST_METHOD") != "OPTIONS"

    def supports_http_digest_auth(self) -> bool:
        # Digest needs the plain password or an MD5 of it; argon2 hashes and
        # directories give neither.
        return False

    def digest_auth_user(self, realm: str, user_name: str, environ: Environ) -> bool:
        return False

    def basic_auth_user(self, realm: str, user_name: str, password: str,
                        environ: Environ) -> bool:
        principal = self.authenticate(user_name, password, environ)
        if principal is None:
            return False
        environ[PRINCIPAL_KEY] = principal
        environ["wsgidav.auth.roles"] = list(ROLES)
        return True

    def authenticate(self, login: str, password: str, environ: Environ) -> Principal | None:
        """Resolve the tenant, apply the lockout, then the cache, then the identity sources."""
        generation = self.cache.generation  # read first: see CredentialCache.put
        config = self._current_config()
        target = resolve_login(config, login, environ)
        attempt = _attempt(target, login, environ)
        if not self._admitted(attempt, config):
            return None
        principal = self._verify(config, target, password, generation) if target else None
        if principal is None:
            self.throttle.failed(attempt, config.server.auth)
        else:
            self.throttle.succeeded(attempt)
        return principal

    def _admitted(self, attempt: Attempt, config: Config) -> bool:
        """Whether to check this attempt's password at all (after any delay)."""
        policy = config.server.auth
        verdict = self.throttle.check(attempt, policy)
        if verdict.refused:
            return False
        # A delayed attempt that finds every waiting place taken is refused:
        # it comes from an address that failed for a user under attack.
        return not verdict.delay or self.slow_down.wait(verdict.delay,
                                                        policy.max_slowed_logins)

    def clear_cache(self) -> None:
        """Forget verified logins (the config reload calls this)."""
        self.cache.clear()

    def _verify(self, config: Config, target: ResolvedLogin, password: str,
                generation: int) -> Principal | None:
        user_key = fold_case(target.user)
        principal = self.cache.get(target.tenant_id, user_key, password)
        if principal is not None:
            return principal
        # Windows opens several connections at once: when a cached login expires
        # they would all pay an argon2 verify together. One verifies per user,
        # the others wait and then find its result in the cache.
        stripe = hash((target.tenant_id, user_key)) % len(self._verify_locks)
        with self._verify_locks[stripe]:
            principal = self.cache.get(target.tenant_id, user_key, password)
            if principal is not None:
                return principal
            return self._verify_uncached(config, target, user_key, password, generation)

    def _verify_uncached(self, config: Config, target: ResolvedLogin, user_key: str,
                         password: str, generation: int) -> Principal | None:
        tenant = config.tenants[target.tenant_id]
        for source in identity_sources(target.tenant_id, tenant):
            principal = source.authenticate(target.user, password)
            if principal is not None:
                self.cache.put(target.tenant_id, user_key, password, principal,
                               config.server.auth.cache_seconds, generation)
                return principal
        return None

    def _current_config(self) -> Config:
        """The live config; a different object than last time empties the cache.

        The previous Config is kept only to notice the swap by identity (an
        id() could be reused by a new object); nothing is decided from it.
        """
        config = self._get_config()
        if config is not self._seen_config:
            with self._seen_lock:
                if config is not self._seen_config:
                    if self._seen_config is not None:
                        self.cache.clear()
                    self._seen_config = config
        return config


def _attempt(target: ResolvedLogin | None, login: str, environ: Environ) -> Attempt:
    if target is None:
        return Attempt("", fold_case(login), environ.get("REMOTE_ADDR"))
    return Attempt(target.tenant_id, fold_case(target.user), environ.get("REMOTE_ADDR"))
