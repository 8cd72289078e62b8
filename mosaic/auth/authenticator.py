"""Credentials -> Principal, for every protocol (WebDAV today, the portal next).

One call does, in order: find the tenant the login names
(:mod:`mosaic.auth.login`), apply the smart lockout
(:mod:`mosaic.auth.throttle`), answer from the caches, and only then ask an
identity source: a local user's argon2 hash, or the tenant's Active
Directory. Windows sends credentials with every request; after the first
login none of them reaches a DC or argon2 until the cache entry expires.

A refused password is remembered too, keyed the same way (an HMAC, never the
password): a client retrying a stale password again and again costs one bind,
so it counts once against AD's bad-password counter - Mosaic never locks an
account the user would not have locked on the LAN - and once against the
local lockout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import NamedTuple

from mosaic.auth.cache import CredentialCache
from mosaic.auth.directory.registry import Directories
from mosaic.auth.identity import LocalIdentitySource, users_by_folded_name
from mosaic.auth.kerberos import KerberosUnavailable, TicketHolder
from mosaic.auth.login import (
    ResolvedLogin,
    fold_case,
    host_tenant_id,
    only_tenant,
    resolve_login,
)
from mosaic.auth.principal import KERBEROS, Principal
from mosaic.auth.throttle import Attempt, LoginThrottle, SlowDown
from mosaic.config.derived import PerObject
from mosaic.config.schema import Config, Tenant

_log = logging.getLogger(__name__)
VERIFY_LOCK_STRIPES = 64
#: the value a refusal is cached as
REFUSED = True


class Client(NamedTuple):
    """Where a login comes from."""

    address: str | None
    #: the host name the client asked for (HTTP Host): it may select the tenant
    host: str | None = None


class Route(NamedTuple):
    """Which identity source of the tenant checks a login."""

    #: None: the tenant's local users; else the index of its directory domain
    directory: int | None
    #: the cache and lock key of the account within the tenant
    key: str


class Authenticator:
    """Checks logins against the live config; one per worker process."""

    def __init__(self, get_config: Callable[[], Config]) -> None:
        self._get_config = get_config
        self.cache: CredentialCache[Principal] = CredentialCache()
        self.refusals: CredentialCache[bool] = CredentialCache()
        self.throttle = LoginThrottle()
        self.slow_down = SlowDown()
        self.directories = Directories()
        self._seen_config: Config | None = None
        self._seen_lock = threading.Lock()
        # Striped: bounded memory whatever the number of users.
        self._verify_locks = [threading.Lock() for _ in range(VERIFY_LOCK_STRIPES)]

    def authenticate(self, login: str, password: str, client: Client) -> Principal | None:
        """The principal, or None (refused); raises DirectoryUnavailable when the
        tenant's directory cannot say (the client should retry, not re-prompt)."""
        generation = self.cache.generation  # read first: see CredentialCache.put
        config = self.current_config()
        target = resolve_login(config, login, client.host)
        attempt = _attempt(target, login, client.address)
        if not self._admitted(attempt, config):
            return None
        if target is None:
            self.throttle.failed(attempt, config.server.auth)
            return None
        route = route_login(config.tenants[target.tenant_id], target)
        principal = self._verify(config, target, route, password, generation)
        if principal is REFUSED:  # the same refused password again: not a new guess
            return None
        if principal is None:
            self.throttle.failed(attempt, config.server.auth)
        else:
            self.throttle.succeeded(attempt)
        return principal if isinstance(principal, Principal) else None

    def authenticate_ticket(self, token: bytes,
                            client: Client) -> tuple[Principal | None, bytes | None]:
        """(principal, reply token) for a Kerberos SPNEGO token sent to the tenant that
        ``client.host`` selects; raises DirectoryUnavailable like :meth:`authenticate`."""
        config = self.current_config()
        tenant_id = host_tenant_id(config, client.host) or only_tenant(config)
        acceptor = self.directories.acceptor(config, tenant_id) if tenant_id else None
        if acceptor is None:
            return None, None
        try:
            holder = acceptor.accept(token)
        except KerberosUnavailable as exc:
            _log.warning("%s; Negotiate refused, Basic still works", exc)
            return None, None
        if holder is None:
            return None, None
        return self._ticket_principal(config, tenant_id or "", holder), holder.reply

    def offers_kerberos(self, host: str | None) -> bool:
        """Whether a 401 to ``host`` should offer Negotiate beside Basic."""
        config = self.current_config()
        tenant_id = host_tenant_id(config, host) or only_tenant(config)
        return tenant_id is not None and config.tenants[tenant_id].kerberos is not None

    def _ticket_principal(self, config: Config, tenant_id: str,
                          holder: TicketHolder) -> Principal | None:
        generation = self.cache.generation
        key = f"{fold_case(holder.account)}@{fold_case(holder.realm)}"
        principal = self.cache.get(tenant_id, key, KERBEROS)
        if principal is not None:
            return principal
        tenant = config.tenants[tenant_id]
        index = next((i for i, d in enumerate(tenant.active_directory)
                      if d.name.upper() == holder.realm.upper()), None)
        if index is None or tenant.active_directory[index].service_account is None:
            _log.info("tenant %s: Kerberos client %s@%s: the realm is no active_directory "
                      "domain with a service_account", tenant_id, holder.account, holder.realm)
            return None
        principal = self.directories.source(config, tenant_id, index).lookup(holder.account)
        if principal is not None:
            self.cache.put(tenant_id, key, KERBEROS, principal, config.server.auth.cache_seconds,
                           generation)
        return principal

    def clear_cache(self) -> None:
        """Forget checked logins (a config reload does this)."""
        self.cache.clear()
        self.refusals.clear()

    def current_config(self) -> Config:
        """The live config; a different object than last time empties the caches.

        The previous Config is kept only to notice the swap by identity (an
        id() could be reused by a new object); nothing is decided from it.
        """
        config = self._get_config()
        if config is not self._seen_config:
            with self._seen_lock:
                if config is not self._seen_config:
                    if self._seen_config is not None:
                        self.clear_cache()
                    self.directories.use(config)
                    self._seen_config = config
        return config

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

    def _verify(self, config: Config, target: ResolvedLogin, route: Route, password: str,
                generation: int) -> Principal | bool | None:
        cached = self._cached(target.tenant_id, route.key, password)
        if cached is not None:
            return cached
        # Windows opens several connections at once: when a cached login expires
        # they would all pay an argon2 verify (or a bind) together. One checks per
        # user, the others wait and then find its result in the cache.
        stripe = hash((target.tenant_id, route.key)) % len(self._verify_locks)
        with self._verify_locks[stripe]:
            cached = self._cached(target.tenant_id, route.key, password)
            if cached is not None:
                return cached
            principal = self._ask_source(config, target, route, password)
            auth = config.server.auth
            if principal is None:
                self.refusals.put(target.tenant_id, route.key, password, REFUSED,
                                  auth.refusal_cache_seconds, generation)
            else:
                self.cache.put(target.tenant_id, route.key, password, principal,
                               auth.cache_seconds, generation)
            return principal

    def _cached(self, tenant: str, key: str, password: str) -> Principal | bool | None:
        return self.cache.get(tenant, key, password) or self.refusals.get(tenant, key, password)

    def _ask_source(self, config: Config, target: ResolvedLogin, route: Route,
                    password: str) -> Principal | None:
        tenant = config.tenants[target.tenant_id]
        if route.directory is None:
            return LocalIdentitySource(target.tenant_id, tenant).authenticate(target.user,
                                                                              password)
        source = self.directories.source(config, target.tenant_id, route.directory)
        qualifier = fold_case(target.qualifier or "")
        kind = target.kind if (target.kind, qualifier) in directory_names(tenant) else ""
        return source.authenticate(source.login_for(target.user, kind, target.qualifier),
                                   password)


def route_login(tenant: Tenant, target: ResolvedLogin) -> Route:
    """A login qualified with a directory's name goes to that directory; any other goes
    to the local user of that name, or, if there is none, to the first directory."""
    user = fold_case(target.user)
    qualifier = fold_case(target.qualifier or "")
    index = directory_names(tenant).get((target.kind, qualifier))
    if index is not None:
        netbios = fold_case(tenant.active_directory[index].netbios)
        suffix = qualifier if target.kind == "domains" else ""
        return Route(index, f"{netbios}\\{user}@{suffix}")
    if tenant.active_directory and user not in users_by_folded_name(tenant):
        return Route(0, f"{fold_case(tenant.active_directory[0].netbios)}\\{user}@")
    return Route(None, user)


def _directory_names(tenant: Tenant) -> dict[tuple[str, str], int]:
    """(login kind, folded qualifier) -> index of the directory it names."""
    names: dict[tuple[str, str], int] = {}
    for index, domain in enumerate(tenant.active_directory):
        names.setdefault(("netbios", fold_case(domain.netbios)), index)
        for suffix in domain.login_suffixes:
            names.setdefault(("domains", fold_case(suffix)), index)
    return names


#: A tenant's directory names, built once per (immutable) Tenant: a login is routed
#: on every request, before the cache is asked.
directory_names = PerObject(_directory_names)


def _attempt(target: ResolvedLogin | None, login: str, address: str | None) -> Attempt:
    if target is None:
        return Attempt("", fold_case(login), address)
    return Attempt(target.tenant_id, fold_case(target.user), address)
