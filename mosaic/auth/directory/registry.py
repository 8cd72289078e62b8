"""The directory sources and Kerberos acceptors of the live config, kept across logins
for their connections and keys."""

from __future__ import annotations

import threading

from mosaic.auth.directory.source import ActiveDirectorySource
from mosaic.auth.kerberos import KerberosAcceptor
from mosaic.config.schema import Config


class Directories:
    """(tenant, domain index) -> its :class:`ActiveDirectorySource`, for one config.

    A new config replaces them all (a domain's URLs or accounts may have
    changed) and closes the old ones' idle connections.
    """

    def __init__(self) -> None:
        self._config: Config | None = None
        self._sources: dict[tuple[str, int], ActiveDirectorySource] = {}
        self._acceptors: dict[str, KerberosAcceptor] = {}
        self._lock = threading.Lock()

    def use(self, config: Config) -> None:
        with self._lock:
            old, self._sources, self._config = self._sources, {}, config
            self._acceptors = {}
        for source in old.values():
            source.close()

    def source(self, config: Config, tenant: str, index: int) -> ActiveDirectorySource:
        """The source of ``config``'s domain; one built for this login alone if a reload
        replaced ``config`` meanwhile."""
        domain = config.tenants[tenant].active_directory[index]
        with self._lock:
            if config is not self._config:
                return ActiveDirectorySource(tenant, domain)
            found = self._sources.get((tenant, index))
            if found is None:
                found = self._sources[(tenant, index)] = ActiveDirectorySource(tenant, domain)
            return found

    def acceptor(self, config: Config, tenant: str) -> KerberosAcceptor | None:
        """The tenant's Kerberos acceptor, None if it has no ``kerberos`` settings."""
        settings = config.tenants[tenant].kerberos
        if settings is None:
            return None
        realm = config.tenants[tenant].active_directory[0].name.upper()
        with self._lock:
            if config is not self._config:
                return KerberosAcceptor(tenant, settings, realm)
            found = self._acceptors.get(tenant)
            if found is None:
                found = self._acceptors[tenant] = KerberosAcceptor(tenant, settings, realm)
            return found
