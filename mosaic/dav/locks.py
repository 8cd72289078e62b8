"""Persistent WebDAV locks in SQL, granted atomically across worker processes.

`SqlLockStorage` implements wsgidav's lock-storage interface (the one of
``wsgidav.lock_man.lock_storage.LockStorageDict``). `AtomicLockManager` is
wsgidav's ``LockManager`` with two changes, both closing races that wsgidav only
closes inside one process:

- the conflict check and the insert of a new lock run in one database
  transaction serialised against every other worker;
- a write in progress (PUT body, PROPPATCH) is recorded as a lease in the
  ``dav_active_writes`` table instead of a per-process dict, so a LOCK granted by
  another worker cannot slip in while the body is still arriving (CWE-367).

wsgidav builds its own plain ``LockManager``; `install_lock_manager` swaps ours
into an already built ``WsgiDAVApp``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    delete,
    or_,
    select,
    update,
)
from wsgidav.dav_error import (
    HTTP_LOCKED,
    DAVError,
    DAVErrorCondition,
    PRECONDITION_CODE_LockConflict,
)
from wsgidav.lock_man.lock_manager import LockManager, generate_lock_token, normalize_lock_root
from wsgidav.util import is_child_uri

from mosaic.dav.store import (
    ActiveWriteRow,
    ConnectionScope,
    LockRow,
    children_of,
    children_range,
    create_schema,
    placeholders,
    raw,
)
from mosaic.logs import in_words

_logger = logging.getLogger(__name__)

LockDict = dict[str, Any]

#: Same defaults and cap as wsgidav's LockStorageDict.
LOCK_TIME_OUT_DEFAULT = 604800.0  # one week
LOCK_TIME_OUT_MAX = 4 * 604800.0

#: Lifetime of a write lease (seconds). A worker renews the leases it holds
#: every third of it, so a write of any length stays protected, while a crashed
#: worker's leases keep LOCKs off their URLs for at most this long.
WRITE_LEASE_S = 600.0

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
    lock = dict(zip(_FIELDS, row, strict=True))
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
        found = self._select("token = ?", [token])
        return found[0] if found else None

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
            # Lookups only skip expired locks; purging them is done here, on
            # the (rare) write path, so reads never need the write lock.
            conn.execute(delete(LockRow).where(_expired(time.time())))
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
            row = raw(conn, f"SELECT {', '.join(_FIELDS)} FROM dav_locks WHERE token = ?",
                      [token]).fetchone()
        return _row_to_dict(row)

    def delete(self, token: str) -> bool:
        """Remove a lock; False if there was none (an expired one counts as none)."""
        with self.scope.begin() as conn:
            result = conn.execute(
                delete(LockRow).where(LockRow.token == token, _valid(time.time())))
            conn.execute(delete(LockRow).where(LockRow.token == token))
        return result.rowcount > 0

    def get_lock_list(
        self, path: str, *, include_root: bool, include_children: bool, token_only: bool
    ) -> list[LockDict] | list[str]:
        """Valid locks rooted at ``path`` and/or strictly below it."""
        path = normalize_lock_root(path)
        where, params = _root_filter(path, include_root, include_children)
        locks = self._select(where, params)
        return [lock["token"] for lock in locks] if token_only else locks

    def locks_on_or_above(self, path: str, *, include_children: bool) -> list[LockDict]:
        """Valid locks rooted at ``path``, at any ancestor of it and, if asked,
        below it: everything a write to ``path`` can conflict with, in one query."""
        path = normalize_lock_root(path)
        ancestors = [path]
        while ancestors[-1] != "/":
            ancestors.append(normalize_lock_root(ancestors[-1].rsplit("/", 1)[0] or "/"))
        where, params = f"root IN ({placeholders(len(ancestors))})", list(ancestors)
        if include_children:
            where = f"({where} OR (root > ? AND root < ?))"
            params += children_range(path)
        return self._select(where, params)

    def _select(self, where: str, params: list[Any]) -> list[LockDict]:
        """Valid locks matching ``where`` - on the driver cursor: this runs for
        every write request, where a SQLAlchemy statement costs 50x more."""
        sql = (f"SELECT {', '.join(_FIELDS)} FROM dav_locks "
               f"WHERE {where} AND (expire < 0 OR expire >= ?) ORDER BY root")
        with self.scope.begin(readonly=True) as conn:
            rows = raw(conn, sql, [*params, time.time()]).fetchall()
        return [_row_to_dict(row) for row in rows]

    def begin_write(self, url: str, *, lease_s: float = WRITE_LEASE_S) -> str:
        """Record that ``url`` is being written; return the lease id for `end_write`.

        Also purges expired leases: nobody else deletes those of crashed workers.
        """
        lease, now = secrets.token_hex(16), time.time()
        with self.scope.begin() as conn:
            raw(conn, "DELETE FROM dav_active_writes WHERE expires < ?", [now])
            raw(conn, "INSERT INTO dav_active_writes (lease, ref_url, expires) VALUES (?, ?, ?)",
                [lease, normalize_lock_root(url), now + lease_s])
        return lease

    def renew_writes(self, leases: list[str], *, lease_s: float = WRITE_LEASE_S) -> None:
        """Push the expiry of ``leases`` (all held by this worker) into the future."""
        if not leases:
            return
        with self.scope.begin() as conn:
            raw(conn, f"UPDATE dav_active_writes SET expires = ? "
                      f"WHERE lease IN ({placeholders(len(leases))})",
                [time.time() + lease_s, *leases])

    def end_write(self, lease: str) -> None:
        """Drop a lease (gone already - expired and purged - is fine)."""
        with self.scope.begin() as conn:
            raw(conn, "DELETE FROM dav_active_writes WHERE lease = ?", [lease])

    def active_writes(self, url: str, *, include_children: bool) -> list[str]:
        """URLs being written under a valid lease: ``url``, and those below it if asked."""
        url = normalize_lock_root(url)
        where = ActiveWriteRow.ref_url == url
        if include_children:
            where = or_(where, children_of(ActiveWriteRow.ref_url, url))
        query = (select(ActiveWriteRow.ref_url).distinct()
                 .where(where, ActiveWriteRow.expires >= time.time())
                 .order_by(ActiveWriteRow.ref_url))
        with self.scope.begin() as conn:
            return list(conn.execute(query).scalars())

    def transaction(self, *, serialised: bool = False) -> AbstractContextManager[Connection]:
        """Storage calls inside this context share one transaction (per thread)."""
        return self.scope.begin(serialised=serialised)


def _root_filter(path: str, include_root: bool, include_children: bool
                 ) -> tuple[str, list[Any]]:
    if not (include_root or include_children):
        raise ValueError("include_root or include_children must be set")
    clauses, params = [], []
    if include_root:
        clauses.append("root = ?")
        params.append(path)
    if include_children:
        clauses.append("(root > ? AND root < ?)")
        params += children_range(path)
    return f"({' OR '.join(clauses)})", params


class AtomicLockManager(LockManager):
    """wsgidav's LockManager whose grants and write markers hold across processes.

    The conflict rules stay wsgidav's own (``_check_lock_permission``,
    ``_get_write_conflicts``); new are the serialised transaction around each
    check + insert, and write leases in the database in place of wsgidav's
    per-process ``_active_writes`` (which stays empty here).

    Lock order, to avoid deadlocks: the in-process ``_lock`` first, then the
    database transaction - as in wsgidav's own methods that take ``_lock``. The
    write-transaction hooks (every PUT) take no in-process lock at all: their
    serialised transaction already excludes other threads and processes.
    """

    def __init__(self, storage: SqlLockStorage, *, write_lease_s: float = WRITE_LEASE_S) -> None:
        super().__init__(storage)
        self.write_lease_s = write_lease_s
        # url -> leases this process holds on it. wsgidav ends a write by url only;
        # concurrent writes to one url are interchangeable, so any lease will do.
        self._leases: dict[str, list[str]] = {}
        self._leases_lock = threading.Lock()
        self._renewer: threading.Thread | None = None

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
        # _check_lock_permission takes wsgidav's in-process lock, so take it
        # first: the order must be in-process lock, then database, everywhere.
        self._lock.acquire_write()
        try:
            with self.storage.transaction(serialised=True):
                self._check_lock_permission(
                    url, lock_type, lock_scope, lock_depth, token_list, principal
                )
                self._check_active_writes(url, lock_depth)
                return self._generate_lock(
                    principal, lock_type, lock_scope, lock_depth, lock_owner, url, timeout
                )
        finally:
            self._lock.release()

    def _get_write_conflicts(self, url: str, depth: str, token_list: list[str],
                             principal: str) -> DAVErrorCondition:
        """wsgidav's rules (see LockManager._get_write_conflicts) on the locks of
        one query, instead of one query for the URL and each of its ancestors."""
        url = normalize_lock_root(url)
        condition = DAVErrorCondition(PRECONDITION_CODE_LockConflict)
        for lock in self.storage.locks_on_or_above(url, include_children=depth == "infinity"):
            root = lock["root"]
            if root != url and is_child_uri(url, root):
                condition.add_href(root)  # a lock below conflicts whoever holds it
            elif root != url and lock["depth"] != "infinity":
                continue  # only infinite-depth locks of ancestors cover the URL
            elif principal == lock["principal"] and lock["token"] in token_list:
                continue  # the holder, presenting its token
            else:
                condition.add_href(root)
        return condition

    def _check_active_writes(self, url: str, lock_depth: str) -> None:
        """Refuse a lock on a URL some worker is writing (any below it, for depth infinity).

        The depth-infinity part keeps what wsgidav checks in-process.
        """
        busy = self.storage.active_writes(url, include_children=lock_depth == "infinity")
        if busy:
            condition = DAVErrorCondition(PRECONDITION_CODE_LockConflict)
            for href in busy:
                condition.add_href(href)
            raise DAVError(HTTP_LOCKED, err_condition=condition)

    def _begin_write_transaction(
        self, *, url: str, token_list: list[str], principal: str, depth: str = "0"
    ) -> None:
        """Check write permission and take a write lease, atomically across workers.

        Raises DAVError(HTTP_LOCKED) on a conflicting lock, and then takes no lease.
        """
        url = normalize_lock_root(url)
        with self.storage.transaction(serialised=True):
            conflicts = self._get_write_conflicts(url, depth, token_list, principal)
            if conflicts.hrefs:
                raise DAVError(HTTP_LOCKED, err_condition=conflicts)
            lease = self.storage.begin_write(url, lease_s=self.write_lease_s)
        # Only once committed: a failed commit must leave nothing to end.
        with self._leases_lock:
            self._leases.setdefault(url, []).append(lease)
            self._start_renewing()

    def _start_renewing(self) -> None:
        """Start the thread that keeps this worker's leases alive (once)."""
        if self._renewer is None:
            self._renewer = threading.Thread(target=self._renew_forever, daemon=True,
                                             name="mosaic-write-leases")
            self._renewer.start()

    def _renew_forever(self) -> None:
        failing = False  # one line when renewals start failing, one when they work again
        while True:
            time.sleep(self.write_lease_s / 3)
            with self._leases_lock:
                held = [lease for leases in self._leases.values() for lease in leases]
            try:
                self.storage.renew_writes(held, lease_s=self.write_lease_s)
            except Exception as exc:  # the database may be back at the next round
                if not failing:
                    _logger.warning("renewing write leases failed (retrying every %gs): %s",
                                    self.write_lease_s / 3, in_words(exc))
                failing = True
            else:
                if failing:
                    _logger.info("renewing write leases works again")
                failing = False

    def _end_write_transaction(self, url: str) -> None:
        """Release one of this process's leases on ``url``."""
        url = normalize_lock_root(url)
        with self._leases_lock:
            lease = self._pop_lease(url)
        if lease is not None:
            self.storage.end_write(lease)

    def _pop_lease(self, url: str) -> str | None:
        """Take one lease on ``url`` off the books; caller holds ``_leases_lock``."""
        leases = self._leases.get(url)
        if not leases:
            return None
        lease = leases.pop()
        if not leases:
            del self._leases[url]
        return lease


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

