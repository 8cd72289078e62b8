"""Persistent WebDAV locks in SQL, granted atomically across worker processes.

`SqlLockStorage` implements wsgidav's lock-storage interface (the one of
``wsgidav.lock_man.lock_storage.LockStorageDict``). `AtomicLockManager` is
wsgidav's ``LockManager`` with one change: the conflict check and the insert of
a new lock run in one database transaction serialised against every other
worker, where wsgidav only guards them with an in-process lock.

wsgidav builds its own plain ``LockManager``; `install_lock_manager` swaps ours
into an already built ``WsgiDAVApp``.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, delete, or_, select, update
from wsgidav.lock_man.lock_manager import LockManager, generate_lock_token, normalize_lock_root

from mosaic.dav.store import ConnectionScope, LockRow, children_of, create_schema

LockDict = dict[str, Any]

#: Same defaults and cap as wsgidav's LockStorageDict.
LOCK_TIME_OUT_DEFAULT = 604800.0  # one week
LOCK_TIME_OUT_MAX = 4 * 604800.0

_FIELDS = ("root", "type", "scope", "depth", "owner", "timeout", "expire", "principal", "token")


def _capped_timeout(timeout: float | None) -> float:
    """Like LockStorageDict: no timeout means a week, "infinite" or too long a month."""
    if timeout is None:
        return LOCK_TIME_OUT_DEFAULT
    timeout = float(timeout)
    if timeout < 0 or timeout > LOCK_TIME_OUT_MAX:
        return LOCK_TIME_OUT_MAX
    return timeout


def _check_lock_fields(lock: LockDict) -> None:
    """Reject what wsgidav's validate_lock asserts on, also under ``python -O``."""
    if lock.get("type") != "write":
        raise ValueError(f"lock type must be 'write': {lock.get('type')!r}")
    if lock.get("scope") not in ("shared", "exclusive"):
        raise ValueError(f"bad lock scope: {lock.get('scope')!r}")
    if lock.get("depth") not in ("0", "infinity"):
        raise ValueError(f"bad lock depth: {lock.get('depth')!r}")
    if not isinstance(lock.get("owner"), bytes):
        raise ValueError("lock owner must be XML bytes")
    if not isinstance(lock.get("principal"), str):
        raise ValueError("lock principal must be a string")


def _valid(now: float) -> ColumnElement[bool]:
    return or_(LockRow.expire < 0, LockRow.expire >= now)


def _expired(now: float) -> ColumnElement[bool]:
    return and_(LockRow.expire >= 0, LockRow.expire < now)


def _row_to_dict(row: Any) -> LockDict:
    lock = {name: getattr(row, name) for name in _FIELDS}
    lock["owner"] = bytes(lock["owner"])  # some drivers hand back memoryview
    return lock


class SqlLockStorage:
    """wsgidav lock storage on the ``dav_locks`` table.

    Expired locks are never returned, and are deleted when a lookup meets them.
    The engine belongs to the caller: `close` leaves it open, because wsgidav
    calls it from ``LockManager.__del__`` of managers it throws away.
    """

    def __init__(self, engine: Engine) -> None:
        self.scope = ConnectionScope(engine)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.scope.engine.url!r})"

    def open(self) -> None:
        create_schema(self.scope.engine)

    def close(self) -> None:
        """Nothing to release: connections go back to the caller's pool."""

    def cleanup(self) -> None:
        """Purge all expired locks."""
        with self.scope.begin() as conn:
            conn.execute(delete(LockRow).where(_expired(time.time())))

    def clear(self) -> None:
        with self.scope.begin() as conn:
            conn.execute(delete(LockRow))

    def get(self, token: str) -> LockDict | None:
        """Return the lock for ``token``, or None if unknown or expired."""
        now = time.time()
        with self.scope.begin() as conn:
            conn.execute(delete(LockRow).where(LockRow.token == token, _expired(now)))
            row = conn.execute(select(LockRow).where(LockRow.token == token)).one_or_none()
        return None if row is None else _row_to_dict(row)

    def create(self, path: str, lock: LockDict) -> LockDict:
        """Store a new lock on ``path``; fills in root, timeout, expire and token.

        Like wsgidav's storages this mutates and returns ``lock``: LockManager
        relies on it.
        """
        if lock.get("token") is not None or lock.get("expire") is not None:
            raise ValueError("create() takes a lock definition without token and expire")
        lock["root"] = normalize_lock_root(path)
        lock["timeout"] = _capped_timeout(lock.get("timeout"))
        lock["expire"] = time.time() + lock["timeout"]
        _check_lock_fields(lock)
        lock["token"] = generate_lock_token()
        with self.scope.begin() as conn:
            conn.execute(LockRow.__table__.insert().values({f: lock[f] for f in _FIELDS}))
        return lock

    def refresh(self, token: str, *, timeout: float | None) -> LockDict:
        """Restart a valid lock's timeout; ValueError if it is unknown or expired."""
        timeout = _capped_timeout(timeout)
        now = time.time()
        values = {"timeout": timeout, "expire": now + timeout}
        with self.scope.begin() as conn:
            changed = conn.execute(
                update(LockRow).where(LockRow.token == token, _valid(now)).values(values)
            )
            if changed.rowcount != 1:
                raise ValueError(f"no valid lock {token!r}")
            row = conn.execute(select(LockRow).where(LockRow.token == token)).one()
        return _row_to_dict(row)

    def delete(self, token: str) -> bool:
        """Remove a lock; False if there was none."""
        with self.scope.begin() as conn:
            result = conn.execute(delete(LockRow).where(LockRow.token == token))
        return result.rowcount > 0

    def get_lock_list(
        self, path: str, *, include_root: bool, include_children: bool, token_only: bool
    ) -> list[LockDict] | list[str]:
        """Valid locks rooted at ``path`` and/or strictly below it."""
        path = normalize_lock_root(path)
        where = _root_filter(path, include_root, include_children)
        now = time.time()
        with self.scope.begin() as conn:
            conn.execute(delete(LockRow).where(where, _expired(now)))
            rows = conn.execute(select(LockRow).where(where).order_by(LockRow.root)).all()
        if token_only:
            return [row.token for row in rows]
        return [_row_to_dict(row) for row in rows]

    def transaction(self, *, serialised: bool = False) -> AbstractContextManager[Connection]:
        """Storage calls inside this context share one transaction (per thread)."""
        return self.scope.begin(serialised=serialised)


def _root_filter(path: str, include_root: bool, include_children: bool) -> ColumnElement[bool]:
    if not (include_root or include_children):
        raise ValueError("include_root or include_children must be set")
    clauses = []
    if include_root:
        clauses.append(LockRow.root == path)
    if include_children:
        clauses.append(children_of(LockRow.root, path))
    return or_(*clauses)


class AtomicLockManager(LockManager):
    """wsgidav's LockManager whose grants are atomic across processes.

    The conflict rules stay wsgidav's own (``_check_lock_permission``); only the
    transaction around check + insert is new.
    """

    def __init__(self, storage: SqlLockStorage) -> None:
        super().__init__(storage)

    def acquire(
        self,
        *,
        url: str,
        lock_type: str,
        lock_scope: str,
        lock_depth: str,
        lock_owner: bytes,
        timeout: float | None,
        principal: str,
        token_list: list[str],
    ) -> LockDict:
        """Check for conflicts and create the lock, or raise DAVError(HTTP_LOCKED)."""
        url = normalize_lock_root(url)
        # The in-process lock still guards wsgidav's _active_writes markers,
        # which only exist in this process.
        self._lock.acquire_write()
        try:
            with self.storage.transaction(serialised=True):
                self._check_lock_permission(
                    url, lock_type, lock_scope, lock_depth, token_list, principal
                )
                return self._generate_lock(
                    principal, lock_type, lock_scope, lock_depth, lock_owner, url, timeout
                )
        finally:
            self._lock.release()


def install_lock_manager(app: Any, storage: SqlLockStorage) -> AtomicLockManager:
    """Replace the plain LockManager of a built ``WsgiDAVApp`` with ours.

    WsgiDAVApp has no hook for a lock manager class: it wraps the configured
    ``lock_storage`` in ``LockManager`` and hands that to every provider it
    mounts. Swap it on the app (for providers added later) and on each provider.
    """
    manager = AtomicLockManager(storage)
    app.lock_manager = manager
    for provider in app.provider_map.values():
        provider.set_lock_manager(manager)
    return manager

